import { createServer } from 'node:http';
import { encodeControl, PROTOCOL_VERSION } from '@ringtrain/protocol';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { type LinkEvent, WorkerLinks } from './worker-links.js';

// A real listener and a real client: what reaches the membership machine from a connection.

const closers: (() => void)[] = [];
afterEach(() => closers.splice(0).forEach((c) => c()));

async function linksOnPort(): Promise<{ port: number; events: LinkEvent[] }> {
  const events: LinkEvent[] = [];
  const links = new WorkerLinks({ logger: pino({ level: 'silent' }), onEvent: (e) => events.push(e), watched: () => false, member: () => true });
  const server = createServer();
  server.on('upgrade', (req, socket, head) => links.handleUpgrade(req, socket, head));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => {
    links.closeAll();
    server.close();
  });
  return { port: (server.address() as { port: number }).port, events };
}

const hello = { type: 'hello', v: PROTOCOL_VERSION, workerId: 'w', ringAddress: 'ws://127.0.0.1:9', configHash: null, host: 'h', pid: 1 } as const;
const failed = { type: 'failed', v: PROTOCOL_VERSION, code: 'X', message: 'x' } as const;

describe('WorkerLinks (real sockets)', () => {
  it('a connection cut off for a bad message says nothing more, though its next frames arrived with it', async () => {
    const { port, events } = await linksOnPort();
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    ws.on('error', () => {});
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send(encodeControl(hello));
    // In one write, so that the frames after the bad one are already received when it is cut off.
    const bad = Buffer.from(encodeControl(failed));
    bad[4] = 99; // a protocol version nobody speaks
    ws.cork?.();
    ws.send(bad);
    for (let i = 0; i < 3; i++) ws.send(encodeControl(failed));
    ws.uncork?.();
    await new Promise((resolve) => ws.once('close', resolve));
    await expect.poll(() => events.some((e) => e.type === 'disconnect'), { timeout: 5000 }).toBe(true);
    expect(events.map((e) => e.type)).toEqual(['hello', 'disconnect']);
  });

  it('a good connection\'s messages all arrive (so the check above can fail)', async () => {
    const { port, events } = await linksOnPort();
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send(encodeControl(hello));
    for (let i = 0; i < 3; i++) ws.send(encodeControl(failed));
    await expect.poll(() => events.length, { timeout: 5000 }).toBe(4);
    expect(events.map((e) => e.type)).toEqual(['hello', 'message', 'message', 'message']);
    ws.close();
  });
});

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createServer, get, type Server } from 'node:http';
import { createServer as createHttpsServer, get as httpsGet } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { EarlyListener } from './early-listener.js';

// Real sockets on loopback: the point is what the kernel and Node do with a connection that
// arrives before its server exists.

const closers: (() => void)[] = [];
afterEach(() => closers.splice(0).forEach((c) => c()));

function fetchText(url: string, options: { ca?: Buffer } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https') ? httpsGet : get)(url, { ca: options.ca, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(`${res.statusCode} ${body}`));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timed out')));
  });
}

async function bound(): Promise<EarlyListener> {
  const early = await EarlyListener.bind('127.0.0.1', 0);
  closers.push(() => early.close());
  return early;
}

function serving(server: Server): Server {
  closers.push(() => server.close());
  return server;
}

describe('EarlyListener', () => {
  it('an HTTP request sent before the hand-over is answered by the server that took the port over, and later ones too', async () => {
    const early = await bound();
    const before = fetchText(`http://127.0.0.1:${early.port}/a`);
    await sleep(50); // accepted and waiting, paused
    const server = serving(createServer((req, res) => res.end(`served ${req.url}`)));
    await early.handOver(server);
    expect(await before).toBe('200 served /a');
    expect(await fetchText(`http://127.0.0.1:${early.port}/b`)).toBe('200 served /b');
    expect((server.address() as { port: number }).port).toBe(early.port);
  });

  it('a WebSocket that dialled before the hand-over opens and talks', async () => {
    const early = await bound();
    const ws = new WebSocket(`ws://127.0.0.1:${early.port}/`);
    closers.push(() => ws.terminate());
    await sleep(50);
    const wss = new WebSocketServer({ noServer: true });
    const server = serving(createServer());
    server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (c) => c.on('message', (m) => c.send(`echo ${m}`))));
    await early.handOver(server);
    await new Promise((resolve, reject) => {
      ws.once('open', resolve).once('error', reject);
      setTimeout(() => reject(new Error('no open within 5 s')), 5000).unref();
    });
    ws.send('hi');
    expect(String(await new Promise((resolve) => ws.once('message', resolve)))).toBe('echo hi');
  });

  it('an HTTPS server takes over a connection whose TLS handshake began before it existed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-early-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' });
    const cert = readFileSync(join(dir, 'cert.pem'));
    const early = await bound();
    const before = fetchText(`https://127.0.0.1:${early.port}/tls`, { ca: cert });
    await sleep(50);
    const server = serving(createHttpsServer({ cert, key: readFileSync(join(dir, 'key.pem')) }, (req, res) => res.end(`secure ${req.url}`)) as unknown as Server);
    await early.handOver(server);
    expect(await before).toBe('200 secure /tls');
  });

  it('close() before a hand-over frees the port and drops what waited; a second hand-over is refused', async () => {
    const early = await bound();
    const port = early.port;
    const socket = connect(port, '127.0.0.1');
    const closed = new Promise((resolve) => socket.on('close', resolve).on('error', () => {}));
    await sleep(50);
    early.close();
    await closed;
    await expect(early.handOver(serving(createServer()))).rejects.toThrow(/already handed over/);
    const again = await EarlyListener.bind('127.0.0.1', port);
    closers.push(() => again.close());
    expect(again.port).toBe(port);
  });

  it('a port in use is an error at bind, not later', async () => {
    const early = await bound();
    await expect(EarlyListener.bind('127.0.0.1', early.port)).rejects.toThrow(/EADDRINUSE/);
  });
});

import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { PrometheusMetrics } from './prometheus.js';
import { StatusFeed } from './status-feed.js';
import { type StatusServerOptions, StatusServer } from './status-server.js';

const config = { model: 'MLP 4-2', positions: 1, parameters: 10, optimizer: 'sgd', lr: 0.1, batchSize: 8, epochs: 1, dataset: 'synthetic', configHash: 'abc' };
const started: { http: Server; status: StatusServer }[] = [];

afterEach(async () => {
  for (const s of started.splice(0)) {
    await s.status.close();
    s.http.closeAllConnections();
    s.http.close();
  }
});

/** A status server on a real port, with its log lines kept. */
async function serve(over: Partial<StatusServerOptions> = {}): Promise<{ port: number; logs: string[] }> {
  const logs: string[] = [];
  const logger = pino({ level: 'warn' }, new Writable({ write: (chunk, _e, done) => void (logs.push(String(chunk)), done()) }));
  const status = new StatusServer({ feed: new StatusFeed({ runId: 'r', workers: 2, config }), metrics: new PrometheusMetrics(), onCommand: () => ({ ok: true, message: 'ok' }), logger, ...over });
  const http = createServer((req, res) => status.handleRequest(req, res));
  http.on('upgrade', (req, socket, head) => status.handleUpgrade(req, socket, head));
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  started.push({ http, status });
  return { port: (http.address() as AddressInfo).port, logs };
}

/** Opens the status socket; resolves with the socket or the HTTP status it was refused with. */
function open(port: number, headers: Record<string, string> = {}): Promise<WebSocket | number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/status`, { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    ws.once('error', () => resolve(-1));
  });
}

describe('status server hardening', () => {
  it('every answer forbids framing and sniffing, and the page may load only its own files', async () => {
    const { port } = await serve();
    for (const path of ['/', '/dashboard.js', '/api/status', '/metrics', '/nowhere']) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      expect(res.headers.get('content-security-policy'), path).toMatch(/default-src 'none'.*frame-ancestors 'none'/);
      expect(res.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(res.headers.get('x-frame-options'), path).toBe('DENY');
    }
  });

  it('refuses a page of another origin (403), takes its own origin and clients that send none', async () => {
    const { port, logs } = await serve();
    expect(await open(port, { origin: 'https://evil.example' })).toBe(403);
    expect(await open(port, { origin: 'null' })).toBe(403);
    expect(logs.join('')).toMatch(/origin https:\/\/evil.example is not this server's/);
    const own = await open(port, { origin: `http://127.0.0.1:${port}` });
    const none = await open(port);
    expect(own).toBeInstanceOf(WebSocket);
    expect(none).toBeInstanceOf(WebSocket);
    (own as WebSocket).close();
    (none as WebSocket).close();
  });

  it('without a status token, answers only requests that name it by an address: a rebound host name gets nothing (DNS rebinding)', async () => {
    const { port } = await serve();
    const get = (path: string, host: string, headers: Record<string, string> = {}) => new Promise<number>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path, headers: { host, ...headers } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.end();
    });
    for (const path of ['/api/status', '/metrics']) {
      expect(await get(path, `evil.example:${port}`), path).toBe(403);
      expect(await get(path, `127.0.0.1:${port}`), path).toBe(200);
      expect(await get(path, `localhost:${port}`), path).toBe(200);
      expect(await get(path, `[::1]:${port}`), path).toBe(200);
    }
    expect(await open(port, { host: `evil.example:${port}` })).toBe(403);
    // With a token a name is fine: a page that does not know the token reads nothing anyway.
    const guarded = await serve({ statusToken: 'reader' });
    expect(await new Promise<number>((resolve) => request({ host: '127.0.0.1', port: guarded.port, path: '/api/status', headers: { host: 'trainbox.lan', authorization: 'Bearer reader' } }, (res) => resolve(res.statusCode ?? 0)).end())).toBe(200);
  });

  it('takes at most maxClients status clients at once (503 beyond)', async () => {
    const { port } = await serve({ maxClients: 3 });
    const first = await Promise.all([open(port), open(port), open(port)]);
    expect(first.every((c) => c instanceof WebSocket)).toBe(true);
    expect(await open(port)).toBe(503);
    (first[0] as WebSocket).close();
    await new Promise((r) => setTimeout(r, 100));
    const again = await open(port);
    expect(again).toBeInstanceOf(WebSocket);
    for (const c of [...first, again]) (c as WebSocket).close();
  });

  it('closes a client that sends commands and never reads the replies, instead of queueing them without bound', async () => {
    const { port, logs } = await serve({ maxBufferedBytes: 64 * 1024 });
    const ws = (await open(port)) as WebSocket;
    ws.pause(); // reads nothing from here on
    const closed = new Promise<void>((r) => ws.once('close', () => r()));
    const command = JSON.stringify({ type: 'command', id: 1, action: 'checkpoint' });
    // 20 MB of replies' worth: far past the kernel's socket buffers and the 64 KiB limit.
    for (let i = 0; i < 100_000 && ws.readyState === WebSocket.OPEN; i++) {
      ws.send(command);
      if (i % 1000 === 0) await new Promise((r) => setImmediate(r));
    }
    await expect.poll(() => logs.join(''), { timeout: 10_000 }).toMatch(/it sends commands and does not read the replies/);
    ws.resume();
    await closed;
  }, 30_000);
});

import { createServer, type Server } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { dialUntil } from './dial.js';

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A TCP server that answers every upgrade with `head` and then keeps writing `more` forever (or nothing). */
async function hostile(head: string, more = ''): Promise<number> {
  const server = createServer((sock) => {
    sock.on('error', () => {});
    sock.once('data', () => {
      sock.write(head);
      if (!more) return;
      const timer = setInterval(() => (sock.writable ? sock.write(more) : clearInterval(timer)), 1);
      sock.on('close', () => clearInterval(timer));
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

describe('dialUntil', () => {
  it('a refusal whose body never ends returns its status within the body deadline, not never', async () => {
    const port = await hostile('HTTP/1.1 401 Unauthorized\r\nContent-Length: 100000\r\n\r\nwrong token');
    const t0 = Date.now();
    const r = await dialUntil(`ws://127.0.0.1:${port}`, {}, Date.now() + 60_000, () => {});
    expect(r).toEqual({ status: 401, body: 'wrong token', fromRingtrain: false });
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('a refusal that streams a body without end keeps only its start', async () => {
    const port = await hostile('HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n', `400\r\n${'x'.repeat(1024)}\r\n`);
    const r = await dialUntil(`ws://127.0.0.1:${port}`, {}, Date.now() + 60_000, () => {});
    expect(r).toMatchObject({ status: 403 });
    expect((r as { body: string }).body.length).toBeLessThanOrEqual(4096);
  });

  it('a server that accepts the connection and never answers ends at the deadline', async () => {
    const port = await hostile('');
    const t0 = Date.now();
    expect(await dialUntil(`ws://127.0.0.1:${port}`, {}, Date.now() + 1500, () => {})).toMatchObject({ unreachable: true });
    expect(Date.now() - t0).toBeLessThan(4000);
  });
});

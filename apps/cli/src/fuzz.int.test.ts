// Fuzzing every listener of a real coordinator process: generated and mutated inputs (fast-check),
// then the process must be alive, its memory back under a bound, and a genuine run must complete.
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { encodeControl, PROTOCOL_VERSION } from '@ringtrain/protocol';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { killStarted, type Run, startRingtrain } from './testing/run-process.js';

afterAll(killStarted);

const TOKEN = 'job-token-for-fuzzing';
const STATUS = 'status-token-for-fuzzing';
const v = PROTOCOL_VERSION;
/** Inputs per listener. */
const N = 10_000;
/** The coordinator's resident memory after the fuzzing, at most. */
const RSS_BOUND_MB = 300;

const rssMb = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** Writes `bytes` on a fresh connection and waits a moment for the answer (or the close). */
function poke(port: number, bytes: Uint8Array | string, waitMs = 30): Promise<void> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    const done = (): void => {
      s.destroy();
      resolve();
    };
    s.on('error', done);
    s.on('close', done);
    s.on('data', () => {});
    s.setTimeout(waitMs, done);
    s.on('connect', () => s.write(bytes));
  });
}

/** Runs `task` over `items`, `width` at a time. */
async function pool<T>(items: T[], width: number, task: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < items.length) await task(items[next++]);
  }));
}

const upgrade = (path: string, headers: string): string =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${headers}\r\n`;

/** A masked client WebSocket frame, its length field as given (it may lie). */
function wsFrame(payload: Uint8Array, opcode = 2, claimed?: bigint): Buffer {
  const len = claimed ?? BigInt(payload.length);
  const head = len < 126n ? Buffer.from([0x80 | opcode, 0x80 | Number(len)]) : len < 65536n ? Buffer.from([0x80 | opcode, 0x80 | 126, Number(len) >> 8, Number(len) & 255]) : Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | 127]), (() => { const b = Buffer.alloc(8); b.writeBigUInt64BE(len); return b; })()]);
  const mask = Buffer.from([7, 1, 3, 9]);
  return Buffer.concat([head, mask, Buffer.from(payload.map((b, i) => b ^ mask[i % 4]))]);
}

/** Wrong tokens of every length and encoding: ASCII, Latin-1, multi-byte UTF-8, the right one's length ± 1. */
const wrongToken = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.string({ unit: 'binary', minLength: TOKEN.length, maxLength: TOKEN.length }),
  fc.nat({ max: 64 }).map((n) => 'é'.repeat(n)),
  // The guess that once crashed the coordinator: the right number of characters, each two bytes.
  fc.constantFrom(TOKEN.slice(1), `${TOKEN}x`, TOKEN.toUpperCase(), '', 'é'.repeat(TOKEN.length), 'é'.repeat(STATUS.length)),
).filter((t) => t !== TOKEN && !/[\r\n]/.test(t));

/** Valid worker messages, then mutated: a field replaced by anything, removed, or added. */
const templates: Record<string, unknown>[] = [
  { type: 'hello', v, workerId: 'w', ringAddress: 'ws://127.0.0.1:9', configHash: null, host: 'h', pid: 1 },
  { type: 'prepared', v },
  { type: 'ready', v, generation: 1, rank: 0, weightsHash: 'ab'.repeat(32), step: 0, backend: 'x', totalSteps: 1, parameters: 1 },
  { type: 'progress', v, generation: 1, rank: 9999, epoch: 0, step: 1, loss: 1, samples: 1, correct: 1, steps: 1, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, lr: 0.1, skipped: 0 },
  { type: 'done', v, generation: 1, rank: 0, steps: 1, weightsHash: 'ab'.repeat(32), replicaChecks: 0 },
  { type: 'aborted', v, generation: 1, rank: 0, step: 0, code: 'X', message: 'x' },
  { type: 'failed', v, code: 'X', message: 'x' },
  { type: 'leave', v },
];
const mutatedOnly = fc.tuple(fc.constantFrom(...templates), fc.nat(), fc.anything({ maxDepth: 2, withTypedArray: true, withBigInt: true }), fc.nat({ max: 2 })).map(([t, k, value, how]) => {
  const m: Record<string, unknown> = { ...t };
  const keys = Object.keys(m);
  const key = keys[k % keys.length];
  if (how === 0) m[key] = value;
  else if (how === 1) delete m[key];
  else m[`x${k % 7}`] = value;
  return m;
});
/** Mostly mutated; some valid but out of place (a ready before the ring formed, a done from nobody's rank). */
const mutated = fc.oneof({ arbitrary: mutatedOnly, weight: 4 }, fc.constantFrom(...templates.slice(1)));

/** Raw inputs for a WebSocket endpoint: random bytes, broken requests, lying frames, slow writers. */
function rawInputs(port: number, path: string, tokenHeader: (t: string) => string, count: number): (() => Promise<void>)[] {
  const open = tokenHeader(path === '/status' ? STATUS : TOKEN);
  return fc.sample(
    fc.oneof(
      fc.uint8Array({ maxLength: 512 }).map((b) => () => poke(port, b)),
      wrongToken.map((t) => () => poke(port, Buffer.from(upgrade(path, tokenHeader(t)), 'utf8'))),
      fc.tuple(fc.string({ maxLength: 40 }), fc.string({ maxLength: 60 })).map(([m, p]) => () => poke(port, `${m} /${p} HTTP/1.1\r\nHost: x\r\n\r\n`)),
      fc.tuple(fc.uint8Array({ maxLength: 300 }), fc.bigInt({ min: 0n, max: (1n << 63n) - 1n }), fc.constantFrom(1, 2, 8, 9, 10, 3, 15)).map(([b, claimed, op]) => () => poke(port, Buffer.concat([Buffer.from(upgrade(path, open)), wsFrame(b, op, claimed)]), 60)),
      fc.nat({ max: 200 }).map((n) => () => poke(port, upgrade(path, open).slice(0, n), 5)),
    ),
    { numRuns: count, seed: 42 },
  );
}

describe('fuzzing a real coordinator: every listener, then a genuine run', () => {
  let coord: Run;
  let port = 0;
  let baselineMb = 0;

  it('starts', async () => {
    coord = startRingtrain(['coordinator', '--host', '127.0.0.1', '--port', '0', '--workers', '2', '--epochs', '1', '--max-steps', '20', '--json'], {
      RINGTRAIN_TOKEN: TOKEN,
      RINGTRAIN_STATUS_TOKEN: STATUS,
      RINGTRAIN_JOIN_TIMEOUT_MS: '300000',
      RINGTRAIN_HANDSHAKE_TIMEOUT_MS: '1000',
    });
    await expect.poll(() => coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))?.address, { timeout: 20_000 }).toBeTruthy();
    port = Number(new URL(String(coord.lines.find((l) => String(l.msg).startsWith('coordinator listening'))!.address)).port);
    baselineMb = rssMb(coord.proc.pid!);
  }, 30_000);

  it(`the workers' endpoint takes ${N} hostile inputs: raw bytes, wrong tokens, lying frames, slow writers, mutated messages`, async () => {
    await pool(rawInputs(port, '/', (t) => `x-ringtrain-token: ${t}\r\n`, N / 2), 48, (f) => f());
    // With the token: mutated messages on an open connection, one connection at a time (a token
    // holder may join as a worker; only a whole ring of them could start a run).
    const messages = fc.sample(mutated, { numRuns: N / 2, seed: 7 });
    for (let i = 0; i < messages.length; i += 250) {
      const ws = new WebSocket(`ws://127.0.0.1:${port}`, { headers: { 'x-ringtrain-token': TOKEN } });
      ws.on('error', () => {});
      ws.on('message', () => {});
      await new Promise((r) => ws.once('open', r));
      // A genuine hello first, so that what follows reaches the membership machine as a member's.
      ws.send(encodeControl({ ...templates[0], workerId: `fuzz-${i}` } as never));
      for (const m of messages.slice(i, i + 250)) if (ws.readyState === WebSocket.OPEN) ws.send(encodeControl(m as never));
      await new Promise((r) => setTimeout(r, 20));
      ws.terminate();
    }
    expect(coord.proc.exitCode, coord.stderr.slice(-3000)).toBeNull();
  }, 60_000);

  it(`the status socket and every HTTP route take ${N} hostile inputs`, async () => {
    await pool(rawInputs(port, '/status', (t) => `authorization: Bearer ${t}\r\n`, N / 2), 48, (f) => f());
    const routes = ['/', '/metrics', '/api/status', '/api/status-schema', '/dashboard.js', '/status', '/x'];
    const requests = fc.sample(
      fc.tuple(fc.constantFrom(...routes), fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'X'), fc.string({ maxLength: 60 }), wrongToken, fc.string({ maxLength: 100 })),
      { numRuns: N / 4, seed: 3 },
    );
    await pool(requests, 48, ([route, method, query, token, body]) => poke(port, `${method} ${route}?${encodeURIComponent(query)}&token=${encodeURIComponent(token)} HTTP/1.1\r\nHost: x\r\nOrigin: http://evil.example\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`));
    // Commands with the read token: random text and binary, mutated commands, and never reading the replies.
    const commands = fc.sample(
      fc.oneof(fc.string({ maxLength: 300 }), fc.json(), fc.record({ type: fc.constant('command'), id: fc.anything(), action: fc.anything() }).map((c) => JSON.stringify(c)), fc.uint8Array({ maxLength: 300 })),
      { numRuns: N / 4, seed: 5 },
    );
    const ws = new WebSocket(`ws://127.0.0.1:${port}/status`, { headers: { authorization: `Bearer ${STATUS}` } });
    ws.on('error', () => {});
    await new Promise((r) => ws.once('open', r));
    ws.pause();
    for (const c of commands) if (ws.readyState === WebSocket.OPEN) ws.send(c);
    await new Promise((r) => setTimeout(r, 200));
    ws.terminate();
    expect(coord.proc.exitCode, coord.stderr.slice(-3000)).toBeNull();
  }, 60_000);

  it('slow writers that never finish their request are cut off at the handshake deadline, and do not block others meanwhile', async () => {
    const closedAt: number[] = [];
    const t0 = Date.now();
    const slow = Array.from({ length: 60 }, (_, i) => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => closedAt.push(Date.now() - t0));
      s.on('connect', () => s.write(upgrade(i % 2 ? '/status' : '/', '').slice(0, 40 + i)));
      return s;
    });
    // Meanwhile a status client gets its snapshot.
    const res = await fetch(`http://127.0.0.1:${port}/api/status`, { headers: { authorization: `Bearer ${STATUS}` } });
    expect(res.status).toBe(200);
    await expect.poll(() => closedAt.length, { timeout: 5000 }).toBe(60);
    expect(Math.max(...closedAt)).toBeLessThan(3500); // deadline 1 s, checked every second
    for (const s of slow) s.destroy();
  }, 20_000);

  it('afterwards the coordinator is alive, its memory is back under the bound, and two genuine workers complete the run', async () => {
    await new Promise((r) => setTimeout(r, 1500)); // slow writers cut off, closed sockets reaped
    expect(coord.proc.exitCode).toBeNull();
    const rss = rssMb(coord.proc.pid!);
    console.log(`coordinator RSS: ${baselineMb.toFixed(0)} MB before the fuzzing, ${rss.toFixed(0)} MB after (bound ${RSS_BOUND_MB} MB)`);
    expect(rss).toBeLessThan(RSS_BOUND_MB);
    const address = `ws://127.0.0.1:${port}`;
    const workers = [startRingtrain(['worker', '--coordinator', address], { RINGTRAIN_TOKEN: TOKEN }), startRingtrain(['worker', '--coordinator', address], { RINGTRAIN_TOKEN: TOKEN })];
    expect(await coord.exited, coord.stderr.slice(-2000)).toBe(0);
    for (const w of workers) expect(await w.exited).toBe(0);
    expect(JSON.parse(coord.stdout).steps).toBe(20);
  }, 60_000);
});

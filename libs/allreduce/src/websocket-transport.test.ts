import { createServer } from 'node:http';
import { type AddressInfo, connect as tcpConnect } from 'node:net';
import { encodeControl, encodeFrameHeader, Dtype, FrameOp, type FrameHeader } from '@ringtrain/protocol';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { Communicator } from './communicator.js';
import type { CollectiveError } from './errors.js';
import type { Payload } from './payload.js';
import type { TransportHandler } from './transport.js';
import { WebSocketTransport, type WebSocketTransportOptions } from './websocket-transport.js';

const open: WebSocketTransport[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((t) => t.close()));
});

async function formRing(world: number, extra: WebSocketTransportOptions = {}): Promise<WebSocketTransport[]> {
  const ts = await Promise.all(Array.from({ length: world }, () => WebSocketTransport.listen({ connectTimeoutMs: 5000, ...extra })));
  open.push(...ts);
  await Promise.all(ts.map((t, r) => t.join({ rank: r, worldSize: world, prevAddress: ts[(r - 1 + world) % world].address })));
  return ts;
}

/** A rank-0-of-`world` listener whose neighbours never come (the tests play them by hand). */
async function placed(world: number, extra: WebSocketTransportOptions = {}, ringId = ''): Promise<WebSocketTransport> {
  const t = await WebSocketTransport.listen({ connectTimeoutMs: 300, ...extra });
  open.push(t);
  // join dials a left neighbour that never answers; the place is set at once, which is what matters here.
  t.join({ rank: 0, worldSize: world, ringId, prevAddress: 'ws://127.0.0.1:9' }).catch(() => {});
  return t;
}

/** A handler that records what the transport delivers. */
function recorder(): TransportHandler & { frames: [number, FrameHeader, Uint8Array][]; lost: CollectiveError[] } {
  const rec = {
    frames: [] as [number, FrameHeader, Uint8Array][],
    lost: [] as CollectiveError[],
    frame: (from: number, h: FrameHeader, p: Payload) => rec.frames.push([from, h, p.bytes()]),
    control: () => {},
    peerLost: (_peer: number, e: CollectiveError) => rec.lost.push(e),
  };
  return rec;
}

const header: FrameHeader = { op: FrameOp.broadcast, dtype: Dtype.float32, seq: 1, step: 2, from: 1, chunk: 0, segment: 0, offset: 0, count: 3, tensorLength: 3, layoutHash: 'abcdefabcdefabcd' };
const payload = Buffer.from(Float32Array.of(1.5, -2, 3).buffer);
const until = async (cond: () => boolean, ms = 3000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
};

/** A raw ring client: dials `t` as its right neighbour (rank 1 of 2). */
function dialAsNeighbour(t: WebSocketTransport, token?: string): WebSocket {
  return new WebSocket(t.address, {
    perMessageDeflate: false,
    headers: { 'x-ringtrain-rank': '1', 'x-ringtrain-world': '2', 'x-ringtrain-version': '1', 'x-ringtrain-ring': '', ...(token ? { 'x-ringtrain-token': token } : {}) },
  });
}

describe('ring all-reduce over WebSockets', () => {
  it('sums correctly and bit-identically across ranks over real sockets, multi-segment', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 2, max: 5 }), fc.integer({ min: 0, max: 3000 }), fc.constantFrom(16, 256, 4096), async (world, length, segmentBytes) => {
        const ts = await formRing(world);
        const comms = ts.map((t) => new Communicator(t, { segmentBytes, timeoutMs: 5000 }));
        const data = ts.map((_, r) => Float32Array.from({ length }, (_, i) => ((r + 1) * ((i * 7) % 31)) / 8));
        await Promise.all(comms.map((c, r) => c.allreduce(data[r], { average: false })));
        for (let i = 0; i < length; i++) expect(data[0][i]).toBe(data.length && (((i * 7) % 31) / 8) * ((world * (world + 1)) / 2));
        for (const d of data) expect(Buffer.from(d.buffer).equals(Buffer.from(data[0].buffer))).toBe(true);
        await Promise.all(open.splice(0).map((t) => t.close()));
      }),
      { numRuns: 12 },
    );
  });
});

describe('generations: leave a ring, join the next at the same address', () => {
  it('survivors of a lost rank leave, form a ring of 3 under a new ring id, and sum exactly; the dead ring stays silent', async () => {
    const ts = await Promise.all(Array.from({ length: 4 }, () => WebSocketTransport.listen({ connectTimeoutMs: 5000 })));
    open.push(...ts);
    const addresses = ts.map((t) => t.address);
    await Promise.all(ts.map((t, r) => t.join({ rank: r, worldSize: 4, ringId: 'job/gen-1', prevAddress: addresses[(r + 3) % 4] })));
    const comms = ts.map((t) => new Communicator(t, { timeoutMs: 5000 }));
    const big = (r: number): Float32Array => Float32Array.from({ length: 300_000 }, (_, i) => r + i);
    // Rank 2 dies in the middle of an all-reduce: everyone else's call rejects.
    const settled = Promise.allSettled(comms.filter((_, r) => r !== 2).map((c) => c.allreduce(big(comms.indexOf(c)))));
    await ts[2].close();
    const outcomes = await settled;
    expect(outcomes.map((o) => o.status)).toEqual(['rejected', 'rejected', 'rejected']);
    const survivors = [ts[0], ts[1], ts[3]];
    comms.forEach((c) => c.detach());
    await Promise.all(survivors.map((t) => t.leave()));
    for (const t of survivors) expect(t.address).toBe(addresses[ts.indexOf(t)]);
    await Promise.all(survivors.map((t, r) => t.join({ rank: r, worldSize: 3, ringId: 'job/gen-2', prevAddress: survivors[(r + 2) % 3].address })));
    const next = survivors.map((t) => new Communicator(t, { timeoutMs: 5000 }));
    const data = survivors.map((_, r) => Float32Array.from({ length: 1000 }, (_, i) => (r + 1) * i));
    await Promise.all(next.map((c, r) => c.allreduce(data[r], { average: false })));
    for (const d of data) for (let i = 0; i < 1000; i++) expect(d[i]).toBe(6 * i);
    // A straggler of generation 1 is not let into generation 2's ring (told to retry: it is on its way to a newer one).
    const stale = new WebSocket(survivors[0].address, { headers: { 'x-ringtrain-rank': '1', 'x-ringtrain-world': '3', 'x-ringtrain-version': '1', 'x-ringtrain-ring': 'job/gen-1' } });
    const status = await new Promise<number>((resolve) => stale.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
    expect(status).toBe(503);
  });

  it('a leave during a join ends the join at once with ERR_CLOSED', async () => {
    const t = await WebSocketTransport.listen({ connectTimeoutMs: 20_000 });
    open.push(t);
    const joining = t.join({ rank: 0, worldSize: 2, ringId: 'g1', prevAddress: 'ws://127.0.0.1:9' });
    const t0 = Date.now();
    await t.leave();
    await expect(joining).rejects.toMatchObject({ code: 'ERR_CLOSED' });
    expect(Date.now() - t0).toBeLessThan(2000);
  });
});

describe("large segments, received in the socket's read buffers", () => {
  it('stay exact when frames arrive before the operation starts, and across consecutive all-reduces', async () => {
    const world = 3;
    const length = 700_001; // ~2.8 MB: 256 KiB segments, several per chunk, a ragged end
    const ts = await formRing(world);
    const comms = ts.map((t) => new Communicator(t, { segmentBytes: 256 * 1024, timeoutMs: 20_000 }));
    const value = (r: number, i: number, k: number): number => ((r + 1 + k) * ((i * 13) % 97)) / 16;
    for (let k = 0; k < 3; k++) {
      const data = ts.map((_, r) => Float32Array.from({ length }, (_, i) => value(r, i, k)));
      // Rank 2 joins late: its left neighbour's first segments are early, kept past the handler call.
      const late = new Promise<void>((resolve) => setTimeout(resolve, 50)).then(() => comms[2].allreduce(data[2], { average: false }));
      await Promise.all([comms[0].allreduce(data[0], { average: false }), comms[1].allreduce(data[1], { average: false }), late]);
      const wrong = data[1].findIndex((x, i) => x !== value(0, i, k) + value(1, i, k) + value(2, i, k));
      expect(wrong).toBe(-1);
      for (const d of data) expect(Buffer.from(d.buffer).equals(Buffer.from(data[0].buffer))).toBe(true);
    }
  });
});

describe('WebSocket transport: handshake and decoding', () => {
  it('refuses a wrong or missing token during the upgrade, before any frame is read', async () => {
    const t = await placed(2, { token: 'secret' });
    const rec = recorder();
    t.setHandler(rec);
    for (const token of ['wrong', undefined]) {
      const status = await new Promise<number>((resolve) => {
        const ws = dialAsNeighbour(t, token);
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => resolve(101));
        ws.on('error', () => {});
      });
      expect(status).toBe(401);
    }
    const client = await WebSocketTransport.listen({ token: 'nope', connectTimeoutMs: 2000 });
    open.push(client);
    await expect(client.join({ rank: 1, worldSize: 2, prevAddress: t.address })).rejects.toMatchObject({ code: 'ERR_AUTH', message: expect.stringMatching(/refused the ring connection: 401 wrong or missing ring token/) });
    expect(rec.frames).toHaveLength(0);
  });

  it('a ring address that answers with something else (an internal HTTP service) is named, its answer never repeated', async () => {
    const server = createServer((_req, res) => res.writeHead(404, { 'content-type': 'text/plain' }).end('aws-secret-access-key: AKIAEXAMPLE'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const client = await WebSocketTransport.listen({ connectTimeoutMs: 2000 });
      open.push(client);
      const port = (server.address() as AddressInfo).port;
      const err = await client.join({ rank: 1, worldSize: 2, prevAddress: `ws://127.0.0.1:${port}` }).catch((e: Error) => e);
      expect((err as Error).message).toMatch(new RegExp(`rank 0 at ws://127\\.0\\.0\\.1:${port} refused the ring connection: 404 and is no ringtrain worker \\(its 34-byte answer is not shown\\)`));
      expect((err as Error).message).not.toMatch(/AKIA|secret/);
    } finally {
      server.close();
    }
  });

  it('tells a neighbour that dials too early to retry (503) until this rank has its place', async () => {
    const t = await WebSocketTransport.listen();
    open.push(t);
    const status = await new Promise<number>((resolve) => {
      const ws = dialAsNeighbour(t);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('error', () => {});
    });
    expect(status).toBe(503);
    const right = await WebSocketTransport.listen({ connectTimeoutMs: 3000 });
    open.push(right);
    const joining = right.join({ rank: 1, worldSize: 2, prevAddress: t.address });
    await new Promise((r) => setTimeout(r, 150));
    await Promise.all([joining, t.join({ rank: 0, worldSize: 2, prevAddress: right.address })]);
  });

  it('refuses the wrong neighbour, world size or ring id with ERR_RENDEZVOUS', async () => {
    const t = await placed(3, {}, 'job-a/gen-1');
    const wrongRank = await WebSocketTransport.listen({ connectTimeoutMs: 1000 });
    const wrongRing = await WebSocketTransport.listen({ connectTimeoutMs: 1000 });
    open.push(wrongRank, wrongRing);
    await expect(wrongRank.join({ rank: 2, worldSize: 3, ringId: 'job-a/gen-1', prevAddress: t.address })).rejects.toMatchObject({ code: 'ERR_RENDEZVOUS', message: expect.stringMatching(/rank 2 is not this rank's right neighbour \(1\)/) });
    await expect(wrongRing.join({ rank: 1, worldSize: 3, ringId: 'job-b/gen-1', prevAddress: t.address })).rejects.toMatchObject({ code: 'ERR_RENDEZVOUS', message: expect.stringMatching(/409 ring "job-b\/gen-1", expected "job-a\/gen-1"/) });
  });

  it('a neighbour still in another generation of the same ring is retried (503) until it catches up, not refused', async () => {
    const t = await placed(2, {}, 'job-a/gen-2');
    const late = await WebSocketTransport.listen({ connectTimeoutMs: 5000 });
    open.push(late);
    const t0 = Date.now();
    // The dialler is one generation ahead; the listener moves on 400 ms later.
    const joining = late.join({ rank: 1, worldSize: 2, ringId: 'job-a/gen-3', prevAddress: t.address });
    joining.catch(() => {});
    await new Promise((r) => setTimeout(r, 400));
    await t.leave();
    t.join({ rank: 0, worldSize: 2, ringId: 'job-a/gen-3', prevAddress: late.address }).catch(() => {});
    await joining;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
  });

  it('decodes a frame whose bytes arrive split at every position across TCP segments', async () => {
    const t = await placed(2);
    const rec = recorder();
    t.setHandler(rec);
    const message = Buffer.concat([encodeFrameHeader(header), payload]);
    // A masked client frame, written by hand: FIN+binary, mask bit + 7-bit length, mask key, data.
    const mask = Buffer.from([1, 2, 3, 4]);
    const wsFrame = Buffer.concat([Buffer.from([0x82, 0x80 | message.length]), mask, Buffer.from(message.map((b, i) => b ^ mask[i % 4]))]);
    const sock = tcpConnect(Number(new URL(t.address).port), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write(
      'GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
        'x-ringtrain-rank: 1\r\nx-ringtrain-world: 2\r\nx-ringtrain-version: 1\r\nx-ringtrain-ring: \r\n\r\n',
    );
    await new Promise((r) => sock.once('data', r)); // 101 Switching Protocols
    for (let cut = 1; cut < wsFrame.length; cut += 7) {
      sock.write(wsFrame.subarray(0, cut));
      await new Promise((r) => setTimeout(r, 2));
      sock.write(wsFrame.subarray(cut));
    }
    for (const b of wsFrame) {
      sock.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    const expectedCount = Math.ceil((wsFrame.length - 1) / 7) + 1;
    await until(() => rec.frames.length === expectedCount);
    for (const [from, h, p] of rec.frames) {
      expect(from).toBe(1);
      expect(h).toEqual(header);
      expect(Array.from(new Float32Array(p.buffer))).toEqual([1.5, -2, 3]);
    }
    sock.destroy();
  });

  it('closes the connection with 1002 and the error code on a bad frame, and reports ERR_PROTOCOL', async () => {
    for (const bad of [
      Buffer.concat([encodeFrameHeader(header), payload.subarray(0, 8)]), // truncated
      Buffer.concat([encodeFrameHeader(header), payload, Buffer.alloc(4)]), // longer than announced
      Buffer.concat([Buffer.from('XXXX'), encodeFrameHeader(header).subarray(4), payload]), // wrong magic
      Buffer.concat([encodeControl({ type: 'abort', v: 1, origin: 1, code: 'X', message: '' }).subarray(0, 8), Buffer.from([0x82])]), // bad msgpack
    ]) {
      const t = await placed(2);
      const rec = recorder();
      t.setHandler(rec);
      const ws = dialAsNeighbour(t);
      await new Promise((r) => ws.once('open', r));
      const closed = new Promise<[number, string]>((r) => ws.once('close', (code, reason) => r([code, reason.toString()])));
      ws.send(bad);
      const [code, reason] = await closed;
      expect(code).toBe(1002);
      expect(reason).toMatch(/^ERR_/);
      await until(() => rec.lost.length === 1);
      expect(rec.lost[0]).toMatchObject({ code: 'ERR_PROTOCOL', peer: 1, message: expect.stringContaining(reason) });
      expect(rec.frames).toHaveLength(0);
    }
  });

  it('a well-formed frame that does not fit its operation fails the collective with ERR_PROTOCOL, never the process', async () => {
    // Rank 0 of 2 all-reduces 6 floats: it expects the reduce-scatter of chunk 1 (3 floats at 3), then the all-gather of chunk 0.
    const rs: FrameHeader = { op: FrameOp.reduceScatter, dtype: Dtype.float32, seq: 0, step: 7, from: 1, chunk: 1, segment: 0, offset: 3, count: 3, tensorLength: 6, layoutHash: '0000000000000000' };
    const cases: [string, FrameHeader, Buffer][] = [
      ['uint8 dtype (3 one-byte elements)', { ...rs, dtype: Dtype.uint8 }, Buffer.alloc(3, 1)],
      ['a range outside the layout', { ...rs, offset: 2 }, payload],
      ['a chunk that never comes to rank 0', { ...rs, chunk: 0, offset: 0 }, payload],
      ['a segment the layout does not have', { ...rs, segment: 5 }, payload],
    ];
    for (const [what, h, body] of cases) {
      const t = await placed(2);
      const comm = new Communicator(t, { timeoutMs: 5000 });
      const ws = dialAsNeighbour(t);
      await new Promise((r) => ws.once('open', r));
      const result = comm.allreduce(Float32Array.of(1, 2, 3, 4, 5, 6), { step: 7 }).then(
        () => null,
        (e: CollectiveError) => e,
      );
      ws.send(Buffer.concat([encodeFrameHeader(h), body]));
      const err = await result;
      expect(err, `${what}: ${err?.message}`).toMatchObject({ code: 'ERR_PROTOCOL', peer: 1, message: expect.stringMatching(/does not fit its operation/) });
      ws.terminate();
    }
    // And a repeat of a segment already taken.
    const t = await placed(2);
    const comm = new Communicator(t, { timeoutMs: 5000 });
    const ws = dialAsNeighbour(t);
    await new Promise((r) => ws.once('open', r));
    const result = comm.allreduce(Float32Array.of(1, 2, 3, 4, 5, 6), { step: 7 }).catch((e: CollectiveError) => e);
    ws.send(Buffer.concat([encodeFrameHeader(rs), payload]));
    ws.send(Buffer.concat([encodeFrameHeader(rs), payload]));
    expect(await result).toMatchObject({ code: 'ERR_PROTOCOL', message: expect.stringMatching(/a second frame for chunk 1 segment 0/) });
    ws.terminate();
  });

  it('empty frames for collectives not started yet are counted: past the limit the communicator fails with ERR_EARLY_LIMIT', async () => {
    const t = await placed(2);
    const comm = new Communicator(t, { timeoutMs: 5000, maxEarlyFrames: 10 });
    const ws = dialAsNeighbour(t);
    await new Promise((r) => ws.once('open', r));
    const empty = (seq: number): FrameHeader => ({ op: FrameOp.gatherValues, dtype: Dtype.uint8, seq, step: 0, from: 1, chunk: 1, segment: 0, offset: 0, count: 0, tensorLength: 0, layoutHash: '0000000000000000' });
    for (let seq = 100; seq < 111; seq++) ws.send(encodeFrameHeader(empty(seq)));
    await new Promise((r) => setTimeout(r, 100));
    await expect(comm.barrier()).rejects.toMatchObject({ code: 'ERR_EARLY_LIMIT', message: expect.stringMatching(/more than 10 frames ahead/) });
    ws.terminate();
  });

  it('on the connection it dialled, where large payloads arrive in pieces: exact bytes, and each malformed one closes it with 1002', async () => {
    const big = (floats: number): FrameHeader => ({ ...header, op: FrameOp.allGather, count: floats, tensorLength: 1 << 20 });
    const data = Buffer.from(Float32Array.from({ length: 65_536 }, (_, i) => i * 0.5 - 7).buffer); // 256 KiB
    const cases: [string, Buffer[], string | null][] = [
      ['a whole payload', [encodeFrameHeader(big(65_536), true), data], null],
      ['a payload shorter than announced', [encodeFrameHeader(big(65_536), true), data.subarray(0, 200_000)], 'ERR_FRAME_TRUNCATED'],
      ['a payload longer than announced', [encodeFrameHeader(big(32_768), true), data], 'ERR_FRAME_LENGTH'],
      ['a large message with no header before it', [Buffer.alloc(262_144)], 'ERR_BAD_MAGIC'],
    ];
    for (const [what, messages, code] of cases) {
      // A stand-in for rank 0 of 2: it accepts the transport's dial and dials it back.
      const server = new WebSocketServer({ port: 0, host: '127.0.0.1' });
      await new Promise((r) => server.once('listening', r));
      const accepted = new Promise<WebSocket>((r) => server.once('connection', r));
      const t = await WebSocketTransport.listen({ connectTimeoutMs: 3000 });
      open.push(t);
      const joined = t.join({ rank: 1, worldSize: 2, prevAddress: `ws://127.0.0.1:${(server.address() as { port: number }).port}` });
      const back = new WebSocket(t.address, { headers: { 'x-ringtrain-rank': '0', 'x-ringtrain-world': '2', 'x-ringtrain-version': '1', 'x-ringtrain-ring': '' } });
      await joined;
      const rec = recorder();
      t.setHandler(rec);
      const upstream = await accepted;
      const closed = new Promise<[number, string]>((r) => upstream.once('close', (c, reason) => r([c, reason.toString()])));
      for (const m of messages) upstream.send(m);
      if (code === null) {
        await until(() => rec.frames.length === 1);
        expect(Buffer.from(rec.frames[0][2]).equals(data), what).toBe(true);
        expect(rec.lost, what).toEqual([]);
      } else {
        expect(await closed, what).toEqual([1002, code]);
        await until(() => rec.lost.length === 1);
        expect(rec.lost[0], what).toMatchObject({ code: 'ERR_PROTOCOL', peer: 0 });
        expect(rec.frames, what).toHaveLength(0);
      }
      back.terminate();
      upstream.terminate();
      await new Promise((r) => server.close(r));
    }
  });

  it('refuses a message over the frame limit (close 1009) without buffering it, and reports ERR_PROTOCOL', async () => {
    const t = await placed(2, { limits: { maxFrameBytes: 1024, maxMessageBytes: 512 } });
    const rec = recorder();
    t.setHandler(rec);
    const ws = dialAsNeighbour(t);
    await new Promise((r) => ws.once('open', r));
    const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
    ws.send(Buffer.alloc(4096));
    expect(await closed).toBe(1009);
    await until(() => rec.lost.length === 1);
    expect(rec.lost[0].code).toBe('ERR_PROTOCOL');
  });
});

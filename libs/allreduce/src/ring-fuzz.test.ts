// Fuzzing a ring endpoint on a real socket: a neighbour that sends generated and mutated frames.
// Whatever arrives, nothing throws out of the transport or the communicator (vitest fails on an
// uncaught error), every collective settles with a coded error or a result, and afterwards the
// same endpoint still joins a genuine ring and sums exactly.
import { Dtype, encodeControl, encodeFrameHeader, FrameOp, type FrameHeader, PROTOCOL_VERSION } from '@ringtrain/protocol';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Communicator } from './communicator.js';
import { CollectiveError } from './errors.js';
import { WebSocketTransport } from './websocket-transport.js';

const header = fc.record({
  op: fc.constantFrom(FrameOp.reduceScatter, FrameOp.allGather, FrameOp.broadcast, FrameOp.gatherValues),
  dtype: fc.constantFrom(Dtype.float32, Dtype.uint8),
  seq: fc.oneof(fc.constantFrom(0, 1), fc.nat({ max: 0xffffffff })),
  step: fc.oneof(fc.constant(3), fc.nat({ max: 0xffffffff })),
  from: fc.constantFrom(0, 1, 2, 65535),
  chunk: fc.oneof(fc.constantFrom(0, 1), fc.nat({ max: 65535 })),
  segment: fc.oneof(fc.constantFrom(0, 1), fc.nat({ max: 0xffffffff })),
  offset: fc.oneof(fc.constantFrom(0, 4), fc.nat({ max: 0xffffffff })),
  count: fc.oneof(fc.constantFrom(0, 4, 8), fc.nat({ max: 64 })),
  tensorLength: fc.oneof(fc.constant(8), fc.nat({ max: 0xffffffff })),
  layoutHash: fc.constantFrom('0000000000000000', 'ffffffffffffffff'),
}) as fc.Arbitrary<FrameHeader>;

/** The frame rank 0 expects first (rank 1's reduce-scatter of chunk 1), with one field changed. */
const nearlyValid = fc.tuple(fc.constantFrom<keyof FrameHeader>('op', 'dtype', 'seq', 'step', 'chunk', 'segment', 'offset', 'count', 'tensorLength', 'layoutHash'), header).map(([key, other]) => {
  const h: FrameHeader = { op: FrameOp.reduceScatter, dtype: Dtype.float32, seq: 0, step: 3, from: 1, chunk: 1, segment: 0, offset: 4, count: 4, tensorLength: 8, layoutHash: '0000000000000000' };
  const m = { ...h, [key]: other[key] } as FrameHeader;
  return Buffer.concat([encodeFrameHeader(m), Buffer.alloc(m.count * (m.dtype === Dtype.uint8 ? 1 : 4), 2)]);
});

/** One input: a frame with a payload of about the size it announces (or not), raw bytes, a control message, or a cut frame. */
const input = fc.oneof(
  { arbitrary: nearlyValid, weight: 3 },
  fc.tuple(header, fc.integer({ min: -4, max: 4 })).map(([h, skew]) => Buffer.concat([encodeFrameHeader(h), Buffer.alloc(Math.max(0, h.count * (h.dtype === Dtype.uint8 ? 1 : 4) + skew), 1)])),
  header.map((h) => encodeFrameHeader(h, true)),
  fc.uint8Array({ maxLength: 128 }).map((b) => Buffer.from(b)),
  fc.tuple(header, fc.nat({ max: 47 })).map(([h, cut]) => encodeFrameHeader(h).subarray(0, cut)),
  fc.anything({ maxDepth: 2 }).map((x) => encodeControl({ type: 'abort', v: PROTOCOL_VERSION, origin: 1, code: 'X', message: '', extra: x } as never)),
);

async function placed(): Promise<WebSocketTransport> {
  const t = await WebSocketTransport.listen({ connectTimeoutMs: 300 });
  t.join({ rank: 0, worldSize: 2, ringId: 'fuzz/1', prevAddress: 'ws://127.0.0.1:9' }).catch(() => {});
  return t;
}

describe('ring endpoint fuzz', () => {
  it('10,000 hostile frames over 500 connections: every collective settles, nothing escapes, and the endpoint then sums exactly in a genuine ring', async () => {
    const endpoint = await placed();
    let frames = 0;
    const codes = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(fc.array(input, { minLength: 20, maxLength: 20 }), async (inputs) => {
        const comm = new Communicator(endpoint, { timeoutMs: 5000 });
        const neighbour = new WebSocket(endpoint.address, {
          perMessageDeflate: false,
          headers: { 'x-ringtrain-rank': '1', 'x-ringtrain-world': '2', 'x-ringtrain-version': String(PROTOCOL_VERSION), 'x-ringtrain-ring': 'fuzz/1' },
        });
        neighbour.on('error', () => {});
        await new Promise((r) => neighbour.once('open', r));
        const outcome = comm.allreduce(new Float32Array(8).fill(1), { step: 3 }).then(
          () => 'summed',
          (e: unknown) => e,
        );
        for (const b of inputs) if (neighbour.readyState === WebSocket.OPEN) neighbour.send(b);
        frames += inputs.length;
        await new Promise((r) => setTimeout(r, 5));
        comm.detach();
        const settled = await outcome;
        if (settled !== 'summed') expect(settled).toBeInstanceOf(CollectiveError);
        codes.set(settled === 'summed' ? 'summed' : (settled as CollectiveError).code, (codes.get(settled === 'summed' ? 'summed' : (settled as CollectiveError).code) ?? 0) + 1);
        // The next connection is this one's successor: the endpoint forgets the old link.
        neighbour.terminate();
        endpoint.leave();
        endpoint.join({ rank: 0, worldSize: 2, ringId: 'fuzz/1', prevAddress: 'ws://127.0.0.1:9' }).catch(() => {});
      }),
      { numRuns: 500, seed: 11 },
    );
    expect(frames).toBe(10_000);
    // The inputs reached past the decoder: some were refused by the fingerprint or the layout, some summed.
    expect([...codes.keys()].sort()).toEqual(expect.arrayContaining(['ERR_FINGERPRINT_MISMATCH', 'ERR_PROTOCOL']));
    // A genuine neighbour now: the fuzzed endpoint joins a real ring of two and sums exactly.
    endpoint.leave();
    const peer = await WebSocketTransport.listen({ connectTimeoutMs: 5000 });
    await Promise.all([
      endpoint.join({ rank: 0, worldSize: 2, ringId: 'real/1', prevAddress: peer.address }),
      peer.join({ rank: 1, worldSize: 2, ringId: 'real/1', prevAddress: endpoint.address }),
    ]);
    const [a, b] = [new Communicator(endpoint, { timeoutMs: 5000 }), new Communicator(peer, { timeoutMs: 5000 })];
    const x = Float32Array.from({ length: 1000 }, (_, i) => i);
    const y = Float32Array.from({ length: 1000 }, (_, i) => 2 * i);
    await Promise.all([a.allreduce(x, { average: false }), b.allreduce(y, { average: false })]);
    expect(Array.from(x)).toEqual(Array.from({ length: 1000 }, (_, i) => 3 * i));
    expect(Array.from(y)).toEqual(Array.from(x));
    await Promise.all([a.close(), b.close()]);
  }, 120_000);
});

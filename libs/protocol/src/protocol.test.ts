import { inspect } from 'node:util';
import { sameSecret } from './secret.js';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { decodeControl, encodeControl } from './control.js';
import { parseStatusEvent, statusJsonSchema } from './status.js';
import { checkFollowingPayload, decodeTensorFrame, Dtype, encodeFrameHeader, FRAME_HEADER_BYTES, type FrameHeader, FrameOp, opName } from './tensor-frame.js';

const header = (over: Partial<FrameHeader> = {}): FrameHeader => ({
  op: FrameOp.reduceScatter,
  dtype: Dtype.float32,
  seq: 7,
  step: 42,
  from: 3,
  chunk: 2,
  segment: 5,
  offset: 100,
  count: 4,
  tensorLength: 1000,
  layoutHash: '0123456789abcdef',
  ...over,
});

function frame(h: FrameHeader, payload = new Float32Array(h.count).map((_, i) => i + 0.5)): Buffer {
  return Buffer.concat([encodeFrameHeader(h), Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)]);
}

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};

describe('tensor frames', () => {
  it('round-trips every header field and the raw little-endian payload', () => {
    fc.assert(
      fc.property(
        fc.record({
          seq: fc.nat({ max: 2 ** 32 - 1 }),
          step: fc.nat({ max: 2 ** 32 - 1 }),
          from: fc.nat({ max: 65535 }),
          chunk: fc.nat({ max: 65535 }),
          segment: fc.nat({ max: 2 ** 32 - 1 }),
          count: fc.nat({ max: 64 }),
          offset: fc.nat({ max: 1000 }),
          layoutHash: fc.stringMatching(/^[0-9a-f]{16}$/),
          op: fc.constantFrom(FrameOp.reduceScatter, FrameOp.allGather, FrameOp.broadcast),
        }),
        (f) => {
          const h = header({ ...f, tensorLength: f.offset + f.count + 3 });
          const payload = Float32Array.from({ length: h.count }, (_, i) => Math.fround(i * 1.25 - 3));
          const decoded = decodeTensorFrame(frame(h, payload));
          expect(decoded.header).toEqual(h);
          expect(Array.from(new Float32Array(Uint8Array.from(decoded.payload).buffer))).toEqual(Array.from(payload));
        },
      ),
    );
  });

  it('the payload is raw float32 little-endian bytes after a 48-byte header', () => {
    const buf = frame(header({ count: 1, offset: 0 }), Float32Array.of(1));
    expect(buf.length).toBe(FRAME_HEADER_BYTES + 4);
    expect([...buf.subarray(48)]).toEqual([0x00, 0x00, 0x80, 0x3f]);
    expect(buf.subarray(0, 4).toString('latin1')).toBe('RTF0');
  });

  it('rejects hand-built bad frames with their codes', () => {
    const good = frame(header());
    expect(codeOf(() => decodeTensorFrame(good.subarray(0, 20)))).toBe('ERR_FRAME_TRUNCATED');
    expect(codeOf(() => decodeTensorFrame(good.subarray(0, good.length - 1)))).toBe('ERR_FRAME_TRUNCATED');
    expect(codeOf(() => decodeTensorFrame(Buffer.concat([good, Buffer.alloc(4)])))).toBe('ERR_FRAME_LENGTH');
    const badMagic = Buffer.from(good);
    badMagic[0] = 0x58;
    expect(codeOf(() => decodeTensorFrame(badMagic))).toBe('ERR_BAD_MAGIC');
    const badVersion = Buffer.from(good);
    badVersion[4] = 9;
    expect(() => decodeTensorFrame(badVersion)).toThrow(/protocol version 9, expected 1/);
    const badOp = Buffer.from(good);
    badOp[5] = 77;
    expect(codeOf(() => decodeTensorFrame(badOp))).toBe('ERR_BAD_FIELD');
    const badDtype = Buffer.from(good);
    badDtype[6] = 0;
    expect(codeOf(() => decodeTensorFrame(badDtype))).toBe('ERR_BAD_FIELD');
    expect(codeOf(() => decodeTensorFrame(frame(header({ offset: 998, count: 4 }))))).toBe('ERR_FRAME_LENGTH');
    expect(codeOf(() => decodeTensorFrame(good, { maxFrameBytes: 40, maxMessageBytes: 1 }))).toBe('ERR_FRAME_TOO_LARGE');
  });

  it('checks the announced size before trusting it: a header claiming 4 G elements is refused, not allocated', () => {
    const lying = encodeFrameHeader(header({ count: 0xffffffff, offset: 0, tensorLength: 0xffffffff }));
    expect(codeOf(() => decodeTensorFrame(lying))).toBe('ERR_FRAME_TOO_LARGE');
  });
});

describe('tensor frame errors say what was wrong', () => {
  const messageOf = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      return `${(e as { code: string }).code}: ${(e as Error).message}`;
    }
    return 'no error';
  };

  it('every refusal names the field and the values', () => {
    const good = frame(header());
    expect(messageOf(() => decodeTensorFrame(good, { maxFrameBytes: 63, maxMessageBytes: 1 }))).toBe('ERR_FRAME_TOO_LARGE: frame of 64 bytes exceeds the limit of 63');
    expect(messageOf(() => decodeTensorFrame(good.subarray(0, 47)))).toBe('ERR_FRAME_TRUNCATED: frame of 47 bytes is shorter than the 48-byte header');
    const badMagic = Buffer.from(good);
    badMagic[0] = 0x58;
    expect(messageOf(() => decodeTensorFrame(badMagic))).toBe('ERR_BAD_MAGIC: bad frame magic 0x30465458');
    const badVersion = Buffer.from(good);
    badVersion[4] = 9;
    expect(messageOf(() => decodeTensorFrame(badVersion))).toBe('ERR_BAD_VERSION: frame of protocol version 9, expected 1');
    const badOp = Buffer.from(good);
    badOp[5] = 77;
    expect(messageOf(() => decodeTensorFrame(badOp))).toBe('ERR_BAD_FIELD: unknown frame operation 77');
    const badDtype = Buffer.from(good);
    badDtype[6] = 9;
    expect(messageOf(() => decodeTensorFrame(badDtype))).toBe('ERR_BAD_FIELD: unknown frame dtype 9');
    const badFlags = Buffer.from(good);
    badFlags[7] = 0x81;
    expect(messageOf(() => decodeTensorFrame(badFlags))).toBe('ERR_BAD_FIELD: unknown frame flags 0x81');
    expect(messageOf(() => decodeTensorFrame(encodeFrameHeader(header({ count: 100, offset: 0 }), true), { maxFrameBytes: 447, maxMessageBytes: 1 }))).toBe('ERR_FRAME_TOO_LARGE: frame announces 400 payload bytes, over the limit of 447');
    expect(messageOf(() => decodeTensorFrame(Buffer.concat([encodeFrameHeader(header(), true), Buffer.alloc(3)])))).toBe('ERR_FRAME_LENGTH: frame with a following payload carries 3 bytes after its header');
    expect(messageOf(() => decodeTensorFrame(good.subarray(0, 60)))).toBe('ERR_FRAME_TRUNCATED: frame announces 4 elements (16 bytes) but carries 12 bytes');
    expect(messageOf(() => decodeTensorFrame(Buffer.concat([good, Buffer.alloc(4)])))).toBe('ERR_FRAME_LENGTH: frame announces 4 elements (16 bytes) but carries 20 bytes');
    expect(messageOf(() => decodeTensorFrame(frame(header({ offset: 997, count: 4 }))))).toBe('ERR_FRAME_LENGTH: frame covers elements 997..1001 past the tensor length 1000');
    expect(messageOf(() => checkFollowingPayload(header(), 12))).toBe('ERR_FRAME_TRUNCATED: payload message of 12 bytes, the header announced 16');
    expect(messageOf(() => checkFollowingPayload(header(), 20))).toBe('ERR_FRAME_LENGTH: payload message of 20 bytes, the header announced 16');
  });

  it('frames exactly at each limit pass', () => {
    const good = frame(header());
    expect(decodeTensorFrame(good, { maxFrameBytes: 64, maxMessageBytes: 1 }).header.count).toBe(4);
    expect(decodeTensorFrame(frame(header({ offset: 996, count: 4 }))).header.offset).toBe(996);
    expect(decodeTensorFrame(encodeFrameHeader(header({ count: 100, offset: 0 }), true), { maxFrameBytes: 448, maxMessageBytes: 1 }).payload).toBeNull();
    // A uint8 frame: one byte an element.
    const bytes = Buffer.concat([encodeFrameHeader(header({ dtype: Dtype.uint8, count: 3 })), Buffer.from([1, 2, 3])]);
    expect(Array.from(decodeTensorFrame(bytes).payload!)).toEqual([1, 2, 3]);
  });

  it('writes the layout hash as its last 16 hex digits, zero-padded, at bytes 40..47', () => {
    expect(encodeFrameHeader(header({ layoutHash: 'abc' })).subarray(40, 48).toString('hex')).toBe('0000000000000abc');
    expect(encodeFrameHeader(header({ layoutHash: 'ff0123456789abcdef' })).subarray(40, 48).toString('hex')).toBe('0123456789abcdef');
  });

  it('names operations for logs', () => {
    expect([1, 2, 3, 4, 9].map(opName)).toEqual(['reduce-scatter', 'all-gather', 'broadcast', 'gather-values', 'op#9']);
  });
});

describe('frames whose payload follows in the next message', () => {
  it('decode to a header without payload, and the follow-up is checked against it', () => {
    const h = header();
    const decoded = decodeTensorFrame(encodeFrameHeader(h, true));
    expect(decoded).toEqual({ header: h, payload: null });
    expect(() => checkFollowingPayload(h, 16)).not.toThrow();
    expect(codeOf(() => checkFollowingPayload(h, 12))).toBe('ERR_FRAME_TRUNCATED');
    expect(codeOf(() => checkFollowingPayload(h, 20))).toBe('ERR_FRAME_LENGTH');
    expect(codeOf(() => decodeTensorFrame(Buffer.concat([encodeFrameHeader(h, true), Buffer.alloc(16)])))).toBe('ERR_FRAME_LENGTH');
    const unknownFlag = encodeFrameHeader(h);
    unknownFlag[7] = 0x80;
    expect(codeOf(() => decodeTensorFrame(unknownFlag))).toBe('ERR_BAD_FIELD');
    expect(codeOf(() => decodeTensorFrame(encodeFrameHeader(header({ count: 1e6, offset: 0, tensorLength: 1e6 }), true), { maxFrameBytes: 1024, maxMessageBytes: 1 }))).toBe('ERR_FRAME_TOO_LARGE');
  });
});

describe('control messages', () => {
  it('validates coordinator messages field by field', () => {
    const hello = { type: 'hello', v: 1, workerId: 'h:1', ringAddress: 'ws://127.0.0.1:5', configHash: null, host: 'h', pid: 1 } as const;
    expect(decodeControl(encodeControl(hello))).toEqual(hello);
    const packr = new Packr({ useRecords: false });
    const head = encodeControl(hello).subarray(0, 8);
    expect(() => decodeControl(Buffer.concat([head, packr.pack({ ...hello, pid: -4 })]))).toThrow(/pid/);
    expect(() => decodeControl(Buffer.concat([head, packr.pack({ ...hello, extra: 1 })]))).toThrow(/extra/);
  });

  it('a run id is a UUID or the message is refused: no peer string can become part of a file path', () => {
    const hello = { type: 'hello', v: 1, workerId: 'h:1', ringAddress: 'ws://127.0.0.1:5', configHash: null, host: 'h', pid: 1 } as const;
    const held = (runId: string) => ({ ...hello, held: { runId, generation: 1, step: 5, weightsHash: 'ab'.repeat(8) } });
    const id = '0f1e2d3c-4b5a-4697-8877-665544332211';
    expect(decodeControl(encodeControl(held(id)))).toEqual(held(id));
    const packr = new Packr({ useRecords: false });
    const head = encodeControl(hello).subarray(0, 8);
    // The demonstrated attack (a journal read and written outside the folder), and its neighbours.
    for (const bad of ['/../../outside/evil', '../x', 'run-1', `${id}/..`, id.toUpperCase(), `${id}\n`, '']) {
      expect(codeOf(() => decodeControl(Buffer.concat([head, packr.pack(held(bad))]))), bad).toBe('ERR_MESSAGE_INVALID');
    }
  });

  it('round-trips an abort', () => {
    const msg = { type: 'abort', v: 1, origin: 2, code: 'ERR_PEER_LOST', message: 'rank 3 disconnected', peer: 3, seq: 17 } as const;
    expect(decodeControl(encodeControl(msg))).toEqual(msg);
  });

  it('rejects bad msgpack, schema violations, wrong versions and oversize with their codes', () => {
    const good = encodeControl({ type: 'abort', v: 1, origin: 0, code: 'X', message: '' });
    const head = good.subarray(0, 8);
    expect(codeOf(() => decodeControl(Buffer.concat([head, Buffer.from([0x82, 0xa4, 0x74])])))).toBe('ERR_MESSAGE_DECODE');
    const packr = new Packr({ useRecords: false });
    expect(codeOf(() => decodeControl(Buffer.concat([head, packr.pack({ type: 'abort', v: 1, origin: -1, code: 'X', message: '' })])))).toBe('ERR_MESSAGE_INVALID');
    expect(() => decodeControl(Buffer.concat([head, packr.pack({ type: 'bogus' })])))
      .toThrow(/invalid control message: type: expected one of abort, hello, .*, got "bogus"/);
    // A type that names no message, an inherited property's name included, or none at all.
    // A BigInt type once threw a TypeError from the error message itself, and crashed the coordinator (the fuzz test caught it).
    for (const body of [{ type: 'constructor', v: 1 }, { type: '__proto__', v: 1 }, { type: 7 }, { type: 5n, v: 1 }, { type: 2n ** 63n - 1n }, { type: { toJSON: 1 } }, {}, [], 'abort', null]) {
      expect(codeOf(() => decodeControl(Buffer.concat([head, packr.pack(body)]))), inspect(body)).toBe('ERR_MESSAGE_INVALID');
    }
    const v2 = Buffer.from(good);
    v2[4] = 2;
    expect(codeOf(() => decodeControl(v2))).toBe('ERR_BAD_VERSION');
    expect(codeOf(() => decodeControl(good, { maxFrameBytes: 1e6, maxMessageBytes: 10 }))).toBe('ERR_MESSAGE_TOO_LARGE');
    expect(codeOf(() => decodeControl(good.subarray(0, 5)))).toBe('ERR_FRAME_TRUNCATED');
  });
});

describe('monitoring messages', () => {
  it('carry NaN and ±Inf readings through msgpack (a diverging run must be reportable)', () => {
    const health = { type: 'health', v: 1, generation: 1, rank: 0, step: 10, tensors: [{ name: 'w', role: 'weight', weightNorm: Number.NaN, gradNorm: Number.POSITIVE_INFINITY, updateRatio: 0.5 }] } as const;
    const back = decodeControl(encodeControl(health));
    expect(back).toEqual(health);
    const nf = { type: 'nonFinite', v: 1, generation: 1, rank: 2, step: 7, what: 'gradient', tensor: 'w', value: Number.NEGATIVE_INFINITY, action: 'skip' } as const;
    expect(decodeControl(encodeControl(nf))).toEqual(nf);
    const probe = { type: 'ringProbe', v: 1, generation: 2, rank: 0, worldSize: 4, latencyMs: 0.4, busbwMBps: 118.5, probeBytes: 1 << 20, segmentBytes: 1 << 20, transport: 'tcp' } as const;
    expect(decodeControl(encodeControl(probe))).toEqual(probe);
    expect(codeOf(() => decodeControl(encodeControl({ ...probe, busbwMBps: Number.NaN } as never)))).toBe('ERR_MESSAGE_INVALID');
    expect(decodeControl(encodeControl({ ...probe, transport: 'shared memory' }))).toEqual({ ...probe, transport: 'shared memory' });
    const tuned = { ...probe, tuning: [{ segmentBytes: 65536, ms: 3.5 }, { segmentBytes: 262144, ms: 2.9 }] };
    expect(decodeControl(encodeControl(tuned))).toEqual(tuned);
    expect(codeOf(() => decodeControl(encodeControl({ ...probe, tuning: [{ segmentBytes: -1, ms: 1 }] } as never)))).toBe('ERR_MESSAGE_INVALID');
    expect(codeOf(() => decodeControl(encodeControl({ ...probe, transport: 'carrier pigeon' } as never)))).toBe('ERR_MESSAGE_INVALID');
  });

  it('rejects a progress report without its step count or with a negative time', () => {
    const ok = { type: 'progress', v: 1, generation: 1, rank: 0, epoch: 0, step: 10, steps: 10, loss: 1, samples: 640, correct: 1, dataMs: 1, computeMs: 1, allreduceMs: 1, optimizerMs: 1, lr: 0.1, skipped: 0 } as const;
    expect(decodeControl(encodeControl(ok))).toEqual(ok);
    const packr = new Packr({ useRecords: false });
    const raw = (body: object) => Buffer.concat([Buffer.from([0x52, 0x54, 0x43, 0x30, 1, 0, 0, 0]), packr.pack(body)]);
    const { steps: _, ...noSteps } = ok;
    expect(codeOf(() => decodeControl(raw(noSteps)))).toBe('ERR_MESSAGE_INVALID');
    expect(() => decodeControl(raw({ ...ok, steps: 0 }))).toThrow(/steps/);
  });
});

describe('token comparison', () => {
  it('compares in constant time without throwing on any input: equal only when equal', () => {
    const token = 'a'.repeat(32);
    expect(sameSecret(token, token)).toBe(true);
    // 32 characters, 64 bytes: the length check in characters passed and timingSafeEqual threw before.
    expect(sameSecret('\u00e9'.repeat(32), token)).toBe(false);
    expect(sameSecret('', token)).toBe(false);
    expect(sameSecret(`${token}x`, token)).toBe(false);
    expect(sameSecret('b'.repeat(32), token)).toBe(false);
  });
});

describe('status events', () => {
  it('validate against the versioned schema, and the JSON Schema lists every event type', () => {
    const e = { v: 1, seq: 1, time: 1, type: 'warning', warning: { code: 'WARN_RANK_SLOW', message: 'rank 1 is slow', rank: 1 } };
    expect(parseStatusEvent(JSON.stringify(e))).toEqual(e);
    expect(() => parseStatusEvent(JSON.stringify({ ...e, v: 2 }))).toThrow(/v/);
    expect(() => parseStatusEvent(JSON.stringify({ ...e, type: 'gossip' }))).toThrow(/invalid status event/);
    const schema = statusJsonSchema() as { title: string; anyOf: unknown[] };
    expect(schema.title).toBe('ringtrain status events v1');
    expect(schema.anyOf).toHaveLength(12);
    const ring = { v: 1, seq: 2, time: 2, type: 'ring', ring: { generation: 1, worldSize: 4, latencyMs: 0.4, busbwMBps: 118, probeBytes: 1 << 20, segmentBytes: 1 << 20, transport: 'shared memory' } };
    expect(parseStatusEvent(JSON.stringify(ring))).toEqual(ring);
    expect(() => parseStatusEvent(JSON.stringify({ ...ring, ring: { ...ring.ring, busbwMBps: 'fast' } }))).toThrow(/busbwMBps/);
    const change = {
      v: 1,
      seq: 2,
      time: 2,
      type: 'generation',
      change: { generation: 2, cause: 'fault', worldSize: 3, ranks: ['a:1', 'b:2', 'c:3'], restarts: 1, step: 40, recoveryMs: 812, fault: { code: 'ERR_PEER_LOST', message: 'rank 1 disconnected', rank: 1, pid: 7, exit: 'signal SIGKILL' } },
    };
    expect(parseStatusEvent(JSON.stringify(change))).toEqual(change);
    expect(() => parseStatusEvent(JSON.stringify({ ...change, change: { ...change.change, cause: 'magic' } }))).toThrow(/cause/);
  });
});


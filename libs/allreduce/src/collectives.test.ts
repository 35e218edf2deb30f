import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Communicator } from './communicator.js';
import { CollectiveError } from './errors.js';
import { MemoryHub } from './memory-transport.js';

function ring(world: number, segmentBytes = 64, timeoutMs = 5000, pieceBytes = 0): { hub: MemoryHub; comms: Communicator[] } {
  const hub = new MemoryHub(world, { pieceBytes });
  return { hub, comms: hub.transports.map((t) => new Communicator(t, { segmentBytes, timeoutMs, sendWindow: 3 })) };
}

function randomData(world: number, length: number, seed: number): Float32Array[] {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) / 2 ** 32) * 200 - 100;
  };
  return Array.from({ length: world }, () => Float32Array.from({ length }, next));
}

const sameBits = (a: Float32Array, b: Float32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('ring all-reduce (in-memory transport)', () => {
  it('equals the float64 sum, bit-identical on every rank, for any world size 1..16, any length, small segments', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 16 }),
        fc.oneof(fc.constantFrom(0, 1, 2, 3, 5, 7, 13, 31, 97), fc.integer({ min: 0, max: 700 })),
        fc.constantFrom(4, 8, 12, 64, 1024),
        fc.boolean(),
        fc.integer(),
        // 0: each payload arrives whole; else in misaligned pieces of 1..n bytes, as socket reads cut them.
        fc.constantFrom(0, 0, 1, 3, 6, 61),
        async (world, length, segmentBytes, average, seed, pieceBytes) => {
          const { comms } = ring(world, segmentBytes, 5000, pieceBytes);
          const data = randomData(world, length, seed);
          const expected = Float64Array.from({ length }, (_, i) => data.reduce((s, d) => s + d[i], 0) / (average ? world : 1));
          await Promise.all(comms.map((c, r) => c.allreduce(data[r], { average })));
          for (let i = 0; i < length; i++) {
            const tol = 1e-5 * world * 100;
            if (Math.abs(data[0][i] - expected[i]) > tol) throw new Error(`element ${i}: ${data[0][i]} vs ${expected[i]}`);
          }
          for (const d of data) expect(sameBits(d, data[0])).toBe(true);
        },
      ),
      { numRuns: 120 },
    );
  });

  it('tells every rank alike whether the result is finite: a NaN anywhere, or a sum that overflows', async () => {
    for (const world of [1, 2, 3, 5]) {
      for (const pieceBytes of [0, 5]) {
        const cases: [string, (r: number, d: Float32Array) => void, boolean][] = [
          ['finite', () => {}, true],
          ['a NaN on the last rank', (r, d) => r === world - 1 && (d[d.length - 1] = Number.NaN), false],
          // 3e38 on every rank: finite everywhere, but their sum is not (unless alone).
          ['an overflowing sum', (_, d) => (d[77] = 3e38), world === 1],
        ];
        for (const [what, spoil, finite] of cases) {
          const { comms } = ring(world, 64, 5000, pieceBytes);
          const data = randomData(world, 301, 9);
          data.forEach((d, r) => spoil(r, d));
          const results = await Promise.all(comms.map((c, r) => c.allreduce(data[r], { average: false })));
          expect(results.map((x) => x.finite), `${what}, world ${world}`).toEqual(Array(world).fill(finite));
          expect(results[0].finite).toBe(data[0].every(Number.isFinite));
        }
      }
    }
  });

  it('reduces subarray views of a larger buffer in place and leaves the rest alone', async () => {
    const { comms } = ring(3, 16);
    const bufs = [0, 1, 2].map((r) => Float32Array.from({ length: 20 }, (_, i) => r * 100 + i));
    await Promise.all(comms.map((c, r) => c.allreduce(bufs[r].subarray(5, 15), { average: false })));
    expect(bufs[1][4]).toBe(104);
    expect(bufs[1][15]).toBe(115);
    expect(bufs[1][5]).toBe(5 + 105 + 205);
  });

  it('runs several operations in flight at once, each on its own buffer', async () => {
    const { comms } = ring(4, 32);
    const a = randomData(4, 300, 1);
    const b = randomData(4, 77, 2);
    const c = randomData(4, 5, 3);
    const sum = (d: Float32Array[], i: number): number => d.reduce((s, x) => s + x[i], 0);
    const expA = sum(a, 10);
    const expB = sum(b, 76);
    const expC = sum(c, 4);
    await Promise.all(comms.flatMap((comm, r) => [comm.allreduce(a[r], { average: false }), comm.allreduce(b[r], { average: false }), comm.allreduce(c[r], { average: false })]));
    expect(a[3][10]).toBeCloseTo(expA, 3);
    expect(b[0][76]).toBeCloseTo(expB, 3);
    expect(c[2][4]).toBeCloseTo(expC, 3);
  });
});

describe('compressed all-reduce (fp16, bf16, int8)', () => {
  // Relative precision of one encoding: half a unit in the last place, or half an int8 step of the max.
  const precision = { fp16: 2 ** -11, bf16: 2 ** -8, int8: 1 / 254 } as const;

  it('bit-identical on every rank, and within the encodings’ error of the float64 mean, for any world, length, segments and cut', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('fp16', 'bf16', 'int8'),
        fc.integer({ min: 2, max: 9 }),
        fc.integer({ min: 0, max: 400 }),
        fc.constantFrom(4, 12, 64, 1024),
        fc.integer(),
        fc.constantFrom(0, 1, 3, 61),
        fc.boolean(),
        async (wire, world, length, segmentBytes, seed, pieceBytes, feedback) => {
          const { comms } = ring(world, segmentBytes, 5000, pieceBytes);
          const data = randomData(world, length, seed);
          const expected = Float64Array.from({ length }, (_, i) => data.reduce((s, d) => s + d[i], 0) / world);
          const residuals = data.map((d) => (feedback ? new Float32Array(d.length) : undefined));
          await Promise.all(comms.map((c, r) => c.allreduce(data[r], { wire, residual: residuals[r] })));
          for (const d of data) expect(sameBits(d, data[0])).toBe(true);
          // Each partial sum is encoded once per hop (world − 1 of them) and the mean once more;
          // values are within ±100, so partial sums within ±100·world.
          const tol = 100 * world * precision[wire] * (world + 1);
          for (let i = 0; i < length; i++) if (Math.abs(data[0][i] - expected[i]) > tol) throw new Error(`${wire} element ${i}: ${data[0][i]} vs ${expected[i]} (tolerance ${tol})`);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('error feedback: repeated int8 all-reduces of the same gradients average to the exact mean; without it the rounding bias stays', async () => {
    const world = 3;
    const length = 200;
    const steps = 64;
    const grads = randomData(world, length, 7).map((g, r) => g.map((v, i) => (i === 0 ? 100 : v * 0.01 * (r + 1)))); // one large value sets a coarse scale
    const exact = Float64Array.from({ length }, (_, i) => grads.reduce((s, g) => s + g[i], 0) / world);
    const meanError = async (feedback: boolean): Promise<number> => {
      const { comms } = ring(world, 4096);
      const residuals = grads.map(() => new Float32Array(length));
      const sum = new Float64Array(length);
      for (let t = 0; t < steps; t++) {
        const data = grads.map((g) => Float32Array.from(g));
        await Promise.all(comms.map((c, r) => c.allreduce(data[r], { wire: 'int8', residual: feedback ? residuals[r] : undefined, step: t })));
        data[0].forEach((v, i) => (sum[i] += v));
      }
      let worst = 0;
      for (let i = 1; i < length; i++) worst = Math.max(worst, Math.abs(sum[i] / steps - exact[i]));
      return worst;
    };
    const [without, withFeedback] = [await meanError(false), await meanError(true)];
    const step = (100 * world) / 127; // the coarsest scale on the wire (a partial sum of the large value)
    expect(without).toBeGreaterThan(step / 10); // small values rounded the same way every time
    expect(withFeedback).toBeLessThan(without / 8);
    expect(withFeedback).toBeLessThan((2 * step) / steps + 1e-3);
  });

  it('a NaN or an overflow reaches every rank alike through every wire format; ranks that disagree on the format fail', async () => {
    for (const wire of ['fp16', 'bf16', 'int8'] as const) {
      for (const [what, poison, finite] of [
        ['finite', () => {}, true],
        ['a NaN', (r: number, d: Float32Array) => r === 1 && (d[3] = Number.NaN), false],
        ['past the format', (_: number, d: Float32Array) => (d[5] = wire === 'fp16' ? 40_000 : 3e38), false],
      ] as const) {
        const { comms } = ring(3, 16);
        const data = randomData(3, 50, 11);
        data.forEach((d, r) => poison(r, d));
        const results = await Promise.all(comms.map((c, r) => c.allreduce(data[r], { wire })));
        expect(results.map((x) => x.finite), `${wire}: ${what}`).toEqual([finite, finite, finite]);
      }
    }
    const { comms } = ring(2, 16);
    const data = randomData(2, 50, 3);
    const results = await Promise.allSettled([comms[0].allreduce(data[0], { wire: 'fp16' }), comms[1].allreduce(data[1], { wire: 'bf16' })]);
    for (const r of results) expect(r.status === 'rejected' && String(r.reason.message)).toMatch(/dtype/);
  });
});

describe('broadcast, all-gather, barrier', () => {
  it("broadcast copies the root's buffer to every rank", async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 300 }), fc.nat(), async (world, length, rootSeed) => {
        const root = rootSeed % world;
        const { comms } = ring(world, 40);
        const data = randomData(world, length, rootSeed + 1);
        const original = Float32Array.from(data[root]);
        await Promise.all(comms.map((c, r) => c.broadcast(data[r], { root })));
        for (const d of data) expect(sameBits(d, original)).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it('all-gather returns every rank its parts in rank order; barrier resolves when all arrive', async () => {
    const { comms } = ring(5);
    const parts = await Promise.all(comms.map((c, r) => c.allgather(Buffer.from(`rank-${r}-${'x'.repeat(r)}`))));
    for (const p of parts) expect(p.map((b) => Buffer.from(b).toString())).toEqual([0, 1, 2, 3, 4].map((r) => `rank-${r}-${'x'.repeat(r)}`));
    let released = 0;
    const waits = comms.slice(0, 4).map((c) => c.barrier().then(() => released++));
    await new Promise((r) => setTimeout(r, 50));
    expect(released).toBe(0);
    await Promise.all([...waits, comms[4].barrier()]);
    expect(released).toBe(4);
  });
});

describe('failures: every rank fails, nothing hangs', () => {
  const codeOf = async (p: Promise<unknown>): Promise<CollectiveError> => p.then(() => { throw new Error('resolved'); }, (e: CollectiveError) => e);

  it('different lengths: every rank fails at once with ERR_FINGERPRINT_MISMATCH naming both ranks and fingerprints', async () => {
    const { comms } = ring(4);
    const errs = await Promise.all(comms.map((c, r) => codeOf(c.allreduce(new Float32Array(r === 2 ? 11 : 10), { step: 3 }))));
    for (const e of errs) expect(e.code).toBe('ERR_FINGERPRINT_MISMATCH');
    expect(errs.some((e) => /rank 2 sent allreduce .* length 11 .*rank 3 is at allreduce seq 0 step 3 length 10/.test(e.message))).toBe(true);
  });

  it('different steps or layouts are mismatches too', async () => {
    const a = ring(3);
    const errs = await Promise.all(a.comms.map((c, r) => codeOf(c.allreduce(new Float32Array(9), { step: r === 0 ? 7 : 8 }))));
    for (const e of errs) expect(e.code).toBe('ERR_FINGERPRINT_MISMATCH');
    const b = ring(3);
    const errs2 = await Promise.all(b.comms.map((c, r) => codeOf(c.broadcast(new Float32Array(9), { layoutHash: r === 1 ? 'aaaaaaaaaaaaaaaa' : 'bbbbbbbbbbbbbbbb' }))));
    for (const e of errs2) expect(e.code).toBe('ERR_FINGERPRINT_MISMATCH');
  });

  it('a lost peer fails the operation on every rank with ERR_PEER_LOST naming it, and later calls fail at once', async () => {
    const { hub, comms } = ring(6, 16, 10_000);
    const data = randomData(6, 5000, 9);
    const started = performance.now();
    const results = comms.map((c, r) => (r === 4 ? null : codeOf(c.allreduce(data[r]))));
    setTimeout(() => hub.kill(4), 1);
    const errs = await Promise.all(results.filter((p): p is Promise<CollectiveError> => p !== null));
    expect(performance.now() - started).toBeLessThan(2000);
    for (const e of errs) {
      expect(e.code).toBe('ERR_PEER_LOST');
      expect(e.message).toMatch(/peer rank 4/);
    }
    const later = await codeOf(comms[0].allreduce(new Float32Array(3)));
    expect(later.code).toBe('ERR_PEER_LOST');
  });

  it('a rank that never calls makes the others time out with ERR_COLLECTIVE_TIMEOUT naming the operation', async () => {
    const { comms } = ring(3, 64, 300);
    const errs = await Promise.all([codeOf(comms[0].allreduce(new Float32Array(8), { step: 5 })), codeOf(comms[1].allreduce(new Float32Array(8), { step: 5 }))]);
    for (const e of errs) expect(['ERR_COLLECTIVE_TIMEOUT']).toContain(e.code);
    expect(errs.map((e) => e.message).join('\n')).toMatch(/allreduce seq 0 step 5 length 8 .* timed out after 300 ms waiting on rank/);
  });

  it('close rejects what is in flight with ERR_CLOSED', async () => {
    const { comms } = ring(2);
    const p = codeOf(comms[0].allreduce(new Float32Array(4)));
    await comms[0].close();
    expect((await p).code).toBe('ERR_CLOSED');
  });
});

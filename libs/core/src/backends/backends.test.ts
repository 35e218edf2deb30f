import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import { absMax, fixedPointHalves, fixedPointMean } from '../fixed-point.js';
import { SoftmaxCrossEntropy } from '../losses.js';
import { Rng } from '../rng.js';
import { createBackend } from './create-backend.js';
import { loadNativeAddon, NativeBackend } from './native-backend.js';
import { ReferenceBackend } from './reference-backend.js';
import { WasmBackend } from './wasm-backend.js';

const reference = new ReferenceBackend();
const backends: Backend[] = [new WasmBackend({ memoryMb: 64 }), new WasmBackend({ memoryMb: 64, fma: false })];
const nativeLoads = 'addon' in loadNativeAddon();
if (nativeLoads) backends.push(new NativeBackend());
// CI installs OpenBLAS, so there the native backend must be tested, not silently skipped.
if (process.env.RINGTRAIN_EXPECT_NATIVE === '1' && !nativeLoads) throw new Error('RINGTRAIN_EXPECT_NATIVE=1 but the native addon does not load');

function filled(be: Backend, n: number, rng: Rng): Float32Array {
  const x = be.alloc(n);
  for (let i = 0; i < n; i++) x[i] = rng.uniform() * 2 - 1;
  return x;
}

function expectClose(actual: Float32Array, expected: Float32Array, k: number): void {
  // Summation order differs; the error of a k-term float32 dot product grows with k.
  const tol = 1e-6 * (k + 4);
  for (let i = 0; i < expected.length; i++) {
    if (Math.abs(actual[i] - expected[i]) > tol * Math.max(1, Math.abs(expected[i]))) {
      throw new Error(`element ${i}: got ${actual[i]}, expected ${expected[i]} (tol ${tol})`);
    }
  }
}

// Edge sizes: 1, odd, primes, and past the blocking (8-wide panels, 4-row kernels, KC = 256).
const dim = fc.oneof(fc.constantFrom(1, 2, 3, 4, 5, 7, 8, 9, 10, 13, 16, 17, 31, 33), fc.integer({ min: 1, max: 70 }));
const kDim = fc.oneof(dim, fc.constantFrom(255, 256, 257, 300, 521));

describe.each(backends.map((b) => [b.description, b] as const))('%s', (_name, be) => {
  it('matches the reference in all three GEMM forms, with and without accumulate, over random shapes', () => {
    fc.assert(
      fc.property(dim, dim, kDim, fc.boolean(), fc.boolean(), fc.boolean(), fc.integer(), (m, n, k, ta, tb, acc, seed) => {
        const rng = new Rng(seed);
        const a = filled(be, m * k, rng);
        const b = filled(be, k * n, rng);
        const c = filled(be, m * n, rng);
        const expected = Float32Array.from(c);
        reference.gemm(ta, tb, m, n, k, a, b, expected, acc);
        be.gemm(ta, tb, m, n, k, a, b, c, acc);
        expectClose(c, expected, k);
        for (const x of [a, b, c]) be.free(x);
      }),
      { numRuns: 150 },
    );
  });

  it('elementwise kernels (bias add, column sums, leaky ReLU and its backward) match the reference', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 23 }), fc.constantFrom(0, 0.01, 0.3), fc.integer(), (rows, cols, alpha, seed) => {
        const rng = new Rng(seed);
        const n = rows * cols;
        const [x, bias, dy] = [filled(be, n, rng), filled(be, cols, rng), filled(be, n, rng)];
        const run = (b: Backend, xs: Float32Array[]): Float32Array[] => {
          const [xx, bb, dd] = xs.map((v) => { const c = b.alloc(v.length); c.set(v); return c; });
          const y = b.alloc(n);
          const dx = b.alloc(n);
          const sums = b.alloc(cols);
          b.leakyRelu(xx, y, n, alpha);
          b.leakyReluBackward(xx, dd, dx, n, alpha);
          b.addBiasRows(xx, bb, rows, cols);
          b.sumRows(dd, rows, cols, sums);
          return [y, dx, xx, sums];
        };
        const got = run(be, [x, bias, dy]);
        const want = run(reference, [x, bias, dy]);
        got.forEach((g, i) => expectClose(g, want[i], rows));
      }),
      { numRuns: 60 },
    );
  });

  it('transformer kernels (GELU, LayerNorm, causal attention, and their backward passes) match the reference', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 3 }), fc.constantFrom(1, 2, 5, 16, 17, 33), fc.boolean(), fc.integer(),
        (batch, context, heads, headDim, withBias, seed) => {
          const rng = new Rng(seed);
          const shape = { batch, context, heads, headDim };
          const rows = batch * context;
          const width = heads * headDim;
          // Scores up to ±30 after scaling: the softmax must stay exact where it saturates.
          const inputs = [rows * 3 * width, rows * width, width, width, rows * width].map((n, i) => filled(reference, n, rng).map((v) => (i === 0 ? v * 6 : v)));
          const run = (b: Backend): Float32Array[] => {
            const [qkv, dout, gain, bias, lnx] = inputs.map((v) => { const c = b.alloc(v.length); c.set(v); return c; });
            const [probs, out, dqkv] = [b.alloc(batch * heads * context * context), b.alloc(rows * width), b.alloc(rows * 3 * width)];
            b.causalAttention(qkv, shape, probs, out);
            b.causalAttentionBackward(qkv, shape, probs, dout, dqkv);
            const [y, tanh, dx] = [b.alloc(rows * 3 * width), b.alloc(rows * 3 * width), b.alloc(rows * 3 * width)];
            b.gelu(qkv, y, tanh, rows * 3 * width);
            b.geluBackward(qkv, tanh, dqkv, dx, rows * 3 * width);
            const [ln, xhat, rstd, dln, dgain, dbias] = [b.alloc(rows * width), b.alloc(rows * width), b.alloc(rows), b.alloc(rows * width), b.alloc(width), b.alloc(width)];
            b.layerNorm(lnx, rows, width, 1e-5, gain, withBias ? bias : null, xhat, rstd, ln);
            b.layerNormBackward(dout, rows, width, xhat, rstd, gain, dgain, withBias ? dbias : null, dln);
            return [probs, out, dqkv, y, dx, ln, dln, dgain, dbias];
          };
          const got = run(be);
          run(reference).forEach((want, i) => expectClose(got[i], want, 4 * context + headDim));
        },
      ),
      { numRuns: 60 },
    );
  });

  it("softmax cross-entropy (a language model's head: thousands of logits a row) matches the TypeScript loss, at extremes too", () => {
    const rng = new Rng(11);
    for (const [rows, classes, spread] of [[1, 1, 1], [3, 2, 1], [7, 85, 5], [5, 1452, 20], [2, 4099, 3], [4, 17, 1e4]] as const) {
      const logits = be.alloc(rows * classes);
      for (let i = 0; i < logits.length; i++) logits[i] = (rng.uniform() * 2 - 1) * spread;
      if (classes > 2) [logits[0], logits[1]] = [1e30, -1e30];
      const labels = Int32Array.from({ length: rows }, (_, r) => (r * 7919) % classes);
      const [grad, want] = [be.alloc(rows * classes), new Float32Array(rows * classes)];
      const loss = new SoftmaxCrossEntropy(be).compute(logits, labels, rows, classes, grad);
      const expected = new SoftmaxCrossEntropy().compute(logits, labels, rows, classes, want);
      expect(Math.abs(loss - expected), `${rows}×${classes}: ${loss} vs ${expected}`).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(expected)));
      expectClose(grad, want, 4);
      expect(new SoftmaxCrossEntropy(be).compute(logits, labels, rows, classes, null)).toBeCloseTo(loss, 5);
    }
    expect(() => new SoftmaxCrossEntropy(be).compute(be.alloc(4), Int32Array.of(0, 2), 2, 2, null)).toThrow(/label 2 at row 1 is outside 0..1/);
  });

  it("deterministic mode's fixed-point sums give the TypeScript versions' bits, NaN and all", () => {
    const rng = new Rng(5);
    const [count, p] = [3, 1001];
    const offsets = Int32Array.of(0, 7, 7, 500, p);
    const micro = new Float32Array(count * p).map(() => (rng.uniform() * 2 - 1) * 10 ** Math.floor(rng.uniform() * 8 - 4));
    // Within the contract: |micro·perQ| ≤ 2¹⁰·2¹⁶, sums of 3 far below 2³¹.
    const perQ = Float64Array.of(2 ** 16, 2 ** 14, 2 ** 12, 2 ** 10);
    const [ours, theirs] = [new Float32Array(2 * p), new Float32Array(2 * p)];
    if (be.fixedPointHalves) be.fixedPointHalves(micro, count, p, offsets, perQ, ours);
    else fixedPointHalves(micro, count, p, offsets, perQ, ours);
    fixedPointHalves(micro, count, p, offsets, perQ, theirs);
    expect(Array.from(ours)).toEqual(Array.from(theirs));
    const perMicro = Float64Array.of(1e-7, 3e-9, 2 ** -14, 1 / 3);
    const [g1, g2] = [new Float32Array(p), new Float32Array(p)];
    if (be.fixedPointMean) be.fixedPointMean(ours, p, offsets, perMicro, g1);
    else fixedPointMean(ours, p, offsets, perMicro, g1);
    fixedPointMean(theirs, p, offsets, perMicro, g2);
    expect(Array.from(g1)).toEqual(Array.from(g2));
    const x = Float32Array.of(1, -7, 3);
    expect(be.absMax ? be.absMax(x, 3) : absMax(x, 3)).toBe(7);
    x[1] = Number.NaN;
    expect(be.absMax ? be.absMax(x, 3) : absMax(x, 3)).toBeNaN();
  });

  it('GELU and the softmax hold at the extremes: no NaN, exact limits', () => {
    const xs = Float32Array.of(-1e30, -1e4, -100, -10, -1, -1e-6, 0, 1e-6, 1, 10, 100, 1e4, 1e30);
    const [x, y, tanh, dy, dx] = [xs, xs, xs, xs, xs].map((v) => { const c = be.alloc(v.length); c.set(v); return c; });
    dy.fill(1);
    be.gelu(x, y, tanh, xs.length);
    be.geluBackward(x, tanh, dy, dx, xs.length);
    const want = [-0, -0, -0, -0, -0.15880801, -5e-7, 0, 5e-7, 0.84119199, 10, 100, 1e4, 1e30];
    want.forEach((w, i) => expect(Math.abs(y[i] - w), `GELU(${xs[i]}) = ${y[i]}`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(w))));
    expect(Array.from(dx).every(Number.isFinite), `GELU'(${Array.from(xs)}) = ${Array.from(dx)}`).toBe(true);
    expect([dx[0], dx[6], dx[12]]).toEqual([0, 0.5, 1]);
    // One query whose scores differ by thousands: all its weight on the largest, none lost to NaN.
    const shape = { batch: 1, context: 3, heads: 1, headDim: 1 };
    const qkv = be.alloc(9);
    qkv.set([1, -5000, 1, 1, 5000, 2, 1, 0, 3]); // rows of q|k|v
    const probs = be.alloc(9);
    const out = be.alloc(3);
    be.causalAttention(qkv, shape, probs, out);
    expect(Array.from(probs)).toEqual([1, 0, 0, 0, 1, 0, 0, 1, 0]);
    expect(Array.from(out)).toEqual([1, 2, 2]);
  });

  it('SGD (plain, momentum, Nesterov, decay) and Adam/AdamW updates match the reference', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 40 }), fc.integer(), fc.boolean(), (n, seed, nesterov) => {
        const rng = new Rng(seed);
        const init = [filled(be, n, rng), filled(be, n, rng), filled(be, n, rng), filled(be, n, rng).map(Math.abs)];
        const copy = (b: Backend): Float32Array[] => init.map((v) => { const c = b.alloc(n); c.set(v); return c; });
        const ours = copy(be);
        const ref = copy(reference);
        const sgd = { lr: 0.1, momentum: 0.9, weightDecay: 0.01, nesterov };
        const adam = { stepSize: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, rootCorrection: 0.05, l2: 0.01, shrink: 0.999 };
        for (const [b, [p, g, m, v]] of [[be, ours], [reference, ref]] as const) {
          b.sgdUpdate(p, g, m, sgd);
          b.sgdUpdate(p, g, null, { ...sgd, momentum: 0 });
          b.adamUpdate(p, g, m, v, adam);
        }
        ours.forEach((o, i) => expectClose(o, ref[i], 4));
      }),
      { numRuns: 60 },
    );
  });

  it('leaves the elements around C untouched and handles k = 0', () => {
    const rng = new Rng(3);
    const a = filled(be, 5 * 3, rng);
    const b = filled(be, 3 * 6, rng);
    const big = filled(be, 5 * 6 + 8, rng);
    const c = big.subarray(4, 4 + 5 * 6);
    const before = Float32Array.from(big);
    be.gemm(false, false, 5, 6, 3, a, b, c);
    expect(Array.from(big.subarray(0, 4))).toEqual(Array.from(before.subarray(0, 4)));
    expect(Array.from(big.subarray(34))).toEqual(Array.from(before.subarray(34)));
    be.gemm(false, false, 5, 6, 0, a, b, c);
    expect(c.every((v) => v === 0)).toBe(true);
  });

  it('rejects arrays too short for the shape with ERR_SHAPE', () => {
    const a = be.alloc(6);
    const b = be.alloc(9);
    const c = be.alloc(3);
    expect(() => be.gemm(false, false, 2, 3, 3, a, b, c)).toThrow(/C has 3 elements, needs m·n = 2·3 = 6/);
    try {
      be.gemm(false, false, 2, 3, 3, a, b, c);
    } catch (e) {
      expect((e as CoreError).code).toBe('ERR_SHAPE');
    }
  });
});

describe('wasm backend memory', () => {
  it('refuses arrays it did not allocate instead of computing on the wrong memory', () => {
    const be = new WasmBackend({ memoryMb: 8 });
    const a = new Float32Array(4);
    expect(() => be.gemm(false, false, 2, 2, 2, a, be.alloc(4), be.alloc(4))).toThrow(/A was not allocated by this backend/);
  });

  it('reports a full arena with ERR_ARENA_FULL and reuses freed buffers', () => {
    const be = new WasmBackend({ memoryMb: 2 });
    const x = be.alloc(100_000);
    expect(x.every((v) => v === 0)).toBe(true);
    x.fill(7);
    be.free(x);
    const y = be.alloc(100_000);
    expect(y.byteOffset).toBe(x.byteOffset);
    expect(y.every((v) => v === 0)).toBe(true); // a reused buffer is zeroed again
    expect(() => be.alloc(1_000_000)).toThrow(expect.objectContaining({ code: 'ERR_ARENA_FULL' }));
  });
});

describe.runIf('addon' in loadNativeAddon())('native direct convolutions', () => {
  it('take the instruction set asked for, or none with "0", and refuse anything else, naming the variable', () => {
    expect(new NativeBackend({ memoryMb: 8, directConv: '0' }).directConv).toBeUndefined();
    expect(new NativeBackend({ memoryMb: 8, directConv: '0' }).description).not.toMatch(/direct/);
    const best = new NativeBackend({ memoryMb: 8 });
    if (best.directConv) expect(new NativeBackend({ memoryMb: 8, directConv: 'avx2' }).description).toMatch(/convolutions direct on AVX2;/);
    expect(() => new NativeBackend({ memoryMb: 8, directConv: 'sse' as never })).toThrow(/RINGTRAIN_DIRECT_CONV must be 0, avx2 or avx512, got "sse"/);
  });

  it('the addon refuses sizes its arrays do not hold, products that overflow 64 bits included, before touching memory', () => {
    const loaded = loadNativeAddon();
    if (!('addon' in loaded) || !loaded.addon.directConvIsa) return;
    const { addon } = loaded;
    const isa = addon.directConvIsa;
    const a = new Float32Array(64);
    const big = 1 << 24; // each size is at most 2^24; four of them multiply past 2^64
    expect(() => addon.convForward(big, big, big, big, 1, big, big, 1, 0, 0, isa, a, a, a, a, a)).toThrow(/large enough for the sizes/);
    expect(() => addon.convForward(1, 1, 4, 4, 3, 4, 4, 1, 1, 1, isa, a, a, a, a.subarray(0, 10), a)).toThrow(/large enough for the sizes/);
    expect(() => addon.convBackwardData(big, big, big, big, 1, big, big, 1, 0, 0, isa, a, a, a)).toThrow(/large enough for the sizes/);
    expect(() => addon.convBackwardFilter(big, big, big, big, 1, big, big, big, 0, 0, isa, a, a, a, a)).toThrow(/large enough for the sizes/);
    expect(() => addon.convForward(1, 1, 4, 4, 3, 4, 4, 1, 1, 1, 3, a, a, a, a, a)).toThrow(/instruction set this CPU has/);
    expect(() => addon.convForward(0, 1, 4, 4, 3, 4, 4, 1, 1, 1, isa, a, a, a, a, a)).toThrow(/sizes must be positive integers/);
  });

  it('the addon refuses transformer calls whose arrays do not hold their sizes, or whose sizes are not sizes', () => {
    const loaded = loadNativeAddon();
    if (!('addon' in loaded)) return;
    const { addon } = loaded;
    const a = new Float32Array(64);
    const big = 1 << 30; // four of them multiply past 2^64
    expect(() => addon.attention(big, big, big, big, a, a, a)).toThrow(/attention: .*large enough for the sizes/);
    expect(() => addon.attentionBackward(1, 4, 2, 2, a, a, a, a.subarray(0, 47))).toThrow(/attentionBackward: .*large enough/);
    expect(() => addon.attention(1, 0, 1, 1, a, a, a)).toThrow(/sizes must be integers in 1\.\.2\^30/);
    expect(() => addon.gelu(65, a, a, a)).toThrow(/gelu: .*large enough/);
    expect(() => addon.geluBackward(8, a, a, a, new Int32Array(8) as unknown as Float32Array)).toThrow(/geluBackward: .*large enough/);
    expect(() => addon.layerNorm(8, 8, 0, a, a, null, a, a, a)).toThrow(/eps must be a positive number/);
    expect(() => addon.layerNorm(8, 8, 1e-5, a, a, a.subarray(0, 7), a, a, a)).toThrow(/layerNorm: .*large enough/);
    expect(() => addon.layerNormBackward(9, 8, a, a, a, a, a, null, null)).toThrow(/layerNormBackward: .*large enough/);
    expect(() => (addon.gelu as (...args: unknown[]) => void)(8, a, a)).toThrow(/gelu: wrong number of arguments/);
  });
});

describe('createBackend', () => {
  it('auto picks native when the addon loads, else wasm with a hint how to enable native', () => {
    const { backend, hint } = createBackend('auto');
    if (nativeLoads) {
      expect(backend.name).toBe('native');
      expect(hint).toBeUndefined();
    } else {
      expect(backend.name).toBe('wasm');
      expect(hint).toMatch(/libopenblas-dev/);
    }
  });

  it('falls back to wasm with the hint when the native addon cannot load (real process)', () => {
    // The built package, as a user's process loads it (npm test builds first).
    const code = `import('${new URL('../../dist/index.js', import.meta.url).pathname}').then(m => { const r = m.createBackend('auto'); console.log(JSON.stringify({ name: r.backend.name, hint: r.hint })); })`;
    const r = spawnSync(process.execPath, ['-e', code], {
      encoding: 'utf8',
      env: { ...process.env, RINGTRAIN_DISABLE_NATIVE: '1' },
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.name).toBe('wasm');
    expect(out.hint).toMatch(/apt-get install -y libopenblas-dev .* npm run build:native \(disabled by RINGTRAIN_DISABLE_NATIVE=1\)/);
  });

  it('rejects an unknown backend name', () => {
    expect(() => createBackend('gpu' as never)).toThrow(/unknown backend "gpu"/);
  });
});

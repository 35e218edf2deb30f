// Convolution, pooling and normalization layers: forward against direct float64 loops (no im2col),
// backward against central finite differences of those loops, over random shapes, strides and
// paddings (1×1 kernels, odd sizes, a kernel as large as the input); then every backend against
// the reference backend.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../backend.js';
import { createBackend } from '../backends/create-backend.js';
import { NativeBackend } from '../backends/native-backend.js';
import { ReferenceBackend } from '../backends/reference-backend.js';
import { WasmBackend } from '../backends/wasm-backend.js';
import { ParameterStore } from '../parameter-store.js';
import { Rng } from '../rng.js';
import { Conv2d } from './conv2d.js';
import { GroupNorm } from './groupnorm.js';
import type { Layer } from './layer.js';
import { Flatten, GlobalAvgPool, Pool2d } from './pooling.js';
import { linearProbe, numericGrad, random } from '../testing/finite-differences.js';

const be = new ReferenceBackend();
function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = 2e-4): void {
  expect(got.length, `${what} length`).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (Math.abs(got[i] - want[i]) > tol * Math.max(1, Math.abs(want[i]))) throw new Error(`${what}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
}

const probe = linearProbe;

/** Output size and leading padding, written out here apart from the layer's own geometry. */
function geometry(size: number, k: number, stride: number, padding: 'same' | 'valid' | number): { out: number; pad: number } {
  if (padding === 'same') {
    const out = Math.ceil(size / stride);
    return { out, pad: Math.floor(Math.max(0, (out - 1) * stride + k - size) / 2) };
  }
  const p = padding === 'valid' ? 0 : padding;
  return { out: Math.floor((size + 2 * p - k) / stride) + 1, pad: p };
}

/** Direct convolution in float64: y[n,f,oy,ox] = b[f] + Σ x[n,c,oy·s−pt+i,ox·s−pl+j]·W[f,c,i,j]. */
function conv64(x: ArrayLike<number>, wt: ArrayLike<number>, b: ArrayLike<number>, n: number, c: number, h: number, w: number, f: number, k: number, stride: number, padding: 'same' | 'valid' | number): Float64Array {
  const gy = geometry(h, k, stride, padding);
  const gx = geometry(w, k, stride, padding);
  const y = new Float64Array(n * f * gy.out * gx.out);
  for (let s = 0; s < n; s++)
    for (let fi = 0; fi < f; fi++)
      for (let oy = 0; oy < gy.out; oy++)
        for (let ox = 0; ox < gx.out; ox++) {
          let acc = b[fi];
          for (let ch = 0; ch < c; ch++)
            for (let i = 0; i < k; i++)
              for (let j = 0; j < k; j++) {
                const yy = oy * stride - gy.pad + i;
                const xx = ox * stride - gx.pad + j;
                if (yy >= 0 && yy < h && xx >= 0 && xx < w) acc += x[((s * c + ch) * h + yy) * w + xx] * wt[((fi * c + ch) * k + i) * k + j];
              }
          y[((s * f + fi) * gy.out + oy) * gx.out + ox] = acc;
        }
  return y;
}

const padding = fc.oneof(fc.constantFrom<'same' | 'valid'>('same', 'valid'), fc.integer({ min: 0, max: 2 }));

function convCase(backend: Backend, n: number, c: number, h: number, w: number, f: number, k: number, stride: number, pad: 'same' | 'valid' | number, seed: number) {
  const rng = new Rng(seed);
  const layer = new Conv2d('layers.0', [c, h, w], { filters: f, kernelSize: k, stride, padding: pad, init: 'he_normal' }, backend);
  const store = new ParameterStore(backend, layer.parameters());
  layer.bind(store);
  layer.initialize(rng);
  store.value('layers.0.bias').set(random(f, rng));
  const x = backend.alloc(n * c * h * w);
  x.set(random(x.length, rng));
  const r = random(n * layer.outputSize, rng);
  const dyBuf = backend.alloc(r.length);
  dyBuf.set(r);
  const y = Float32Array.from(layer.forward(x, n, true));
  const dx = Float32Array.from(layer.backward(dyBuf, n, true)!);
  return { layer, store, x: Float32Array.from(x), r, y, dx, dW: Float32Array.from(store.grad('layers.0.weight')), db: Float32Array.from(store.grad('layers.0.bias')) };
}

describe('conv2d vs direct float64 convolution', () => {
  it('forward, dx, dW and db over random shapes, strides and paddings', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 3 }),
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 5 }),
        fc.integer({ min: 1, max: 3 }),
        padding,
        fc.integer(),
        (n, c, h, w, f, k, stride, pad, seed) => {
          const g = [geometry(h, k, stride, pad), geometry(w, k, stride, pad)];
          fc.pre(g[0].out > 0 && g[1].out > 0);
          const t = convCase(be, n, c, h, w, f, k, stride, pad, seed);
          const W = t.store.value('layers.0.weight');
          const b = t.store.value('layers.0.bias');
          expectClose(t.y, conv64(t.x, W, b, n, c, h, w, f, k, stride, pad), 'y', 1e-5);
          const p = probe(t.r);
          expectClose(t.dx, numericGrad(Float64Array.from(t.x), (v) => p(conv64(v, W, b, n, c, h, w, f, k, stride, pad))), 'dx');
          expectClose(t.dW, numericGrad(Float64Array.from(W), (v) => p(conv64(t.x, v, b, n, c, h, w, f, k, stride, pad))), 'dW');
          expectClose(t.db, numericGrad(Float64Array.from(b), (v) => p(conv64(t.x, W, v, n, c, h, w, f, k, stride, pad))), 'db');
        },
      ),
      { numRuns: 60 },
    );
  });

  it('edge cases: 1×1 kernels, a kernel as large as the input, odd sizes with "same" and stride 2', () => {
    for (const [c, h, w, f, k, stride, pad] of [
      [3, 5, 4, 2, 1, 1, 'valid'],
      [2, 4, 4, 3, 4, 1, 'valid'],
      [1, 5, 5, 2, 5, 1, 'same'],
      [2, 7, 5, 2, 3, 2, 'same'],
      [1, 6, 6, 1, 2, 2, 'same'],
    ] as const) {
      const t = convCase(be, 2, c, h, w, f, k, stride, pad, 7);
      const W = t.store.value('layers.0.weight');
      const b = t.store.value('layers.0.bias');
      expectClose(t.y, conv64(t.x, W, b, 2, c, h, w, f, k, stride, pad), `y of ${[c, h, w, f, k, stride, pad]}`, 1e-5);
      const p = probe(t.r);
      expectClose(t.dx, numericGrad(Float64Array.from(t.x), (v) => p(conv64(v, W, b, 2, c, h, w, f, k, stride, pad))), `dx of ${[c, h, w, f, k, stride, pad]}`);
    }
    expect(new Conv2d('layers.0', [1, 5, 5], { filters: 1, kernelSize: 2, stride: 2, padding: 'same', init: 'he_normal' }, be).outputShape).toEqual([1, 3, 3]);
    expect(() => new Conv2d('layers.4', [1, 3, 3], { filters: 1, kernelSize: 5, stride: 1, padding: 'valid', init: 'he_normal' }, be)).toThrow(/layers\.4 \(conv2d\): a 5×5 window .* does not fit a 3×3 input/);
  });
});

/** Max or average pooling in float64, written out. */
function pool64(x: ArrayLike<number>, n: number, c: number, h: number, w: number, size: number, stride: number, max: boolean): Float64Array {
  const oh = Math.floor((h - size) / stride) + 1;
  const ow = Math.floor((w - size) / stride) + 1;
  const y = new Float64Array(n * c * oh * ow);
  for (let p = 0; p < n * c; p++)
    for (let oy = 0; oy < oh; oy++)
      for (let ox = 0; ox < ow; ox++) {
        const vals: number[] = [];
        for (let i = 0; i < size; i++) for (let j = 0; j < size; j++) vals.push(x[p * h * w + (oy * stride + i) * w + ox * stride + j]);
        y[(p * oh + oy) * ow + ox] = max ? Math.max(...vals) : vals.reduce((a, v) => a + v, 0) / vals.length;
      }
  return y;
}

function runLayer(layer: Layer, x: Float32Array, n: number, r: Float32Array): { y: Float32Array; dx: Float32Array } {
  const y = Float32Array.from(layer.forward(x, n, true));
  return { y, dx: Float32Array.from(layer.backward(r, n, true)!) };
}

describe('pooling, flatten and normalization vs float64', () => {
  it('maxpool2d and avgpool2d: forward and dx over random sizes and strides', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.integer(), (n, c, h, w, size, stride, max, seed) => {
        fc.pre(size <= h && size <= w);
        const rng = new Rng(seed);
        const layer = new Pool2d('layers.1', max ? 'maxpool2d' : 'avgpool2d', [c, h, w], size, stride, be);
        const x = random(n * c * h * w, rng);
        const r = random(n * layer.outputSize, rng);
        const { y, dx } = runLayer(layer, x, n, r);
        expectClose(y, pool64(x, n, c, h, w, size, stride, max), 'y', 1e-6);
        // Distinct random values keep the maximum away from ties, where it has no derivative.
        expectClose(dx, numericGrad(Float64Array.from(x), (v) => probe(r)(pool64(v, n, c, h, w, size, stride, max))), 'dx');
      }),
      { numRuns: 80 },
    );
  });

  it('globalavgpool and flatten', () => {
    const rng = new Rng(3);
    const gap = new GlobalAvgPool('layers.2', [3, 4, 5], be);
    const x = random(2 * 60, rng);
    const r = random(2 * 3, rng);
    const { y, dx } = runLayer(gap, x, 2, r);
    const gap64 = (v: ArrayLike<number>) => Float64Array.from({ length: 6 }, (_, p) => Array.from({ length: 20 }, (_, i) => v[p * 20 + i]).reduce((a, b) => a + b, 0) / 20);
    expectClose(y, gap64(x), 'y', 1e-6);
    expectClose(dx, numericGrad(Float64Array.from(x), (v) => probe(r)(gap64(v))), 'dx');
    const flat = new Flatten('layers.3', 60);
    expect(flat.outputSize).toBe(60);
    expect(Array.from(flat.forward(x, 2))).toEqual(Array.from(x));
    expect(flat.backward(x, 2, true)).toBe(x);
  });

  it('groupnorm: forward, dx, dγ and dβ for several group counts', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.constantFrom([4, 1], [4, 2], [4, 4], [6, 3], [2, 1]), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.integer(), (n, [c, groups], h, w, seed) => {
        fc.pre(h * w * (c / groups) > 1);
        const rng = new Rng(seed);
        const layer = new GroupNorm('layers.0', [c, h, w], groups, 1e-5, be);
        const store = new ParameterStore(be, layer.parameters());
        layer.bind(store);
        layer.initialize();
        store.value('layers.0.weight').set(random(c, rng, 2));
        store.value('layers.0.bias').set(random(c, rng));
        const x = random(n * c * h * w, rng, 3);
        const r = random(x.length, rng);
        const gamma = store.value('layers.0.weight');
        const beta = store.value('layers.0.bias');
        const gn64 = (v: ArrayLike<number>, g: ArrayLike<number>, b: ArrayLike<number>): Float64Array => {
          const y = new Float64Array(v.length);
          const m = (c / groups) * h * w;
          for (let s = 0; s < n * groups; s++) {
            let mean = 0;
            for (let i = 0; i < m; i++) mean += v[s * m + i];
            mean /= m;
            let variance = 0;
            for (let i = 0; i < m; i++) variance += (v[s * m + i] - mean) ** 2;
            variance /= m;
            for (let i = 0; i < m; i++) {
              const ch = ((s % groups) * m + i) / (h * w) | 0;
              y[s * m + i] = ((v[s * m + i] - mean) / Math.sqrt(variance + 1e-5)) * g[ch] + b[ch];
            }
          }
          return y;
        };
        const { y, dx } = runLayer(layer, x, n, r);
        expectClose(y, gn64(x, gamma, beta), 'y', 1e-5);
        const p = probe(r);
        expectClose(dx, numericGrad(Float64Array.from(x), (v) => p(gn64(v, gamma, beta))), 'dx', 1e-3);
        expectClose(store.grad('layers.0.weight'), numericGrad(Float64Array.from(gamma), (v) => p(gn64(x, v, beta))), 'dγ');
        expectClose(store.grad('layers.0.bias'), numericGrad(Float64Array.from(beta), (v) => p(gn64(x, gamma, v))), 'dβ');
      }),
      { numRuns: 40 },
    );
    expect(() => new GroupNorm('layers.5', [6, 2, 2], 4, 1e-5, be)).toThrow(/6 channels do not split into 4 groups/);
  });
});

describe('conv2d on every backend against the reference backend', () => {
  const auto = createBackend('auto').backend;
  // The native backend's AVX2 kernels too, where the CPU would pick AVX-512.
  const avx2 = auto.directConv && auto.description.includes('AVX512') ? [new NativeBackend({ memoryMb: 64, directConv: 'avx2' })] : [];
  const backends = [new WasmBackend({ memoryMb: 64 }), auto, ...avx2];
  const label = (b: Backend): string => `${b.name}${/direct on (\w+)/.exec(b.description)?.[1]?.replace(/^/, ' direct on ') ?? ''}`;
  for (const backend of backends) {
    it(`${label(backend)}: forward, dx, dW, db`, () => {
      for (const [n, c, h, w, f, k, stride, pad] of [
        [3, 1, 28, 28, 4, 5, 1, 'same'],
        [2, 3, 9, 7, 5, 3, 2, 1],
        [4, 6, 6, 6, 3, 1, 1, 'valid'],
      ] as const) {
        const a = convCase(be, n, c, h, w, f, k, stride, pad, 11);
        const b = convCase(backend, n, c, h, w, f, k, stride, pad, 11);
        for (const key of ['y', 'dx', 'dW', 'db'] as const) expectClose(b[key], a[key], `${backend.name} ${key} of ${[n, c, h, w, f, k, stride, pad]}`, 1e-4);
      }
    });

    it.runIf(backend.directConv)(`${label(backend)}: direct stride-1 convolutions (no im2col) match the reference over random shapes, wide rows and filter counts off the kernels' blocks`, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 1, max: 3 }),
          fc.integer({ min: 1, max: 5 }),
          fc.integer({ min: 1, max: 20 }),
          fc.integer({ min: 1, max: 40 }),
          fc.integer({ min: 1, max: 11 }),
          fc.integer({ min: 1, max: 7 }),
          padding,
          fc.integer(),
          (n, c, h, w, f, k, pad, seed) => {
            const g = [geometry(h, k, 1, pad), geometry(w, k, 1, pad)];
            fc.pre(g[0].out > 0 && g[1].out > 0);
            const a = convCase(be, n, c, h, w, f, k, 1, pad, seed);
            const b = convCase(backend, n, c, h, w, f, k, 1, pad, seed);
            for (const key of ['y', 'dx', 'dW', 'db'] as const) expectClose(b[key], a[key], `${backend.name} ${key} of ${[n, c, h, w, f, k, pad]}`, 1e-4);
          },
        ),
        { numRuns: 80 },
      );
    });

    it(`${label(backend)}: max pooling gives the reference's outputs and gradients bit for bit, ties included`, () => {
      // 2×2 stride 2 takes a SIMD path (four outputs at a time, the row's rest as four overlapping ones, rows under four outputs scalar): widths that fill it exactly, leave a rest, are odd or short.
      for (const [n, c, h, w, size, stride, nans] of [[3, 4, 28, 28, 2, 2, false], [1, 2, 8, 16, 2, 2, true], [2, 3, 9, 11, 2, 2, true], [2, 3, 14, 14, 2, 2, true], [2, 2, 6, 7, 2, 2, true], [2, 3, 7, 9, 3, 2, false], [2, 2, 5, 5, 2, 1, true]] as const) {
        const run = (be2: Backend) => {
          const rng = new Rng(5);
          const layer = new Pool2d('layers.2', 'maxpool2d', [c, h, w], size, stride, be2);
          const x = be2.alloc(n * c * h * w);
          // Rounded values, so that windows hold ties and the first maximum must win on both.
          x.set(Array.from({ length: x.length }, () => Math.round(rng.normal() * 2) / 2));
          // NaNs too, in every place of a window: the first candidate keeps one, a later one never wins.
          if (nans) for (let i = 0; i < x.length; i += 7) x[i] = Number.NaN;
          const dy = be2.alloc(n * layer.outputSize);
          dy.set(random(dy.length, rng));
          return { y: Float32Array.from(layer.forward(x, n)), dx: Float32Array.from(layer.backward(dy, n, true)!) };
        };
        const a = run(be);
        const b = run(backend);
        expect(Buffer.from(b.y.buffer).equals(Buffer.from(a.y.buffer))).toBe(true);
        expect(Buffer.from(b.dx.buffer).equals(Buffer.from(a.dx.buffer))).toBe(true);
      }
    });
  }
});

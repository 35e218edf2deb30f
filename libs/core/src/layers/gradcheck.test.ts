// Every layer's and loss's backward pass against central finite differences of a float64
// re-implementation of its forward pass, over random shapes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../backend.js';
import { loadNativeAddon, NativeBackend } from '../backends/native-backend.js';
import { ReferenceBackend } from '../backends/reference-backend.js';
import { WasmBackend } from '../backends/wasm-backend.js';
import { MeanSquaredError, SoftmaxCrossEntropy } from '../losses.js';
import { ParameterStore } from '../parameter-store.js';
import { Rng } from '../rng.js';
import { Gelu, LeakyRelu, Relu, Sigmoid, Tanh } from './activations.js';
import { Dense } from './dense.js';
import type { Layer } from './layer.js';
import { linearProbe, numericGrad, random } from '../testing/finite-differences.js';

const be = new ReferenceBackend();
// The activations that run on a backend's kernels are checked on every backend.
const backends: Backend[] = [be, new WasmBackend({ memoryMb: 16 })];
if ('addon' in loadNativeAddon()) backends.push(new NativeBackend({ memoryMb: 16 }));

type F64Map = (x: number) => number;
const C = Math.sqrt(2 / Math.PI);
const f64Activations: Record<string, [(name: string, n: number, b: Backend) => Layer, F64Map]> = {
  relu: [(name, n, b) => new Relu(name, n, b), (x) => Math.max(0, x)],
  leaky_relu: [(name, n, b) => new LeakyRelu(name, n, b, 0.1), (x) => (x > 0 ? x : 0.1 * x)],
  tanh: [(name, n, b) => new Tanh(name, n, b), Math.tanh],
  sigmoid: [(name, n, b) => new Sigmoid(name, n, b), (x) => 1 / (1 + Math.exp(-x))],
  gelu: [(name, n, b) => new Gelu(name, n, b), (x) => 0.5 * x * (1 + Math.tanh(C * (x + 0.044715 * x ** 3)))],
};

/** A copy of x in the backend's memory, where its kernels can read it. */
function onBackend(b: Backend, x: Float32Array): Float32Array {
  const copy = b.alloc(x.length);
  copy.set(x);
  return copy;
}

function expectGradClose(analytic: ArrayLike<number>, numeric: Float64Array, what: string): void {
  for (let i = 0; i < numeric.length; i++) {
    const err = Math.abs(analytic[i] - numeric[i]);
    if (err > 2e-4 * Math.max(1, Math.abs(numeric[i]))) {
      throw new Error(`${what}[${i}]: analytic ${analytic[i]}, numeric ${numeric[i]}`);
    }
  }
}

describe.each(backends.map((b) => [b.name, b] as const))('activation layers on the %s backend, backward vs finite differences', (_name, backend) => {
  for (const [kind, [make, f]] of Object.entries(f64Activations)) {
    it(kind, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 13 }), fc.integer(), (batch, width, seed) => {
          const rng = new Rng(seed);
          const layer = make('layers.0', width, backend);
          // Keep inputs away from ReLU's kink, where the derivative is undefined.
          const x = random(batch * width, rng, 3).map((v) => (Math.abs(v) < 0.01 ? 0.5 : v));
          const r = random(batch * width, rng);
          const y = layer.forward(onBackend(backend, x), batch, true);
          for (let i = 0; i < y.length; i++) expect(y[i]).toBeCloseTo(f(x[i]), 5);
          const dx = layer.backward(onBackend(backend, r), batch, true)!;
          const probe = linearProbe(r);
          const numeric = numericGrad(Float64Array.from(x), (t) => probe(Array.from(t, f)));
          expectGradClose(dx, numeric, `${kind} dx`);
        }),
        { numRuns: 40 },
      );
    });
  }
});

describe('dense layer backward vs finite differences', () => {
  it('gives dW, db and dx of y = x·Wᵀ + b', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 11 }), fc.integer({ min: 1, max: 9 }), fc.integer(), (batch, nin, nout, seed) => {
        const rng = new Rng(seed);
        const layer = new Dense('layers.0', nin, nout, 'xavier_uniform', be);
        const store = new ParameterStore(be, layer.parameters());
        layer.bind(store);
        layer.initialize(rng);
        store.value('layers.0.bias').set(random(nout, rng));
        const x = random(batch * nin, rng);
        const r = random(batch * nout, rng);
        layer.forward(x, batch, true);
        const dx = layer.backward(r, batch, true)!;
        const probe = linearProbe(r);
        // float64 forward over (x, W, b) packed into one vector θ.
        const W = store.value('layers.0.weight');
        const b = store.value('layers.0.bias');
        const forward = (xs: ArrayLike<number>, ws: ArrayLike<number>, bs: ArrayLike<number>): number => {
          const y = new Float64Array(batch * nout);
          for (let s = 0; s < batch; s++)
            for (let o = 0; o < nout; o++) {
              let acc = bs[o];
              for (let i = 0; i < nin; i++) acc += xs[s * nin + i] * ws[o * nin + i];
              y[s * nout + o] = acc;
            }
          return probe(y);
        };
        expectGradClose(dx, numericGrad(Float64Array.from(x), (t) => forward(t, W, b)), 'dx');
        expectGradClose(store.grad('layers.0.weight'), numericGrad(Float64Array.from(W), (t) => forward(x, t, b)), 'dW');
        expectGradClose(store.grad('layers.0.bias'), numericGrad(Float64Array.from(b), (t) => forward(x, W, t)), 'db');
      }),
      { numRuns: 40 },
    );
  });

  it('names the layer and shapes when the input is too small', () => {
    const layer = new Dense('layers.3', 4, 2, 'he_normal', be);
    layer.bind(new ParameterStore(be, layer.parameters()));
    expect(() => layer.forward(new Float32Array(7), 2, false)).toThrow(/layers\.3 \(dense 4→2\): input has 7 values, a batch of 2 needs 2×4/);
  });
});

describe('losses vs finite differences', () => {
  it('softmax cross-entropy: value and gradient, stable for huge logits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 2, max: 12 }), fc.integer(), (batch, classes, seed) => {
        const rng = new Rng(seed);
        const logits = random(batch * classes, rng, 5);
        const labels = Int32Array.from({ length: batch }, () => rng.int(classes));
        const grad = new Float32Array(batch * classes);
        const loss = new SoftmaxCrossEntropy().compute(logits, labels, batch, classes, grad);
        const f64 = (t: Float64Array): number => {
          let total = 0;
          for (let s = 0; s < batch; s++) {
            let z = 0;
            for (let c = 0; c < classes; c++) z += Math.exp(t[s * classes + c]);
            total += Math.log(z) - t[s * classes + labels[s]];
          }
          return total / batch;
        };
        expect(loss).toBeCloseTo(f64(Float64Array.from(logits)), 5);
        expectGradClose(grad, numericGrad(Float64Array.from(logits), f64), 'dlogits');
      }),
      { numRuns: 60 },
    );
    const huge = Float32Array.from([1000, -1000, 999]);
    const loss = new SoftmaxCrossEntropy().compute(huge, Int32Array.from([2]), 1, 3, null);
    expect(loss).toBeCloseTo(Math.log(1 + Math.exp(-1)) + 1, 5);
  });

  it('rejects a label outside the classes, naming row and value', () => {
    expect(() => new SoftmaxCrossEntropy().compute(new Float32Array(6), Int32Array.from([1, 3]), 2, 3, null)).toThrow(/label 3 at row 1 is outside 0\.\.2/);
  });

  it('mean squared error: value and gradient', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 6 }), fc.integer(), (batch, width, seed) => {
        const rng = new Rng(seed);
        const out = random(batch * width, rng, 2);
        const target = random(batch * width, rng, 2);
        const grad = new Float32Array(batch * width);
        const loss = new MeanSquaredError().compute(out, target, batch, width, grad);
        const f64 = (t: Float64Array): number => t.reduce((s, v, i) => s + (v - target[i]) ** 2, 0) / t.length;
        expect(loss).toBeCloseTo(f64(Float64Array.from(out)), 5);
        expectGradClose(grad, numericGrad(Float64Array.from(out), f64), 'dout');
      }),
      { numRuns: 60 },
    );
  });
});

// The transformer's layers (embedding, LayerNorm, causal self-attention, residual blocks) against
// float64 re-implementations of their forward passes and central finite differences of those.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Backend } from '../backend.js';
import { createBackend } from '../backends/create-backend.js';
import { loadNativeAddon, NativeBackend } from '../backends/native-backend.js';
import { ReferenceBackend } from '../backends/reference-backend.js';
import { WasmBackend } from '../backends/wasm-backend.js';
import { Model } from '../model.js';
import { describeModel, parameterCount, parseModelSpec } from '../model-spec.js';
import { ParameterStore } from '../parameter-store.js';
import { Rng } from '../rng.js';
import { linearProbe, numericGrad, random } from '../testing/finite-differences.js';
import { CausalSelfAttention } from './attention.js';
import { Dense } from './dense.js';
import { Embedding } from './embedding.js';
import type { Layer } from './layer.js';
import { LayerNorm } from './layernorm.js';
import { Positionwise } from './positionwise.js';
import { Residual } from './residual.js';

const reference = new ReferenceBackend();
// Every layer on every backend: the native one runs GELU, LayerNorm and attention in C.
const backends: Backend[] = [reference, new WasmBackend({ memoryMb: 64 })];
if ('addon' in loadNativeAddon()) backends.push(new NativeBackend({ memoryMb: 64 }));
if (process.env.RINGTRAIN_EXPECT_NATIVE === '1' && backends.length < 3) throw new Error('RINGTRAIN_EXPECT_NATIVE=1 but the native addon does not load');
type Vec = ArrayLike<number>;

/** A copy of x in the backend's memory, where its kernels can read it. */
function onBackend(be: Backend, x: Float32Array): Float32Array {
  const copy = be.alloc(x.length);
  copy.set(x);
  return copy;
}

function expectClose(got: Vec, want: Vec, what: string, tol = 2e-4): void {
  expect(got.length, what).toBeGreaterThanOrEqual(want.length);
  for (let i = 0; i < want.length; i++) {
    if (Math.abs(got[i] - want[i]) > tol * Math.max(1, Math.abs(want[i]))) throw new Error(`${what}[${i}]: got ${got[i]}, want ${want[i]}`);
  }
}

/** Binds `layer` to a fresh store, initialises it, and perturbs every parameter so none is trivial. */
function bound(layer: Layer, rng: Rng, be: Backend = reference): ParameterStore {
  const store = new ParameterStore(be, layer.parameters());
  layer.bind(store);
  layer.initialize(rng);
  for (let i = 0; i < store.values.length; i++) store.values[i] += (rng.uniform() - 0.5) * 0.6;
  return store;
}

/**
 * Checks a layer's forward against `ref` (float64, over the input and every parameter tensor in
 * store order) and its backward (dx where it has one, and every parameter gradient) against
 * central differences of `ref` under the linear probe r·y.
 */
function gradcheck(layer: Layer, store: ParameterStore, x: Float32Array, batch: number, ref: (x: Vec, params: Vec[]) => Float64Array, rng: Rng, withDx = true, be: Backend = reference): void {
  const params = store.tensors.map((t) => Float64Array.from(store.value(t.name)));
  const y = layer.forward(onBackend(be, x), batch, true);
  expectClose(y, ref(x, params), `${layer.name} forward`, 1e-4);
  const r = random(batch * layer.outputSize, rng);
  const dx = layer.backward(onBackend(be, r), batch, withDx);
  const probe = linearProbe(r);
  if (withDx) expectClose(dx!, numericGrad(Float64Array.from(x), (t) => probe(ref(t, params))), `${layer.name} dx`);
  store.tensors.forEach((t, k) => {
    const numeric = numericGrad(Float64Array.from(params[k]), (theta) => probe(ref(x, params.map((p, j) => (j === k ? theta : p)))));
    expectClose(store.grad(t.name), numeric, `${t.name} grad`);
  });
}

/** float64 references of the forward passes. */
const f64 = {
  linear(x: Vec, rows: number, nin: number, nout: number, w: Vec, b: Vec): Float64Array {
    const y = new Float64Array(rows * nout);
    for (let r = 0; r < rows; r++)
      for (let o = 0; o < nout; o++) {
        let acc = b[o];
        for (let i = 0; i < nin; i++) acc += x[r * nin + i] * w[o * nin + i];
        y[r * nout + o] = acc;
      }
    return y;
  },
  layernorm(x: Vec, rows: number, c: number, gain: Vec, bias: Vec | null, eps = 1e-5): Float64Array {
    const y = new Float64Array(rows * c);
    for (let r = 0; r < rows; r++) {
      let mean = 0;
      for (let i = 0; i < c; i++) mean += x[r * c + i] / c;
      let v = 0;
      for (let i = 0; i < c; i++) v += (x[r * c + i] - mean) ** 2 / c;
      for (let i = 0; i < c; i++) y[r * c + i] = ((x[r * c + i] - mean) / Math.sqrt(v + eps)) * gain[i] + (bias ? bias[i] : 0);
    }
    return y;
  },
  attention(x: Vec, batch: number, t: number, c: number, heads: number, p: Vec[]): Float64Array {
    const [wqkv, bqkv, wproj, bproj] = p;
    const qkv = f64.linear(x, batch * t, c, 3 * c, wqkv, bqkv);
    const d = c / heads;
    const att = new Float64Array(batch * t * c);
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < heads; h++)
        for (let i = 0; i < t; i++) {
          const scores: number[] = [];
          for (let j = 0; j <= i; j++) {
            let s = 0;
            for (let k = 0; k < d; k++) s += qkv[(b * t + i) * 3 * c + h * d + k] * qkv[(b * t + j) * 3 * c + c + h * d + k];
            scores.push(s / Math.sqrt(d));
          }
          const max = Math.max(...scores);
          const z = scores.reduce((a, s) => a + Math.exp(s - max), 0);
          for (let j = 0; j <= i; j++)
            for (let k = 0; k < d; k++) att[(b * t + i) * c + h * d + k] += (Math.exp(scores[j] - max) / z) * qkv[(b * t + j) * 3 * c + 2 * c + h * d + k];
        }
    return f64.linear(att, batch * t, c, c, wproj, bproj);
  },
};

describe.each(backends.map((b) => [b.name, b] as const))('transformer layers on the %s backend vs float64 references and finite differences', (_name, be) => {
  it('embedding: token row plus position row; gradients scattered to the ids seen', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 2, max: 7 }), fc.integer({ min: 1, max: 4 }), fc.integer(), (batch, t, vocab, dim, seed) => {
        const rng = new Rng(seed);
        const layer = new Embedding('layers.0', t, vocab, dim, be);
        const store = bound(layer, rng, be);
        const ids = Float32Array.from({ length: batch * t }, () => rng.int(vocab));
        const ref = (x: Vec, [w, p]: Vec[]): Float64Array => {
          const y = new Float64Array(batch * t * dim);
          for (let r = 0; r < batch * t; r++) for (let c = 0; c < dim; c++) y[r * dim + c] = w[x[r] * dim + c] + p[(r % t) * dim + c];
          return y;
        };
        gradcheck(layer, store, ids, batch, ref, rng, false, be);
      }),
      { numRuns: 30 },
    );
  });

  it('embedding: an id outside the vocabulary is refused, naming it and its place', () => {
    const layer = new Embedding('layers.0', 3, 5, 2, be);
    bound(layer, new Rng(1), be);
    expect(() => layer.forward(Float32Array.of(1, 2, 5), 1, false)).toThrow(/token id 5 at position 2 of sample 0 is outside the vocabulary 0\.\.4/);
    expect(() => layer.forward(Float32Array.of(1, 0.5, 2), 1, false)).toThrow(/token id 0\.5/);
  });

  for (const bias of [true, false]) {
    it(`layernorm over the last axis (bias ${bias})`, () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 9 }), fc.integer(), (batch, rows, c, seed) => {
          const rng = new Rng(seed);
          const layer = new LayerNorm('layers.1', rows, c, 1e-5, bias, be);
          const store = bound(layer, rng, be);
          const x = random(batch * rows * c, rng, 2);
          gradcheck(layer, store, x, batch, (xs, [g, b]) => f64.layernorm(xs, batch * rows, c, g, bias ? b : null), rng, true, be);
        }),
        { numRuns: 30 },
      );
    });
  }

  it('causal self-attention: fused QKV, scaled dot product, causal mask, softmax, output projection', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 5 }), fc.constantFrom([4, 1], [4, 2], [6, 3], [6, 2], [8, 4]), fc.integer(), (batch, t, [c, heads], seed) => {
        const rng = new Rng(seed);
        const layer = new CausalSelfAttention('layers.2', t, c, heads, be);
        const store = bound(layer, rng, be);
        const x = random(batch * t * c, rng);
        gradcheck(layer, store, x, batch, (xs, p) => f64.attention(xs, batch, t, c, heads, p), rng, true, be);
      }),
      { numRuns: 25 },
    );
  });

  it('causal: a later token changes no earlier output', () => {
    const rng = new Rng(3);
    const layer = new CausalSelfAttention('a', 5, 4, 2, be);
    bound(layer, rng, be);
    const x = random(5 * 4, rng);
    const before = Float32Array.from(layer.forward(onBackend(be, x), 1, false));
    x[4 * 4 + 1] += 1; // the last token
    const after = layer.forward(onBackend(be, x), 1, false);
    expect(Array.from(after.subarray(0, 16))).toEqual(Array.from(before.subarray(0, 16)));
    expect(after[16 + 1]).not.toBe(before[16 + 1]);
  });

  it('a pre-norm residual block (LayerNorm → dense per position → dense per position) adds its input', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 5 }), fc.integer(), (batch, t, c, seed) => {
        const rng = new Rng(seed);
        const inner = [new LayerNorm('b.layers.0', t, c, 1e-5, true, be), new Positionwise(new Dense('b.layers.1', c, 2 * c, 'gpt_normal', be), t), new Positionwise(new Dense('b.layers.2', 2 * c, c, 'gpt_normal', be), t)];
        const layer = new Residual('b', t * c, inner, be);
        const store = bound(layer, rng, be);
        const x = random(batch * t * c, rng);
        const ref = (xs: Vec, [g, bn, w1, b1, w2, b2]: Vec[]): Float64Array => {
          const h = f64.linear(f64.linear(f64.layernorm(xs, batch * t, c, g, bn), batch * t, c, 2 * c, w1, b1), batch * t, 2 * c, c, w2, b2);
          return h.map((v, i) => v + xs[i]);
        };
        gradcheck(layer, store, x, batch, ref, rng, true, be);
      }),
      { numRuns: 25 },
    );
  });

  it('heads that do not divide the dimension are refused', () => {
    expect(() => new CausalSelfAttention('a', 4, 6, 4, be)).toThrow(/4 heads do not divide the dimension 6/);
  });
});

describe('a GPT from its short form', () => {
  const short = { type: 'gpt', vocab: 11, context: 6, layers: 2, heads: 2, dim: 8 };

  it('expands into the general blocks, with every shape inferred and the parameters counted', () => {
    const spec = parseModelSpec(short);
    expect(spec.inputSize).toBe(6);
    expect(spec.layers.map((l) => l.type)).toEqual(['embedding', 'residual', 'residual', 'residual', 'residual', 'layernorm', 'dense']);
    const model = new Model(spec, reference, { seed: 1 });
    expect(model.positions).toBe(6);
    expect(model.outputSize).toBe(6 * 11);
    // (11 + 6)·8 embedding; per layer 2·(2·8) norms + 8·24 + 24 + 8·8 + 8 attention + 8·32 + 32 + 32·8 + 8 MLP; final norm 16; head 8·11 + 11.
    const perLayer = 2 * 16 + (8 * 24 + 24 + 64 + 8) + (8 * 32 + 32 + 32 * 8 + 8);
    expect(model.params.length).toBe(17 * 8 + 2 * perLayer + 16 + 8 * 11 + 11);
    expect(model.params.tensors.map((t) => t.name)).toContain('layers.1.layers.1.qkv.weight');
  });

  it.each([false, true])('one step (tied embeddings: %s): the loss is the mean over every position, and the gradients of the whole model match finite differences', (tied) => {
    const model = new Model({ ...short, tied }, reference, { seed: 2 });
    const rng = new Rng(5);
    const batch = 2;
    const x = Float32Array.from({ length: batch * 6 }, () => rng.int(11));
    const y = Int32Array.from({ length: batch * 6 }, () => rng.int(11));
    const { loss } = model.computeGradients(x, y, batch);
    expect(loss).toBeGreaterThan(Math.log(11) - 0.5);
    expect(loss).toBeLessThan(Math.log(11) + 0.5);
    const grads = Float32Array.from(model.params.grads);
    // Float32 central differences on a sample of parameters, each from a different tensor.
    const h = 1e-2;
    // Every tensor; a tied token table (both the embedding's and the head's gradient) at 8 places.
    const table = model.params.info('layers.0.weight');
    const places = [...model.params.tensors.map((t) => t.offset + rng.int(t.length)), ...(tied ? Array.from({ length: 8 }, () => table.offset + rng.int(table.length)) : [])];
    expect(model.params.tensors.some((t) => t.name.startsWith(`layers.${model.layers.length - 1}.weight`))).toBe(!tied);
    for (const i of places) {
      const t = model.params.tensorAt(i)!;
      const keep = model.params.values[i];
      model.params.values[i] = keep + h;
      const up = model.evaluate(x, y, batch).loss;
      model.params.values[i] = keep - h;
      const down = model.evaluate(x, y, batch).loss;
      model.params.values[i] = keep;
      const numeric = (up - down) / (2 * h);
      expect(Math.abs(grads[i] - numeric), `${t.name}: analytic ${grads[i]}, numeric ${numeric}`).toBeLessThan(2e-3 + 0.05 * Math.abs(numeric));
    }
  });

  it('every backend computes what the reference does', () => {
    const rng = new Rng(9);
    const batch = 3;
    const x = Float32Array.from({ length: batch * 6 }, () => rng.int(11));
    const y = Int32Array.from({ length: batch * 6 }, () => rng.int(11));
    const referenceModel = new Model(short, reference, { seed: 4 });
    const want = referenceModel.computeGradients(x, y, batch);
    const backends = [new WasmBackend(), createBackend('auto').backend];
    for (const backend of backends) {
      const model = new Model(short, backend, { seed: 4 });
      const got = model.computeGradients(x, y, batch);
      expect(got.loss, backend.name).toBeCloseTo(want.loss, 5);
      expectClose(model.params.grads, referenceModel.params.grads, `${backend.name} grads`, 1e-4);
    }
  });

  it('bad short forms are refused with what is wrong', () => {
    expect(() => parseModelSpec({ ...short, heads: 3 })).toThrow(/ERR_SPEC|3 heads do not divide the dimension 8/);
    expect(() => parseModelSpec({ ...short, vocab: undefined })).toThrow(/needs its vocab/);
    expect(() => parseModelSpec({ ...short, context: 5000 })).toThrow(/context/);
    expect(() => parseModelSpec({ ...short, lyers: 2 })).toThrow(/lyers/);
  });

  it('tied embeddings: the head has no weight of its own (vocab·dim fewer parameters), and a tied layer anywhere but a language model\'s head is refused', () => {
    const [untied, tied] = [parseModelSpec(short), parseModelSpec({ ...short, tied: true })];
    expect(parameterCount(untied) - parameterCount(tied)).toBe(11 * 8);
    expect(describeModel(tied)).toMatch(/tied embeddings$/);
    expect(new Model(tied, reference, { seed: 1 }).params.length).toBe(parameterCount(tied));
    const mlp = { inputSize: 4, layers: [{ type: 'dense', units: 4, tied: true }, { type: 'dense', units: 3 }], loss: 'softmax_cross_entropy' };
    expect(() => parseModelSpec(mlp)).toThrow(/a tied dense layer is the last layer of a language model/);
    const general = tied.layers.map((l, i) => (i === tied.layers.length - 1 ? { ...l, units: 12 } : l));
    expect(() => parseModelSpec({ ...tied, layers: general })).toThrow(/a tied dense layer is the last layer/);
  });
});

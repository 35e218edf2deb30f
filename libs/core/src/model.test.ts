import { describe, expect, it } from 'vitest';
import { createBackend } from './backends/create-backend.js';
import { ReferenceBackend } from './backends/reference-backend.js';
import { WasmBackend } from './backends/wasm-backend.js';
import { LeakyRelu, Relu } from './layers/activations.js';
import { Pool2d } from './layers/pooling.js';
import { Model } from './model.js';
import { allFinite, firstNonFinite } from './ops.js';
import { describeModel, mlpSpec, parameterCount, parseModelSpec, shapeLayers } from './model-spec.js';
import { createOptimizer } from './optimizers.js';
import { Rng } from './rng.js';

describe('model spec', () => {
  it('names the layer, the field and the value of an invalid spec', () => {
    const bad = { inputSize: 4, layers: [{ type: 'dense', units: 3 }, { type: 'relu' }, { type: 'dense', units: -2 }], loss: 'mse' };
    expect(() => parseModelSpec(bad)).toThrow(/layers\.2\.units = -2/);
    expect(() => parseModelSpec({ inputSize: 4, layers: [{ type: 'conv' }], loss: 'mse' })).toThrow(/layers\.0\.type/);
    expect(() => parseModelSpec({ inputSize: 4, layers: [{ type: 'relu' }], loss: 'mse' })).toThrow(/no dense or conv2d layer/);
    expect(() => parseModelSpec({ inputSize: 4, layers: [{ type: 'dense', units: 1 }], loss: 'softmax_cross_entropy' })).toThrow(/at least 2 outputs/);
    expect(() => parseModelSpec({ inputSize: 4, layers: [{ type: 'dropout', rate: 1 }], loss: 'mse' })).toThrow(/layers\.0\.rate = 1/);
  });

  it('is JSON: a spec survives a round trip and builds the same model', () => {
    const spec = mlpSpec([6, 5, 3]);
    const a = new Model(JSON.parse(JSON.stringify(spec)), new ReferenceBackend(), { seed: 9 });
    const b = new Model(spec, new ReferenceBackend(), { seed: 9 });
    expect(a.params.valuesHash()).toBe(b.params.valuesHash());
  });
});

describe('max pooling before the activation', () => {
  it('relu → maxpool2d runs as maxpool2d → relu; leaky ReLU too; avgpool2d and a later pool stay in order', () => {
    const spec = (act: object, pool: string) => ({ inputShape: [2, 4, 4], layers: [{ type: 'conv2d', filters: 3, kernelSize: 3, padding: 'same' }, act, { type: pool, size: 2 }, { type: 'flatten' }, { type: 'dense', units: 2 }], loss: 'mse' });
    const types = (s: object) => new Model(s, new ReferenceBackend(), { seed: 1 }).layers.map((l) => `${l.type}:${l.outputSize}`);
    expect(types(spec({ type: 'relu' }, 'maxpool2d'))).toEqual(['conv2d:48', 'maxpool2d:12', 'relu:12', 'flatten:12', 'dense:2']);
    expect(types(spec({ type: 'leaky_relu', alpha: 0.1 }, 'maxpool2d'))).toEqual(['conv2d:48', 'maxpool2d:12', 'leaky_relu:12', 'flatten:12', 'dense:2']);
    expect(types(spec({ type: 'relu' }, 'avgpool2d'))).toEqual(['conv2d:48', 'relu:48', 'avgpool2d:12', 'flatten:12', 'dense:2']);
    expect(types(spec({ type: 'tanh' }, 'maxpool2d'))).toEqual(['conv2d:48', 'tanh:48', 'maxpool2d:12', 'flatten:12', 'dense:2']);
  });

  for (const backend of [new ReferenceBackend(), new WasmBackend({ memoryMb: 16 }), createBackend('auto').backend]) {
    it(`${backend.name}: gives the written order's outputs and input gradients bit for bit (ties, zeros of both signs, all-negative windows, NaN)`, () => {
      const [c, h, w, n] = [3, 6, 8, 2];
      const rng = new Rng(4);
      const x = backend.alloc(n * c * h * w);
      const values = [-2, -1, -0.5, -0, 0, 0.5, 1, 1, 2, Number.NaN];
      for (let i = 0; i < x.length; i++) x[i] = i % 37 === 5 ? Number.NaN : rng.uniform() < 0.3 ? values[Math.floor(rng.uniform() * 9)] : rng.normal();
      const dy = backend.alloc(n * c * (h / 2) * (w / 2));
      for (let i = 0; i < dy.length; i++) dy[i] = rng.normal();
      for (const make of [(size: number) => new Relu('a', size, backend), (size: number) => new LeakyRelu('a', size, backend, 0.2)]) {
        const pool = () => new Pool2d('p', 'maxpool2d', [c, h, w], 2, 2, backend);
        const [act1, pool1] = [make(c * h * w), pool()];
        const written = Float32Array.from(pool1.forward(act1.forward(x, n, true), n));
        const writtenDx = Float32Array.from(act1.backward(pool1.backward(dy, n, true)!, n, true)!);
        const pool2 = pool();
        const act2 = make(pool2.outputSize);
        const swapped = Float32Array.from(act2.forward(pool2.forward(x, n), n, true));
        const swappedDx = Float32Array.from(pool2.backward(act2.backward(dy, n, true)!, n, true)!);
        const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length)).map((u) => (Number.isNaN(new Float32Array(new Uint32Array([u]).buffer)[0]) ? 'NaN' : u));
        // Zeros may differ in sign (max(−0, +0) depends on the order); nothing else may.
        expect(bits(swapped.map((v) => v + 0))).toEqual(bits(written.map((v) => v + 0)));
        expect(bits(swappedDx.map((v) => v + 0))).toEqual(bits(writtenDx.map((v) => v + 0)));
        expect(written.some(Number.isNaN)).toBe(true);
        expect(writtenDx.some((v) => v !== 0)).toBe(true);
      }
    });
  }
});

describe('convolutional model spec', () => {
  const lenet = {
    inputShape: [1, 28, 28],
    layers: [
      { type: 'conv2d', filters: 16, kernelSize: 5, padding: 'same' }, { type: 'relu' }, { type: 'maxpool2d', size: 2 },
      { type: 'conv2d', filters: 32, kernelSize: 5, padding: 'same' }, { type: 'relu' }, { type: 'maxpool2d', size: 2 },
      { type: 'flatten' }, { type: 'dense', units: 128 }, { type: 'relu' }, { type: 'dense', units: 10 },
    ],
    loss: 'softmax_cross_entropy',
  };

  it('infers every shape, counts parameters as PyTorch does, and names conv tensors [F, C, kh, kw]', () => {
    const spec = parseModelSpec(lenet);
    expect(spec.inputSize).toBe(784);
    // conv 16·1·25+16, conv 32·16·25+32, dense 1568·128+128, dense 128·10+10 (torch's count for the same net)
    expect(parameterCount(spec)).toBe(416 + 12_832 + 200_832 + 1290);
    expect(shapeLayers(spec).map((l) => l.output)).toEqual([[16, 28, 28], [16, 28, 28], [16, 14, 14], [32, 14, 14], [32, 14, 14], [32, 7, 7], [1568], [128], [128], [10]]);
    expect(describeModel(spec)).toBe('CNN 1×28×28 conv16k5 maxpool2 conv32k5 maxpool2 dense128 dense10 (relu)');
    const m = new Model(spec, new ReferenceBackend(), { seed: 1 });
    expect(m.params.info('layers.3.weight').shape).toEqual([32, 16, 5, 5]);
    expect(m.params.counts()).toEqual({ weights: 215_184, biases: 186, total: 215_370 });
    expect(m.outputSize).toBe(10);
    // He initialisation over the fan-in C·kh·kw = 400.
    const w = m.params.value('layers.3.weight');
    const variance = w.reduce((s, v) => s + v * v, 0) / w.length;
    expect(variance).toBeGreaterThan(0.8 * (2 / 400));
    expect(variance).toBeLessThan(1.2 * (2 / 400));
  });

  it('refuses shapes that do not fit, naming the layer', () => {
    expect(() => parseModelSpec({ ...lenet, inputShape: undefined, inputSize: 784 })).toThrow(/layers\.0 \(conv2d\) needs a \[C, H, W\] input, it gets \[784\]/);
    expect(() => parseModelSpec({ ...lenet, inputSize: 785 })).toThrow(/inputSize 785 does not match inputShape \[1, 28, 28\]/);
    expect(() => parseModelSpec({ ...lenet, inputShape: [1, 3, 3] })).toThrow(/layers\.5 \(maxpool2d\): a 2×2 window with stride 2 and padding valid does not fit a 1×1 input/);
    expect(() => parseModelSpec({ ...lenet, inputShape: [1, 28] })).toThrow(/must be \[C, H, W\] or \[F\]/);
    expect(() => parseModelSpec({ inputShape: [3, 8, 8], layers: [{ type: 'groupnorm', groups: 2 }, { type: 'flatten' }, { type: 'dense', units: 2 }], loss: 'mse' })).toThrow(/3 channels do not split into 2 groups/);
    // A few bytes may not ask for gigabytes of activations.
    expect(() => parseModelSpec({ inputShape: [64, 4096, 4096], layers: [{ type: 'flatten' }, { type: 'dense', units: 2 }], loss: 'mse' })).toThrow(/more than 16777216/);
  });

  it('a conv net gives the same gradients on every backend', () => {
    const spec = parseModelSpec({ inputShape: [2, 9, 9], layers: [{ type: 'conv2d', filters: 4, kernelSize: 3, padding: 'same' }, { type: 'groupnorm', groups: 2 }, { type: 'relu' }, { type: 'avgpool2d', size: 2 }, { type: 'conv2d', filters: 6, kernelSize: 3, stride: 2 }, { type: 'relu' }, { type: 'globalavgpool' }, { type: 'dense', units: 3 }], loss: 'softmax_cross_entropy' });
    const rng = new Rng(9);
    const x = Float32Array.from({ length: 5 * 162 }, () => rng.normal());
    const y = Int32Array.from({ length: 5 }, () => rng.int(3));
    const grads = [new ReferenceBackend(), new WasmBackend({ memoryMb: 16 }), createBackend('auto').backend].map((be) => {
      const m = new Model(spec, be, { seed: 3 });
      const bx = be.alloc(x.length);
      bx.set(x);
      m.computeGradients(bx, y, 5);
      return Float32Array.from(m.params.grads);
    });
    expect(grads[0].some((g) => g !== 0)).toBe(true);
    for (const g of grads.slice(1)) for (let i = 0; i < g.length; i++) expect(Math.abs(g[i] - grads[0][i])).toBeLessThan(1e-5 * Math.max(1, Math.abs(grads[0][i])));
  });
});

describe('gradients layer by layer', () => {
  it('gradientStages yields, after each layer, the offset from which the gradients are final, falling to 0; the gradients are computeGradients\' bit for bit', () => {
    const spec = parseModelSpec({ inputShape: [1, 8, 8], layers: [{ type: 'conv2d', filters: 3, kernelSize: 3 }, { type: 'relu' }, { type: 'maxpool2d', size: 2 }, { type: 'flatten' }, { type: 'dense', units: 5 }, { type: 'relu' }, { type: 'dense', units: 4 }], loss: 'softmax_cross_entropy' });
    const be = new ReferenceBackend();
    const rng = new Rng(4);
    const x = Float32Array.from({ length: 6 * 64 }, () => rng.normal());
    const y = Int32Array.from({ length: 6 }, () => rng.int(4));
    const whole = new Model(spec, be, { seed: 7 });
    const r = whole.computeGradients(x, y, 6);
    const staged = new Model(spec, be, { seed: 7 });
    const grads = staged.params.grads;
    const offsets: number[] = [];
    const stages = staged.gradientStages(x, y, 6);
    let next = stages.next();
    while (!next.done) {
      const from = next.value;
      offsets.push(from);
      // What is declared final is final: it equals the whole computation's values already.
      for (let i = from; i < grads.length; i++) expect(grads[i]).toBe(whole.params.grads[i]);
      next = stages.next();
    }
    expect(next.value).toEqual(r);
    const at = (name: string): number => staged.params.tensors.find((t) => t.name === name)!.offset;
    // dense 6, relu 5, dense 4, flatten 3, pool 2, relu 1, conv 0: parameterless layers repeat the offset above them.
    expect(offsets).toEqual([at('layers.6.weight'), at('layers.6.weight'), at('layers.4.weight'), at('layers.4.weight'), at('layers.4.weight'), at('layers.4.weight'), 0]);
    expect(Buffer.from(grads.buffer, grads.byteOffset, grads.byteLength).equals(Buffer.from(whole.params.grads.buffer, whole.params.grads.byteOffset, whole.params.grads.byteLength))).toBe(true);
  });
});

describe('flat parameter buffers', () => {
  const model = new Model(mlpSpec([784, 128, 10]), new ReferenceBackend(), { seed: 1 });

  it('names tensors after the spec layer index and counts weights and biases apart', () => {
    expect(model.params.tensors.map((t) => `${t.name}:${t.shape.join('x')}`)).toEqual([
      'layers.0.weight:128x784',
      'layers.0.bias:128',
      'layers.2.weight:10x128',
      'layers.2.bias:10',
    ]);
    expect(model.params.counts()).toEqual({ weights: 784 * 128 + 128 * 10, biases: 138, total: 101_770 });
    // The same count from the spec alone, and a one-line description.
    expect(parameterCount(mlpSpec([784, 128, 10]))).toBe(101_770);
    expect(describeModel(mlpSpec([784, 128, 10]))).toBe('MLP 784-128-10 (relu)');
  });

  it('tensors are views into one contiguous buffer, and so are the gradients and optimizer slots', () => {
    const w = model.params.value('layers.2.weight');
    expect(w.buffer).toBe(model.params.values.buffer);
    model.params.values[model.params.info('layers.2.weight').offset] = 123;
    expect(w[0]).toBe(123);
    expect(model.params.grad('layers.2.bias').buffer).toBe(model.params.grads.buffer);
    const opt = createOptimizer({ type: 'adam', lr: 0.001 }, model.params);
    expect(opt.state.slots.exp_avg.length).toBe(model.params.length);
  });

  it('per-tensor norms, the tensor at a flat index, and the finiteness check', () => {
    const norms = model.params.tensorNorms();
    const w = model.params.value('layers.2.weight');
    expect(norms[2]).toBeCloseTo(Math.sqrt(w.reduce((s, v) => s + v * v, 0)), 6);
    expect(model.params.tensorAt(784 * 128 + 5)?.name).toBe('layers.0.bias');
    expect(model.params.tensorAt(model.params.length)).toBeUndefined();
    const g = new Float32Array(1003).fill(0.5);
    expect(allFinite(g)).toBe(true);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      for (const at of [0, 1001, 1002]) {
        const copy = g.slice();
        copy[at] = bad;
        expect(allFinite(copy)).toBe(false);
        expect(firstNonFinite(copy)).toBe(at);
      }
    }
    expect(firstNonFinite(g)).toBe(-1);
  });

  it('biases start at zero; He-initialised ReLU weights have variance 2/fanIn', () => {
    expect(model.params.value('layers.0.bias').every((v) => v === 0)).toBe(true);
    const w = model.params.value('layers.0.weight');
    const variance = w.reduce((s, v) => s + v * v, 0) / w.length;
    expect(Math.abs(variance / (2 / 784) - 1)).toBeLessThan(0.05);
  });
});

describe('training', () => {
  it('the forward pass equals x·Wᵀ + b, layer by layer in float64, with non-zero biases, on every backend', () => {
    const spec = mlpSpec([5, 4, 3]);
    const rng = new Rng(11);
    const x = Float64Array.from({ length: 6 * 5 }, () => rng.normal());
    for (const be of [new ReferenceBackend(), new WasmBackend({ memoryMb: 16 }), createBackend('auto').backend]) {
      const m = new Model(spec, be, { seed: 2 });
      // Biases start at zero; a forward pass that dropped them would pass unnoticed without this.
      for (const t of m.params.tensors) if (t.role === 'bias') m.params.value(t.name).set(Array.from({ length: t.length }, () => rng.normal()));
      const dense = (h: Float64Array, rows: number, layer: number): Float64Array => {
        const w = m.params.value(`layers.${layer}.weight`);
        const b = m.params.value(`layers.${layer}.bias`);
        const [out, inp] = m.params.info(`layers.${layer}.weight`).shape;
        const y = new Float64Array(rows * out);
        for (let r = 0; r < rows; r++) for (let o = 0; o < out; o++) {
          let sum = b[o];
          for (let i = 0; i < inp; i++) sum += h[r * inp + i] * w[o * inp + i];
          y[r * out + o] = sum;
        }
        return y;
      };
      const want = dense(dense(x, 6, 0).map((v) => Math.max(0, v)), 6, 2);
      const bx = be.alloc(x.length);
      bx.set(x);
      const got = m.forward(bx, 6);
      expect(got.length).toBe(18);
      for (let i = 0; i < 18; i++) expect(Math.abs(got[i] - want[i]), `${be.name} output ${i}`).toBeLessThan(1e-5);
    }
  });

  it('gives the same gradients on every backend for the same weights and batch', () => {
    const spec = mlpSpec([20, 16, 5], { activation: 'tanh' });
    const rng = new Rng(5);
    const x = Float32Array.from({ length: 8 * 20 }, () => rng.normal());
    const y = Int32Array.from({ length: 8 }, () => rng.int(5));
    const grads = [new ReferenceBackend(), new WasmBackend({ memoryMb: 16 }), createBackend('auto').backend].map((be) => {
      const m = new Model(spec, be, { seed: 3 });
      const bx = be.alloc(x.length);
      bx.set(x);
      m.computeGradients(bx, y, 8);
      return Float32Array.from(m.params.grads);
    });
    for (const g of grads.slice(1)) for (let i = 0; i < g.length; i++) expect(g[i]).toBeCloseTo(grads[0][i], 5);
  });

  it('learns two Gaussian blobs with dropout, and dropout masks repeat for a seed', () => {
    const run = (): number[] => {
      const be = new WasmBackend({ memoryMb: 16 });
      const spec = parseModelSpec({ inputSize: 2, layers: [{ type: 'dense', units: 16 }, { type: 'relu' }, { type: 'dropout', rate: 0.2 }, { type: 'dense', units: 2 }], loss: 'softmax_cross_entropy' });
      const m = new Model(spec, be, { seed: 11 });
      const opt = createOptimizer({ type: 'sgd', lr: 0.1, momentum: 0.9 }, m.params);
      const rng = new Rng(2);
      const x = be.alloc(64 * 2);
      const y = new Int32Array(64);
      const losses: number[] = [];
      for (let step = 0; step < 60; step++) {
        for (let i = 0; i < 64; i++) {
          y[i] = rng.int(2);
          x[2 * i] = rng.normal() * 0.5 + (y[i] ? 2 : -2);
          x[2 * i + 1] = rng.normal() * 0.5;
        }
        losses.push(m.computeGradients(x, y, 64).loss);
        opt.step(0.1);
      }
      const evalResult = m.evaluate(x, y, 64);
      expect(evalResult.correct).toBeGreaterThanOrEqual(62);
      return losses;
    };
    const a = run();
    expect(a[a.length - 1]).toBeLessThan(a[0] / 5);
    expect(run()).toEqual(a);
  });
});

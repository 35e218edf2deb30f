import { describe, expect, it } from 'vitest';
import { DEFAULT_JOB, jobConfigHash, mergeConfig, parseJobConfig } from './job-config.js';
import { train } from './train.js';
import { Trainer } from './trainer.js';

const blobs = { source: 'synthetic', kind: 'blobs', samples: 1200, features: 8, classes: 4, seed: 3 } as const;
const smallJob = (over: object = {}) =>
  parseJobConfig(
    mergeConfig(
      {
        ...DEFAULT_JOB,
        model: { inputSize: 8, layers: [{ type: 'dense', units: 16 }, { type: 'tanh' }, { type: 'dense', units: 4 }], loss: 'softmax_cross_entropy' },
        dataset: blobs,
        batchSize: 8,
        epochs: 1,
        backend: 'reference',
      },
      over,
    ),
  );

describe('single-process training on the embedded MNIST', () => {
  it.each(['wasm', 'auto'] as const)('%s backend: MLP 784-128-10, SGD momentum 0.9, lr 0.05, batch 64 reaches 95 percent test accuracy within 10 epochs', async (backend) => {
    const result = await train({ ...DEFAULT_JOB, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, epochs: 10, batchSize: 64, backend });
    const best = Math.max(...result.epochs.map((e) => e.test.accuracy));
    expect(result.epochs).toHaveLength(10);
    expect(result.epochs[0].test.samples).toBe(2000);
    expect(best).toBeGreaterThanOrEqual(0.95);
    expect(result.epochs[9].trainLoss).toBeLessThan(result.epochs[0].trainLoss / 3);
  });
});

describe('data-parallel arithmetic in one process', () => {
  // N replicas with batch b whose gradients are averaged take the same step as one with batch N·b.
  it.each([2, 4])('N = %i replicas of batch b equal one replica of batch N·b', (world) => {
    const b = 8;
    const single = new Trainer(smallJob({ batchSize: b * world }));
    const replicas = Array.from({ length: world }, (_, rank) => new Trainer(smallJob({ batchSize: b }), { rank, worldSize: world }));
    const maxRel = (x: Float32Array, y: Float32Array): number => {
      let m = 0;
      for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(1e-3, Math.abs(y[i])));
      return m;
    };
    for (let step = 1; step <= 50; step++) {
      single.trainStep();
      for (const r of replicas) r.computeGradients();
      const avg = new Float32Array(single.model.params.length);
      for (const r of replicas) r.model.params.grads.forEach((g, i) => (avg[i] += g / world));
      for (const r of replicas) {
        r.model.params.grads.set(avg);
        r.applyUpdate();
      }
      const hashes = new Set(replicas.map((r) => r.model.params.valuesHash()));
      expect(hashes.size).toBe(1);
      const rel = maxRel(replicas[0].model.params.values, single.model.params.values);
      expect(rel).toBeLessThanOrEqual(step === 1 ? 1e-5 : 1e-3);
    }
  });

  it('evaluation shares cover every test sample exactly once across ranks', () => {
    const shares = [0, 1, 2].map((rank) => new Trainer(smallJob(), { rank, worldSize: 3 }).evaluate('test'));
    expect(shares.reduce((s, e) => s + e.samples, 0)).toBe(240);
  });
});

describe('job config', () => {
  it('the same config and seed give bit-identical weights', async () => {
    const a = await train(smallJob());
    const b = await train(smallJob());
    expect(a.trainer.model.params.valuesHash()).toBe(b.trainer.model.params.valuesHash());
    expect(jobConfigHash(a.config)).toBe(jobConfigHash(smallJob()));
    expect(jobConfigHash(smallJob({ seed: 2 }))).not.toBe(jobConfigHash(a.config));
  });

  it('a config of another kind replaces the default one whole; one of the same kind is merged into it', () => {
    const adamw = parseJobConfig(mergeConfig(DEFAULT_JOB, { optimizer: { type: 'adamw', lr: 0.001, weightDecay: 0.01 } }));
    expect(adamw.optimizer).toEqual({ type: 'adamw', lr: 0.001, weightDecay: 0.01 });
    const slower = parseJobConfig(mergeConfig(DEFAULT_JOB, { optimizer: { lr: 0.01 } }));
    expect(slower.optimizer).toEqual({ type: 'sgd', lr: 0.01, momentum: 0.9 });
    const csv = parseJobConfig(mergeConfig(DEFAULT_JOB, { dataset: { source: 'csv', train: 'x.csv' }, model: { inputSize: 4 } }));
    expect(csv.dataset).toEqual({ source: 'csv', train: 'x.csv' });
    expect(csv.model.layers).toEqual(DEFAULT_JOB.model.layers);
  });

  it('rejects unknown and invalid fields, naming them', () => {
    expect(() => parseJobConfig({ ...DEFAULT_JOB, batchsize: 3 })).toThrow(/batchsize/);
    expect(() => parseJobConfig({ ...DEFAULT_JOB, batchSize: 0 })).toThrow(/batchSize = 0/);
    expect(() => parseJobConfig({ ...DEFAULT_JOB, optimizer: { type: 'sgd', lr: 0 } })).toThrow(/optimizer\.lr = 0/);
    expect(() => new Trainer(smallJob({ model: { inputSize: 5 } }))).toThrow(/model inputSize 5 does not match dataset .* with 8 features/);
  });

  it('stops with ERR_NON_FINITE naming the step when the loss or a gradient diverges', () => {
    const t = new Trainer(smallJob({ optimizer: { type: 'sgd', lr: 1e38 } }));
    expect(() => {
      for (let i = 0; i < 20; i++) t.trainStep();
    }).toThrow(expect.objectContaining({ code: 'ERR_NON_FINITE', message: expect.stringMatching(/rank 0: (loss|gradient of layers\.\d\.(weight|bias)) is (NaN|-?Infinity) at step \d+/) }));
  });

  it('names the tensor of a non-finite gradient; with nonFinite "skip" the step passes and the weights stay', () => {
    const t = new Trainer(smallJob({ nonFinite: 'skip' }));
    const r = t.computeGradients();
    expect(t.checkFinite(r.loss)).toBeNull();
    t.model.params.grad('layers.2.bias')[1] = Number.NaN;
    expect(t.checkFinite(r.loss)).toEqual({ what: 'gradient', tensor: 'layers.2.bias', value: Number.NaN });
    expect(t.checkFinite(Number.POSITIVE_INFINITY)).toEqual({ what: 'loss', value: Number.POSITIVE_INFINITY });
    const before = t.model.params.valuesHash();
    t.skipUpdate();
    expect(t.model.params.valuesHash()).toBe(before);
    expect(t.globalStep).toBe(1);
    expect(t.cursor).toBe(8);
  });

  it('health: weight and gradient norms per tensor and the update/weight ratio of the step', () => {
    const t = new Trainer(smallJob({ optimizer: { type: 'sgd', lr: 0.1 } }));
    t.computeGradients();
    const w0 = t.model.params.value('layers.0.weight').slice();
    const g0 = t.model.params.grad('layers.0.weight').slice();
    const { tensors } = t.applyUpdateWithHealth();
    const norm = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0));
    const w1 = t.model.params.value('layers.0.weight');
    expect(tensors.map((x) => x.name)).toEqual(['layers.0.weight', 'layers.0.bias', 'layers.2.weight', 'layers.2.bias']);
    expect(tensors[0].gradNorm).toBeCloseTo(norm(g0), 5);
    expect(tensors[0].weightNorm).toBeCloseTo(norm(w1), 5);
    // Plain SGD: the update is lr·g.
    expect(tensors[0].updateRatio).toBeCloseTo((0.1 * norm(g0)) / norm(w1), 4);
    expect(norm(w1.map((v, i) => v - w0[i]))).toBeCloseTo(0.1 * norm(g0), 4);
  });
});

import { describe, expect, it } from 'vitest';
import { configDifferences, DEFAULT_JOB, gradientCompressionOf, jobConfigHash, mergeConfig, parseJobConfig } from './job-config.js';
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
  // It learns, with a margin no kernel can eat (runs measure 95.4–96%; the figure is the bench's).
  it.each(['wasm', 'auto'] as const)('%s backend: MLP 784-128-10, SGD momentum 0.9, lr 0.05, batch 64 reaches 93 percent test accuracy within 10 epochs', async (backend) => {
    const result = await train({ ...DEFAULT_JOB, optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 }, epochs: 10, batchSize: 64, backend });
    const best = Math.max(...result.epochs.map((e) => e.test.accuracy));
    expect(result.epochs).toHaveLength(10);
    expect(result.epochs[0].test.samples).toBe(2000);
    expect(best).toBeGreaterThanOrEqual(0.93);
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

  // Elastic membership: the global batch stays B while ranks come and go; uneven slices are
  // weighted by their sample count, so the averaged gradient is still the whole batch's.
  it('a fixed global batch split over 4, then 3 (uneven), then 4 replicas follows one replica of batch B', () => {
    const B = 32;
    const single = new Trainer(smallJob({ batchSize: B }));
    const pool = Array.from({ length: 4 }, (_, rank) => new Trainer(smallJob({ batchSize: 8 }), { rank, worldSize: 4, globalBatch: B }));
    const worldAt = (step: number): number => (step > 10 && step <= 30 ? 3 : 4);
    let maxRel = 0;
    for (let step = 1; step <= 40; step++) {
      const world = worldAt(step);
      const replicas = pool.slice(0, world);
      if (world !== worldAt(step - 1)) {
        // The survivors (and later the newcomer) take the state of replica 0, as a new generation does.
        for (const [rank, r] of pool.entries()) {
          if (r !== pool[0]) {
            r.model.params.values.set(pool[0].model.params.values);
            for (const [k, buf] of Object.entries(pool[0].optimizer.state.slots)) r.optimizer.state.slots[k].set(buf);
            r.restore(pool[0].state());
          }
          if (rank < world) r.place(rank, world);
        }
      }
      single.trainStep();
      const counts = replicas.map((r) => {
        r.computeGradients();
        return r.localBatch;
      });
      expect(counts.reduce((a, c) => a + c, 0)).toBe(B);
      if (world === 3) expect(counts).toEqual([10, 11, 11]);
      const avg = new Float32Array(single.model.params.length);
      for (const r of replicas) r.model.params.grads.forEach((g, i) => (avg[i] += g / world));
      for (const r of replicas) {
        r.model.params.grads.set(avg);
        r.applyUpdate();
      }
      expect(new Set(replicas.map((r) => r.model.params.valuesHash())).size).toBe(1);
      expect(replicas[0].cursor).toBe(single.cursor);
      const x = replicas[0].model.params.values;
      const y = single.model.params.values;
      for (let i = 0; i < x.length; i++) maxRel = Math.max(maxRel, Math.abs(x[i] - y[i]) / Math.max(1e-3, Math.abs(y[i])));
    }
    expect(maxRel).toBeLessThanOrEqual(1e-4);
    expect(maxRel).toBeGreaterThan(0); // different summation order: close, not equal, so the check is real
  });

  it('invariant: the optimizer runs only after a complete all-reduce; a reduce that rejects leaves weights, slots, step and cursor untouched', async () => {
    const t = new Trainer(smallJob({ optimizer: { type: 'adam', lr: 0.01 } }));
    await t.step(async () => true); // one real step first, so the optimizer slots are not all zero
    const weights = t.model.params.values.slice();
    const slots = Object.fromEntries(Object.entries(t.optimizer.state.slots).map(([k, b]) => [k, b.slice()]));
    const before = JSON.stringify(t.state());
    const lost = Object.assign(new Error('rank 2: connection to peer rank 3 closed'), { code: 'ERR_PEER_LOST' });
    await expect(t.step(async () => Promise.reject(lost))).rejects.toBe(lost);
    expect(t.model.params.values).toEqual(weights);
    for (const [k, b] of Object.entries(t.optimizer.state.slots)) expect(b).toEqual(slots[k]);
    expect(JSON.stringify(t.state())).toBe(before);
    // The same step then completes normally and moves the weights.
    const r = await t.step(async () => true);
    expect(r.skipped).toBe(false);
    expect(t.globalStep).toBe(2);
    expect(t.model.params.values).not.toEqual(weights);
  });

  it('the batch filled ahead during the all-reduce is the one the next step would load; an aborted step and a new slice load their own', async () => {
    // 960 training samples at a global batch of 64: 15 steps an epoch, so 40 steps cross two epoch ends.
    const plain = new Trainer(smallJob({ batchSize: 64 }));
    const ahead = new Trainer(smallJob({ batchSize: 64 }));
    for (let s = 0; s < 40; s++) {
      plain.trainStep();
      if (s === 17) await expect(ahead.step(async () => Promise.reject(new Error('peer lost')))).rejects.toThrow('peer lost');
      await ahead.step(async () => true);
    }
    expect(ahead.globalStep).toBe(40);
    expect(ahead.epoch).toBe(plain.epoch);
    expect(ahead.model.params.valuesHash()).toBe(plain.model.params.valuesHash());
    // Rank 1 of 2 fills ahead for its own slice; placed anew, it loads the slice it now has.
    const a = new Trainer(smallJob({ batchSize: 32 }), { rank: 1, worldSize: 2 });
    const b = new Trainer(smallJob({ batchSize: 32 }), { rank: 1, worldSize: 2 });
    await a.step(async () => true);
    await b.step(async () => true);
    a.place(0, 2);
    b.place(0, 2);
    const r1 = a.computeGradients();
    const fresh = new Trainer(smallJob({ batchSize: 32 }), { rank: 0, worldSize: 2 });
    fresh.model.params.values.set(b.model.params.values);
    fresh.restore(b.state());
    const r2 = fresh.computeGradients();
    expect(r1.loss).toBe(r2.loss);
    expect(Buffer.from(a.model.params.grads.buffer).equals(Buffer.from(fresh.model.params.grads.buffer))).toBe(true);
  });

  it('evaluation shares cover every test sample exactly once across ranks: they add up to the whole set', () => {
    const whole = new Trainer(smallJob()).evaluate('test');
    expect(whole.samples).toBe(240);
    expect(whole.accuracy).toBeGreaterThan(0);
    expect(whole.accuracy).toBeLessThan(1); // a mix of right and wrong answers, so a wrong share shows
    for (const worldSize of [2, 3, 7]) {
      const shares = Array.from({ length: worldSize }, (_, rank) => new Trainer(smallJob(), { rank, worldSize }).evaluate('test'));
      expect(shares.reduce((s, e) => s + e.samples, 0)).toBe(240);
      // Overlapping or missing samples would change the summed loss and the count of right answers.
      expect(shares.reduce((s, e) => s + Math.round(e.accuracy * e.samples), 0)).toBe(Math.round(whole.accuracy * 240));
      const loss = shares.reduce((s, e) => s + e.loss * e.samples, 0) / 240;
      expect(Math.abs(loss - whole.loss) / whole.loss).toBeLessThan(1e-6);
    }
  });
});

describe('overlap: gradients all-reduced in ranges as the backward pass finishes them', () => {
  // An in-process all-reduce for the ranks of one step: each call waits for every rank's call of
  // the same range, then writes the element-wise average (order-free for 2 ranks: bit-exact).
  function ring(world: number) {
    const calls: { rank: number; offset: number; length: number; backwardDone: boolean }[] = [];
    const pending = new Map<number, { parts: Float32Array[]; wake: (() => void)[] }>();
    const reduceFor = (rank: number, progress: { done: boolean }) => async (grads: Float32Array, offset: number): Promise<boolean> => {
      calls.push({ rank, offset, length: grads.length, backwardDone: progress.done });
      const p = pending.get(offset) ?? { parts: [], wake: [] };
      pending.set(offset, p);
      p.parts.push(grads);
      if (p.parts.length < world) await new Promise<void>((r) => p.wake.push(r));
      else {
        pending.delete(offset);
        const avg = new Float32Array(grads.length);
        for (const g of p.parts) for (let i = 0; i < g.length; i++) avg[i] += g[i] / world;
        for (const g of p.parts) g.set(avg);
        for (const w of p.wake) w();
      }
      return grads.every(Number.isFinite);
    };
    return { calls, reduceFor };
  }
  const wide = (over: object = {}) => smallJob({ model: { inputSize: 8, layers: [{ type: 'dense', units: 64 }, { type: 'tanh' }, { type: 'dense', units: 64 }, { type: 'tanh' }, { type: 'dense', units: 4 }], loss: 'softmax_cross_entropy' }, ...over });

  it('ranges go to the all-reduce top layer first, before the backward pass ends, and cover the gradient once; the weights equal those of one all-reduce per step bit for bit', async () => {
    const run = async (bucketBytes: number) => {
      const { calls, reduceFor } = ring(2);
      const trainers = [0, 1].map((rank) => new Trainer(wide(), { rank, worldSize: 2 }));
      for (let step = 0; step < 20; step++) {
        await Promise.all(trainers.map((t, rank) => {
          const progress = { done: false };
          return t.step(reduceFor(rank, progress), { bucketBytes, afterGradients: () => void (progress.done = true) });
        }));
      }
      return { calls, hashes: trainers.map((t) => t.model.params.valuesHash()) };
    };
    const overlapped = await run(1024); // 256 floats: the top two dense layers (260 and 4160) go early
    const whole = await run(0);
    expect(new Set([...overlapped.hashes, ...whole.hashes]).size).toBe(1);
    const step0 = overlapped.calls.filter((c) => c.rank === 0).slice(0, 3);
    const n = new Trainer(wide()).model.params.length;
    expect(step0.map((c) => c.offset)).toEqual([n - 260, n - 260 - 4160, 0]);
    expect(step0.map((c) => c.offset + c.length)).toEqual([n, n - 260, n - 260 - 4160]);
    expect(step0.map((c) => c.backwardDone)).toEqual([false, false, true]);
    expect(whole.calls.filter((c) => c.rank === 0).slice(0, 1)).toEqual([{ rank: 0, offset: 0, length: n, backwardDone: true }]);
  });

  it('a range whose all-reduce fails while the backward pass goes on: the step rejects with that failure once the pass is done, the weights untouched', async () => {
    const t = new Trainer(wide());
    await t.step(async () => true);
    const before = t.model.params.valuesHash();
    const lost = new Error('peer rank 1 lost');
    const seen: number[] = [];
    // The first range fails at once: the layers below still compute, yielding to the event loop.
    await expect(t.step(async (_g, offset) => (seen.push(offset), offset > 0 ? Promise.reject(lost) : true), { bucketBytes: 1024 })).rejects.toBe(lost);
    expect(seen.at(-1)).toBe(0);
    expect(t.model.params.valuesHash()).toBe(before);
    expect(t.globalStep).toBe(1);
  });

  it('a NaN in a range sent early: under "skip" every rank skips the step and the weights stay; under "stop" that rank stops, naming the tensor', async () => {
    for (const nonFinite of ['skip', 'stop'] as const) {
      const { reduceFor } = ring(2);
      const trainers = [0, 1].map((rank) => new Trainer(wide({ nonFinite }), { rank, worldSize: 2 }));
      await Promise.all(trainers.map((t, rank) => t.step(reduceFor(rank, { done: false }), { bucketBytes: 1024 })));
      const before = trainers.map((t) => t.model.params.valuesHash());
      // Rank 1's top layer (the first range sent) gets a NaN as soon as its backward is done.
      const model = trainers[1].model;
      const stages = model.gradientStages.bind(model);
      model.gradientStages = function* (...args: Parameters<typeof stages>) {
        const it = stages(...args);
        let next = it.next();
        model.params.grads[model.params.length - 1] = Number.NaN;
        while (!next.done) {
          yield next.value;
          next = it.next();
        }
        return next.value;
      };
      const bad: string[] = [];
      const steps = trainers.map((t, rank) => t.step(reduceFor(rank, { done: false }), { bucketBytes: 1024, onNonFinite: (b) => bad.push(`${rank}: ${b.what} ${b.tensor}`) }));
      if (nonFinite === 'skip') {
        const outcomes = await Promise.all(steps);
        expect(outcomes.map((o) => o.skipped)).toEqual([true, true]);
        expect(trainers.map((t) => t.model.params.valuesHash())).toEqual(before);
      } else {
        await expect(steps[1]).rejects.toThrow(/rank 1: gradient of layers\.4\.bias is NaN/);
      }
      // Only the rank whose own gradient it was reports it.
      expect(bad).toEqual(['1: gradient layers.4.bias']);
    }
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

  it('gradient compression: a name or {type, errorFeedback}; error feedback on by default for int8 only; unset leaves the hash alone', () => {
    const wireOf = (c: unknown) => gradientCompressionOf(parseJobConfig({ ...DEFAULT_JOB, gradientCompression: c }));
    expect(wireOf(undefined)).toEqual({ wire: 'float32', errorFeedback: false });
    expect(wireOf('none')).toEqual({ wire: 'float32', errorFeedback: false });
    expect(wireOf('fp16')).toEqual({ wire: 'fp16', errorFeedback: false });
    expect(wireOf({ type: 'bf16', errorFeedback: true })).toEqual({ wire: 'bf16', errorFeedback: true });
    expect(wireOf('int8')).toEqual({ wire: 'int8', errorFeedback: true });
    expect(wireOf({ type: 'int8', errorFeedback: false })).toEqual({ wire: 'int8', errorFeedback: false });
    expect(() => wireOf('int4')).toThrow(/gradientCompression/);
    expect(jobConfigHash(parseJobConfig(DEFAULT_JOB))).toBe(jobConfigHash(parseJobConfig({ ...DEFAULT_JOB, gradientCompression: undefined })));
    expect(jobConfigHash(parseJobConfig({ ...DEFAULT_JOB, gradientCompression: 'fp16' }))).not.toBe(jobConfigHash(parseJobConfig(DEFAULT_JOB)));
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

describe('DiLoCo (local steps, outer Nesterov step)', () => {
  const diloco = (over: object = {}) => smallJob({ sync: { type: 'diloco', innerSteps: 4, outerOptimizer: { type: 'nesterov', lr: 0.7, momentum: 0.9 } }, ...over });

  it('a round is H plain local steps, then weights = anchor − lr·(Δ + μ·v) with v = μ·v + Δ (float64 reference over two rounds)', () => {
    const local = new Trainer(smallJob()); // the same inner steps, without the outer loop
    const outer = new Trainer(diloco());
    const values = () => Float64Array.from(outer.model.params.values);
    let anchor = values();
    const v = new Float64Array(anchor.length);
    for (let round = 0; round < 2; round++) {
      local.model.params.values.set(outer.model.params.values);
      for (const slot of Object.values(local.optimizer.state.slots)) slot.fill(0); // the inner optimizer starts each round afresh
      local.optimizer.state.step = 0;
      for (let s = 0; s < 4; s++) {
        expect(outer.atSyncPoint).toBe(s === 0);
        local.trainStep();
        outer.trainStep();
      }
      expect(outer.atSyncPoint).toBe(true);
      let worst = 0;
      for (let i = 0; i < anchor.length; i++) {
        const delta = anchor[i] - local.model.params.values[i];
        v[i] = 0.9 * v[i] + delta;
        const want = anchor[i] - 0.7 * (delta + 0.9 * v[i]);
        worst = Math.max(worst, Math.abs(outer.model.params.values[i] - want));
      }
      expect(worst).toBeLessThan(1e-5);
      // The velocity is an optimizer slot (checkpoints and joining replicas carry it); the inner slots are cleared.
      expect(outer.optimizer.state.slots.outer_momentum.some((x) => x !== 0)).toBe(true);
      expect(outer.optimizer.state.slots.momentum.every((x) => x === 0)).toBe(true);
      anchor = values();
    }
    // Nothing like the plain run: the outer step moved the weights 1.7× (then more) as far.
    expect(outer.model.params.valuesHash()).not.toBe(local.model.params.valuesHash());
  });

  it('rewindRound returns mid-round to the round start: weights, step, cursor; at a sync point it does nothing', () => {
    const t = new Trainer(diloco());
    t.trainStep();
    t.trainStep();
    t.trainStep();
    t.trainStep(); // a round ends: a sync point
    const hash = t.model.params.valuesHash();
    const state = t.state();
    t.rewindRound();
    expect(t.model.params.valuesHash()).toBe(hash);
    t.trainStep();
    t.trainStep();
    expect(t.atSyncPoint).toBe(false);
    expect(t.model.params.valuesHash()).not.toBe(hash);
    t.rewindRound();
    expect(t.atSyncPoint).toBe(true);
    expect(t.model.params.valuesHash()).toBe(hash);
    expect(t.state()).toEqual(state);
    // Redone from there, the round gives what it gave the first time.
    const again = new Trainer(diloco());
    for (let s = 0; s < 8; s++) again.trainStep();
    for (let s = 0; s < 4; s++) t.trainStep();
    expect(t.model.params.valuesHash()).toBe(again.model.params.valuesHash());
  });

  it('an epoch end closes a round early; config errors name the field', () => {
    const t = new Trainer(diloco({ sync: { type: 'diloco', innerSteps: 1000 } }));
    let ended = false;
    while (!ended) ended = t.trainStep() && t.epoch === 1;
    expect(t.epoch).toBe(1);
    expect(t.atSyncPoint).toBe(true);
    expect(() => parseJobConfig({ ...DEFAULT_JOB, sync: { type: 'diloco', innerSteps: 0 } })).toThrow(/innerSteps/);
    expect(() => parseJobConfig({ ...DEFAULT_JOB, sync: { type: 'diloco', innerSteps: 8, outerOptimizer: { type: 'nesterov', lr: 0.7, momentum: 1 } } })).toThrow(/momentum/);
  });
});

describe('configDifferences', () => {
  it('names each field that differs, with both values, and nothing else', () => {
    const a = parseJobConfig(mergeConfig(DEFAULT_JOB, { epochs: 3, optimizer: { lr: 0.5 } }));
    const b = parseJobConfig(DEFAULT_JOB);
    expect(configDifferences(a, b)).toEqual(['epochs: 3 here, 15 there', 'optimizer.lr: 0.5 here, 0.1 there']);
    expect(configDifferences(b, structuredClone(b))).toEqual([]);
    // A field one side lacks, and a long value cut.
    expect(configDifferences({ x: 'y'.repeat(100) }, {})).toEqual([`x: "${'y'.repeat(36)}… here, (none) there`]);
  });
});

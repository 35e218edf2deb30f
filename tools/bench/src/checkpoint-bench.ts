import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { table } from '@ringtrain/cli';
import { type CheckpointMeta, loadCheckpoint, saveCheckpoint } from '@ringtrain/checkpoint';
import { createBackend, createOptimizer, Model, mlpSpec } from '@ringtrain/core';
import { fmt } from './measure.js';

/** Save and load of a ~100 MB model (weights + SGD momentum), and the stall a periodic save causes. */
export async function checkpointBench(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-ckpt-bench-'));
  const spec = mlpSpec([784, 4096, 4096, 1024, 10]); // 24.6 M parameters: 98 MB at fp32
  const model = new Model(spec, createBackend('auto').backend, { seed: 1 });
  const opt = createOptimizer({ type: 'sgd', lr: 0.01, momentum: 0.9 }, model.params);
  const params = model.params;
  const views = [
    ...params.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.value(t.name) })),
    ...params.tensors.map((t) => ({ name: `optimizer.momentum.${t.name}`, shape: t.shape, data: params.viewOf(opt.state.slots.momentum, t.name) })),
  ];
  const meta = (step: number): CheckpointMeta => ({
    step,
    epoch: 0,
    cursor: 0,
    worldSize: 1,
    runId: 'bench',
    lineage: 'bench',
    configHash: '0000000000000000',
    config: {},
    modelSpec: spec,
    optimizer: { type: 'sgd', step, slots: ['momentum'] },
    rng: { dropout: model.dropoutRng.state() },
    metrics: {},
    savedAt: new Date().toISOString(),
  });
  const rows: string[][] = [];
  // As the worker does: one snapshot buffer, allocated once and reused by every save.
  const snapshot = views.map((v) => ({ ...v, data: new Float32Array(v.data.length) }));
  for (let i = 1; i <= 3; i++) {
    const t0 = performance.now();
    views.forEach((v, k) => snapshot[k].data.set(v.data));
    const stall = performance.now() - t0;
    // What training would do meanwhile: measure how often the event loop gets a turn.
    let turns = 0;
    let worst = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last);
      last = now;
      turns++;
    }, 1);
    const t1 = performance.now();
    await saveCheckpoint(dir, snapshot, meta(i), { keepLast: 1 });
    const write = performance.now() - t1;
    clearInterval(ticker);
    const path = join(dir, `ckpt-step-${String(i).padStart(10, '0')}.safetensors`);
    rows.push([String(i), fmt(statSync(path).size / 1e6, 1), fmt(stall, 1), fmt(write, 0), fmt(worst, 1)]);
    last = performance.now();
  }
  const t2 = performance.now();
  loadCheckpoint(join(dir, 'ckpt-step-0000000003.safetensors'));
  const load = performance.now() - t2;
  rmSync(dir, { recursive: true, force: true });
  return `Checkpoint of MLP 784-4096-4096-1024-10 (${(params.length / 1e6).toFixed(1)} M parameters + SGD momentum), to ${tmpdir()}\n${table(
    ['save', 'file MB', 'training stall ms (copy)', 'background write ms (incl. fsync)', 'longest event-loop gap during write ms'],
    rows,
  )}\nload + verify (SHA-256) of the last: ${fmt(load, 0)} ms`;
}

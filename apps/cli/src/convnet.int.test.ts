import { readdirSync, readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, readSafetensorsHeader } from '@ringtrain/checkpoint';
import { DEFAULT_JOB, mergeConfig, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

const lenetFile = fileURLToPath(new URL('../../../models/lenet.json', import.meta.url));
const lenet = JSON.parse(readFileSync(lenetFile, 'utf8'));

describe('a convolutional net (models/lenet.json), real processes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-convnet-'));

  it('the job config of the issue, as written, trains with 4 workers; inspect and export handle its conv weights', async () => {
    const run = startRingtrain(['launch', '--workers', '4', '--config', lenetFile, '--checkpoint-dir', join(dir, 'ckpts'), '--keep-last', '1', '--keep-best', '0', '--json']);
    expect(await run.exited, run.stderr).toBe(0);
    const summary = JSON.parse(run.stdout);
    const accuracy = summary.epochs.map((e: { testAccuracy: number }) => e.testAccuracy);
    console.log(`lenet, 4 workers × 64, 5 epochs: test accuracy ${accuracy.join(', ')}; ${Math.round(summary.samplesPerSecond)} samples/s`);
    expect(summary.steps).toBe(5 * 31);
    // It learned, with a margin no kernel can eat: seeds and kernels give 97.25–98.45% (the MLP
    // stops near 95.7%). What it reaches is a figure of the bench (BENCHMARKS.md).
    expect(accuracy.at(-1)).toBeGreaterThanOrEqual(0.95);

    const ckpt = join(dir, 'ckpts', readdirSync(join(dir, 'ckpts')).filter((f) => f.endsWith('.safetensors'))[0]);
    const inspect = startRingtrain(['inspect', ckpt]);
    expect(await inspect.exited, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/layers\.0\.weight +\| F32 +\| \[16, 1, 5, 5\] +\| 400/);
    expect(inspect.stdout).toMatch(/layers\.3\.weight +\| F32 +\| \[32, 16, 5, 5\] +\| 12800/);
    expect(inspect.stdout).toMatch(/parameters: 215370 \(215184 weights, 186 biases\)/);
    for (const q of ['int8', 'int4'] as const) {
      const out = join(dir, `lenet-${q}.safetensors`);
      const exp = startRingtrain(['export', ckpt, '-o', out, '--quantize', q]);
      expect(await exp.exited, exp.stderr).toBe(0);
      const m = /test accuracy ([\d.]+)% at fp32, ([\d.]+)% /.exec(exp.stdout)!;
      console.log(`lenet ${q}: ${m[1]}% → ${m[2]}%`);
      if (q === 'int8') expect(Number(m[1]) - Number(m[2])).toBeLessThanOrEqual(0.5);
      const header = readSafetensorsHeader(out) as Record<string, { dtype: string; shape: number[] }>;
      // One scale per output channel of each convolution.
      expect(header['layers.3.weight']).toMatchObject(q === 'int8' ? { dtype: 'I8', shape: [32, 16, 5, 5] } : { dtype: 'U8', shape: [32, 200] });
      expect(header['layers.3.weight.scale']).toMatchObject({ dtype: 'F32', shape: [32] });
      expect(header['layers.3.bias']).toMatchObject({ dtype: 'F32', shape: [32] });
    }
  }, 240_000);

  for (const n of [2, 4]) {
    it(`N = ${n} workers with batch 8 take the same first step as one process with batch ${n * 8} (≤ 1e-5)`, async () => {
      const file = join(dir, `n${n}.safetensors`);
      const run = startRingtrain(['launch', '--workers', String(n), '--model', 'lenet', '--batch-size', '8', '--max-steps', '1', '--verify-every', '1', '--save-final', file, '--json']);
      expect(await run.exited, run.stderr).toBe(0);
      const single = new Trainer(parseJobConfig(mergeConfig(DEFAULT_JOB, { ...lenet, batchSize: n * 8 })));
      single.trainStep();
      const flat = new Float32Array(single.model.params.length);
      for (const t of readSafetensors(file).tensors) flat.set(t.data, single.model.params.info(t.name).offset);
      const initial = new Trainer(parseJobConfig(mergeConfig(DEFAULT_JOB, { ...lenet, batchSize: n * 8 }))).model.params.values;
      let [rel, moved] = [0, 0];
      const want = single.model.params.values;
      for (let i = 0; i < flat.length; i++) {
        const scale = Math.max(1e-3, Math.abs(want[i]));
        rel = Math.max(rel, Math.abs(flat[i] - want[i]) / scale);
        moved = Math.max(moved, Math.abs(initial[i] - want[i]) / scale);
      }
      console.log(`lenet N = ${n}: max relative difference after 1 step ${rel.toExponential(2)}; the step itself moved weights by up to ${moved.toExponential(2)}`);
      expect(rel).toBeLessThanOrEqual(1e-5);
      // The comparison is real: the step moved the weights far more than the tolerance.
      expect(moved).toBeGreaterThan(1e-2);
    }, 60_000);
  }
});

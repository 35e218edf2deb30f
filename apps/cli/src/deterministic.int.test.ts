import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';

afterEach(killStarted);

async function launch(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stderr: string; summary: { weightsHash: string; steps: number } }> {
  const r = startRingtrain(['launch', ...args, '--json'], env);
  const code = await r.exited;
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  return { code, stderr: r.stderr, summary: code === 0 && last.startsWith('{') ? JSON.parse(last) : null };
}

const dir = mkdtempSync(join(tmpdir(), 'ringtrain-deterministic-'));

/**
 * Two jobs of 60 steps with what makes sums order-dependent in every part of a step: dropout, Adam,
 * a cosine schedule, gradient clipping; a global batch of 6 micro-batches, which 4 workers split
 * unevenly (2, 1, 2, 1) and 3 evenly.
 */
const JOBS = {
  mlp: {
    dataset: { source: 'synthetic', kind: 'blobs', samples: 2000, features: 32, classes: 4, seed: 3 },
    model: { inputSize: 32, layers: [{ type: 'dense', units: 64 }, { type: 'relu' }, { type: 'dropout', rate: 0.2 }, { type: 'dense', units: 4 }], loss: 'softmax_cross_entropy' },
    optimizer: { type: 'adam', lr: 0.01 },
    schedule: { type: 'cosine', totalSteps: 60, warmupSteps: 5 },
    clipGradNorm: 1,
    batchSize: 8,
    globalBatchSize: 48,
  },
  convnet: {
    dataset: { source: 'synthetic', kind: 'blobs', samples: 800, features: 3 * 8 * 8, classes: 3, seed: 4 },
    model: { inputShape: [3, 8, 8], layers: [{ type: 'conv2d', filters: 6, kernelSize: 3, padding: 'same' }, { type: 'groupnorm', groups: 2 }, { type: 'relu' }, { type: 'maxpool2d', size: 2 }, { type: 'dense', units: 3 }], loss: 'softmax_cross_entropy' },
    optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 },
    batchSize: 4,
    globalBatchSize: 24,
  },
};

describe('--deterministic: the same bits on any number of workers, through a fault and a resume on another size (real processes)', () => {
  for (const [name, job] of Object.entries(JOBS)) {
    it(`${name}: 1, 2, 3 and 4 workers, a worker SIGKILLed at step 20, and a resume from 4 workers to 2 end with one weights hash`, async () => {
      const config = join(dir, `${name}.json`);
      writeFileSync(config, JSON.stringify({ ...job, epochs: 50, steps: 60, deterministic: true }));
      const hashes: Record<string, string> = {};
      for (const n of [1, 2, 3, 4]) {
        const r = await launch(['--workers', String(n), '--config', config]);
        expect(r.code, r.stderr.slice(-2000)).toBe(0);
        expect(r.summary.steps).toBe(60);
        hashes[`${n} workers`] = r.summary.weightsHash;
      }
      // The ring goes on with the three survivors, until launch's replacement joins.
      const fault = await launch(['--workers', '3:4', '--max-restarts', '1', '--config', config], { RINGTRAIN_FAULT_KILL: '1@20' });
      expect(fault.code, fault.stderr.slice(-2000)).toBe(0);
      expect(fault.stderr).toMatch(/rank 1/);
      hashes['4 workers, one killed at step 20'] = fault.summary.weightsHash;
      const ckpts = join(dir, `${name}-ckpts`);
      const half = await launch(['--workers', '4', '--config', config, '--max-steps', '30', '--checkpoint-dir', ckpts, '--save-every', '30']);
      expect(half.code, half.stderr.slice(-2000)).toBe(0);
      const resumed = await launch(['--workers', '2', '--resume', join(ckpts, 'ckpt-step-0000000030.safetensors')]);
      expect(resumed.code, resumed.stderr.slice(-2000)).toBe(0);
      expect(resumed.stderr).toMatch(/is of a deterministic run: it goes on bit for bit/);
      hashes['4 workers to step 30, 2 from there'] = resumed.summary.weightsHash;
      expect(new Set(Object.values(hashes)), JSON.stringify(hashes, null, 1)).toHaveLength(1);
    }, 180_000);
  }

  it('refuses what it cannot keep exact, naming the fix', async () => {
    const config = join(dir, 'bad.json');
    for (const [extra, why] of [
      [{}, /deterministic needs globalBatchSize \(--global-batch\)/],
      [{ globalBatchSize: 50 }, /micro-batches of batchSize 8, which must divide it/],
      [{ globalBatchSize: 48, gradientCompression: 'int8' }, /a int8 wire would round/],
    ] as const) {
      writeFileSync(config, JSON.stringify({ ...JOBS.mlp, globalBatchSize: undefined, ...extra, deterministic: true }));
      const r = await launch(['--workers', '2', '--config', config]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(why);
    }
  }, 60_000);
});

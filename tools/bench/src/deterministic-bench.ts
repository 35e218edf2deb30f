import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { fmt } from './measure.js';

interface Summary {
  steps: number;
  seconds: number;
  epochs: { testAccuracy: number }[];
}

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));

function launch(config: string, workers: number): Summary | null {
  const r = spawnSync(process.execPath, [cli, 'launch', '--workers', String(workers), '--config', config, '--json'], { encoding: 'utf8', timeout: 600_000, env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
  if (r.status !== 0) {
    process.stderr.write(`launch --workers ${workers} ${config} failed: ${r.stderr.slice(-500)}\n`);
    return null;
  }
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as Summary;
}

/**
 * `--deterministic` against the same job without it (the same global batch, data and seed), on
 * the embedded MNIST: an MLP and LeNet, 2 and 4 workers on this host. Modes alternate run by run,
 * three seeds each; step time is the run's training seconds over its steps.
 */
export function deterministicBench(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-deterministic-bench-'));
  const lenet = JSON.parse(readFileSync(fileURLToPath(new URL('../../../models/lenet.json', import.meta.url)), 'utf8'));
  const jobs = {
    'MLP 784-128-10': { model: { inputSize: 784, layers: [{ type: 'dense', units: 128 }, { type: 'relu' }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' }, dataset: { source: 'mnist-small' }, optimizer: { type: 'sgd', lr: 0.1, momentum: 0.9 }, batchSize: 64, globalBatchSize: 256, epochs: 5 },
    LeNet: { ...lenet, batchSize: 32, globalBatchSize: 128, epochs: 2 },
  };
  const rows: string[][] = [];
  for (const [name, job] of Object.entries(jobs)) {
    for (const workers of [2, 4]) {
      const times: Record<'normal' | 'deterministic', number[]> = { normal: [], deterministic: [] };
      const accuracy: Record<'normal' | 'deterministic', number[]> = { normal: [], deterministic: [] };
      for (const seed of [1, 2, 3]) {
        for (const mode of ['normal', 'deterministic'] as const) {
          const config = join(dir, `${name}-${mode}-${seed}.json`.replace(/\s/g, '_'));
          writeFileSync(config, JSON.stringify({ ...job, seed, ...(mode === 'deterministic' ? { deterministic: true } : {}) }));
          const r = launch(config, workers);
          if (!r) continue;
          times[mode].push((1000 * r.seconds) / r.steps);
          accuracy[mode].push(100 * r.epochs.at(-1)!.testAccuracy);
        }
      }
      const range = (xs: number[], digits: number): string => (xs.length ? `${fmt(Math.min(...xs), digits)}–${fmt(Math.max(...xs), digits)}` : '–');
      const ratio = times.normal.length && times.deterministic.length ? Math.min(...times.deterministic) / Math.min(...times.normal) : NaN;
      rows.push([name, String(workers), range(times.normal, 2), range(times.deterministic, 2), fmt(ratio, 2), range(accuracy.normal, 2), range(accuracy.deterministic, 2)]);
    }
  }
  return (
    'Deterministic mode against the same job without it (embedded MNIST, global batch 256 in micro-batches of 64 for the MLP, 128 in 32 for LeNet; 3 seeds each, modes alternating)\n' +
    `${table(['model', 'workers', 'normal ms/step', 'deterministic ms/step', 'ratio (best/best)', 'normal test acc %', 'deterministic test acc %'], rows)}\n` +
    'Bytes on the wire per step (what each rank all-reduces): normal, 4 bytes a parameter; deterministic, 8 bytes a parameter (two float32 halves) and 1,204 bytes a tensor (its exponent counts, 301 float32).'
  );
}

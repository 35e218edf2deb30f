import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { peersDir } from './allreduce-bench.js';
import { fmt, runPeer } from './measure.js';
import { table } from '@ringtrain/cli';

interface Summary {
  samplesPerSecond: number;
  seconds: number;
  timing: { rank: number; dataMs: number; computeMs: number; allreduceMs: number; optimizerMs: number }[];
  epochs: { testAccuracy: number }[];
}

/** `ringtrain launch` against PyTorch DDP (Gloo), MLP 784-256-128-10, batch 64 per worker, N = 1, 2, 4. */
export function clusterBench(backend: string, samples: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-cluster-bench-'));
  const config = join(dir, 'job.json');
  writeFileSync(
    config,
    JSON.stringify({
      model: { inputSize: 784, layers: [{ type: 'dense', units: 256 }, { type: 'relu' }, { type: 'dense', units: 128 }, { type: 'relu' }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' },
      dataset: { source: 'synthetic', kind: 'blobs', samples: Math.round(samples * 1.25), features: 784, classes: 10, testFraction: 0.2, normalize: 'standardize' },
      optimizer: { type: 'sgd', lr: 0.05, momentum: 0.9 },
      batchSize: 64,
      epochs: 1,
      seed: 1,
      backend,
    }),
  );
  const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
  const ddp = `${peersDir()}pytorch_ddp_mlp.py`;
  const rows: string[][] = [];
  const where: string[][] = [];
  for (const n of [1, 2, 4]) {
    const r = spawnSync(process.execPath, [cli, 'launch', '--workers', String(n), '--config', config, '--json'], { encoding: 'utf8', timeout: 600_000, env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
    const ours = r.status === 0 ? (JSON.parse(r.stdout.trim()) as Summary) : undefined;
    if (!ours) process.stderr.write(`launch --workers ${n} failed: ${r.stderr.slice(-500)}\n`);
    const peer = runPeer(ddp, ['--workers', String(n), '--synthetic', String(samples), '--batch', '64', '--hidden', '256,128', '--lr', '0.05'])?.[0];
    const theirs = peer?.samples_per_s as number | undefined;
    rows.push([String(n), fmt(ours?.samplesPerSecond, 0), fmt(theirs, 0), fmt((ours?.samplesPerSecond ?? NaN) / (theirs ?? NaN), 2)]);
    for (const t of ours?.timing ?? []) {
      const total = ours!.seconds * 1000;
      const idle = total - t.dataMs - t.computeMs - t.allreduceMs - t.optimizerMs;
      const pct = (x: number): string => `${fmt((100 * x) / total, 0)}%`;
      where.push([String(n), String(t.rank), pct(t.dataMs), pct(t.computeMs), pct(t.allreduceMs), pct(t.optimizerMs), pct(idle)]);
    }
  }
  return (
    `Data-parallel training, MLP 784-256-128-10, batch 64 per worker, one epoch of ${samples} synthetic samples, backend ${backend}\n` +
    `${table(['workers', 'ringtrain samples/s', 'pytorch DDP samples/s', 'ratio'], rows)}\n\n` +
    `Where each rank's time went (share of the run; compute = forward/backward and the finiteness check; all-reduce includes waiting for the slowest rank; other = evaluation, replica checks, reports)\n` +
    table(['workers', 'rank', 'data', 'compute', 'all-reduce', 'optimizer', 'other'], where)
  );
}

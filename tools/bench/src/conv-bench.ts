import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { type Backend, createBackend, type Layer, shapeLayers } from '@ringtrain/core';
import { fullMnistDir, loadEmbeddedMnist, writeIdxFolder } from '@ringtrain/data';
import { DEFAULT_JOB, mergeConfig, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { fmt, runPeer } from './measure.js';

const lenetFile = fileURLToPath(new URL('../../../models/lenet.json', import.meta.url));
const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
const peer = fileURLToPath(new URL('../peers/torch_convnet.py', import.meta.url));

/**
 * PyTorch at its best: glibc's dynamic mmap threshold otherwise leaves some runs taking fresh pages
 * for every large tensor of every step (N = 1, five runs alternating: 2.8–5.1k samples/s
 * without these, 4.9–5.1k with).
 */
const PEER_MALLOC = { MALLOC_MMAP_THRESHOLD_: '4000000000', MALLOC_TRIM_THRESHOLD_: '4000000000' };

interface Summary {
  samplesPerSecond: number;
  /** At N > 1: over the run's wall time, evaluations included. */
  wallSamplesPerSecond?: number;
  epochs: { testAccuracy: number }[];
  timing?: { dataMs: number; computeMs: number; allreduceMs: number; optimizerMs: number }[];
}

/** One ringtrain run of models/lenet.json on the IDX folder: `train` for N = 1, `launch` otherwise. */
function ours(n: number, dir: string, epochs: number): Summary | undefined {
  const args = n === 1 ? ['train', '--model', 'lenet', '--data', `idx:${dir}`, '--epochs', String(epochs), '--json'] : ['launch', '--workers', String(n), '--model', 'lenet', '--data', `idx:${dir}`, '--epochs', String(epochs), '--json'];
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 1_200_000, env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
  if (r.status !== 0) {
    process.stderr.write(`ringtrain ${args.join(' ')} failed: ${r.stderr.slice(-500)}\n`);
    return undefined;
  }
  const s = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  if (n > 1) {
    // Over rank 0's steps (data, compute, all-reduce, update), as the peer times its rank 0's
    // training loops: neither start-up nor the evaluations between epochs count.
    const t = (s.timing as NonNullable<Summary['timing']>)[0];
    const stepSeconds = (t.dataMs + t.computeMs + t.allreduceMs + t.optimizerMs) / 1000;
    return { ...s, samplesPerSecond: (s.samplesPerSecond * s.seconds) / stepSeconds, wallSamplesPerSecond: s.samplesPerSecond };
  }
  // `train --json` reports each epoch's training time and rate: over all epochs, as the peer does.
  const epochsRun = s.epochs as { seconds: number; samplesPerSecond: number; test: { accuracy: number } }[];
  const seconds = epochsRun.reduce((t, e) => t + e.seconds, 0);
  return { samplesPerSecond: epochsRun.reduce((t, e) => t + e.samplesPerSecond * e.seconds, 0) / seconds, epochs: epochsRun.map((e) => ({ testAccuracy: e.test.accuracy })) };
}

/** Per-layer forward and backward milliseconds of one process's steps (batch 64), and the conv layers' GFLOP/s. */
function whereTimeGoes(steps: number): string {
  const job = parseJobConfig(mergeConfig(DEFAULT_JOB, JSON.parse(readFileSync(lenetFile, 'utf8'))));
  const backend: Backend = createBackend('auto').backend;
  const trainer = new Trainer(job, { backend });
  const times = new Map<Layer, { fwd: number; bwd: number }>();
  for (const layer of trainer.model.layers) {
    const t = { fwd: 0, bwd: 0 };
    times.set(layer, t);
    const forward = layer.forward.bind(layer);
    const backward = layer.backward.bind(layer);
    layer.forward = (x, b, training) => {
      const t0 = performance.now();
      const y = forward(x, b, training);
      t.fwd += performance.now() - t0;
      return y;
    };
    layer.backward = (dy, b, need) => {
      const t0 = performance.now();
      const dx = backward(dy, b, need);
      t.bwd += performance.now() - t0;
      return dx;
    };
  }
  for (let s = 0; s < 5; s++) trainer.trainStep(); // warm-up
  for (const t of times.values()) (t.fwd = 0), (t.bwd = 0);
  const t0 = performance.now();
  for (let s = 0; s < steps; s++) trainer.trainStep();
  const stepMs = (performance.now() - t0) / steps;
  const shaped = shapeLayers(trainer.model.spec);
  // Rows in the order the layers run (a ReLU before max pooling runs after it), named by spec index.
  let shape: readonly number[] = trainer.model.spec.inputShape ?? [trainer.model.inputSize];
  const rows = trainer.model.layers.map((layer) => {
    const t = times.get(layer)!;
    const index = layer.name.split('.')[1];
    const l = shaped[Number(index)];
    const own = (layer as { outputShape?: readonly number[] }).outputShape;
    shape = own ?? (layer.type !== 'flatten' && layer.outputSize === shape.reduce((a, b) => a * b, 1) ? shape : [layer.outputSize]);
    // Multiply-adds of a pass: conv F·C·k²·outH·outW per sample, dense in·out; backward twice that.
    const macs = l.spec.type === 'conv2d' ? l.output[0] * l.input[0] * l.spec.kernelSize ** 2 * l.output[1] * l.output[2] : l.spec.type === 'dense' ? l.input.reduce((a, b) => a * b, 1) * l.spec.units : 0;
    const gflops = macs ? (2 * 3 * macs * job.batchSize) / (((t.fwd + t.bwd) / steps) * 1e6) : NaN;
    return [`${index} ${layer.type}`, `[${shape.join(', ')}]`, fmt(t.fwd / steps, 2), fmt(t.bwd / steps, 2), fmt((100 * (t.fwd + t.bwd)) / steps / stepMs, 0) + '%', fmt(gflops, 1)];
  });
  return `Where one step goes (one process, ${backend.name} backend, batch ${job.batchSize}, ${fmt(stepMs, 1)} ms a step)\n${table(['layer', 'output', 'forward ms', 'backward ms', 'share', 'GFLOP/s'], rows)}`;
}

/**
 * The convnet of models/lenet.json, ringtrain against PyTorch (Debian's python3-torch) on the same
 * data, batch and epochs: one process, and DDP over Gloo at N = 2 and 4. Runs alternate (ours, then
 * PyTorch, per repetition) and the table shows the range over repetitions.
 */
export function convBench(epochs: number, reps: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-conv-bench-'));
  writeIdxFolder(dir, loadEmbeddedMnist());
  const rows: string[][] = [];
  for (const n of [1, 2, 4]) {
    const rate: number[] = [];
    const wall: number[] = [];
    const torch: number[] = [];
    const accOurs: number[] = [];
    const accTorch: number[] = [];
    for (let r = 0; r < reps; r++) {
      const o = ours(n, dir, epochs);
      if (o) (rate.push(o.samplesPerSecond), wall.push(o.wallSamplesPerSecond ?? o.samplesPerSecond), accOurs.push(o.epochs.at(-1)!.testAccuracy));
      const p = runPeer(peer, ['--data', dir, '--workers', String(n), '--epochs', String(epochs)], 1_200_000, PEER_MALLOC)?.[0];
      if (p) (torch.push(p.samples_per_s as number), accTorch.push((p.test_acc as number[]).at(-1)!));
    }
    const range = (xs: number[], d = 0): string => (xs.length ? (xs.length > 1 ? `${fmt(Math.min(...xs), d)}–${fmt(Math.max(...xs), d)}` : fmt(xs[0], d)) : 'n/a');
    const ratios = rate.map((x, i) => x / (torch[i] ?? NaN));
    rows.push([String(n), range(rate), range(wall), range(torch), range(ratios, 2), range(accOurs.map((a) => 100 * a), 1), range(accTorch.map((a) => 100 * a), 1)]);
  }
  return `Convnet (models/lenet.json: conv16k5-pool-conv32k5-pool-dense128-10), batch 64 per worker, ${epochs} epochs of 8,000, ${reps} alternating repetition(s); both rates over rank 0's training steps (start-up and evaluations excluded), PyTorch's with glibc's mmap threshold fixed; "over the run" is ringtrain's over its wall time once all ranks are ready, evaluations included\n${table(
    ['N', 'ringtrain samples/s', 'ringtrain over the run', 'pytorch samples/s', 'ratio', 'ringtrain test %', 'pytorch test %'],
    rows,
  )}\n\n${whereTimeGoes(30)}`;
}

/**
 * The official MNIST (60,000 / 10,000): models/lenet-mnist.json with 4 workers, beside PyTorch DDP
 * with the same net, data, batch, optimizer and cosine schedule, over `seeds` seeds of ours.
 */
export function fullMnistBench(seeds: number): string {
  const job = JSON.parse(readFileSync(fileURLToPath(new URL('../../../models/lenet-mnist.json', import.meta.url)), 'utf8'));
  const rows: string[][] = [];
  for (let seed = 1; seed <= seeds; seed++) {
    const r = spawnSync(process.execPath, [cli, 'launch', '--workers', '4', '--model', 'lenet-mnist', '--seed', String(seed), '--json'], { encoding: 'utf8', timeout: 1_200_000, env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
    const s = r.status === 0 ? JSON.parse(r.stdout.trim().split('\n').at(-1)!) : null;
    if (!s) process.stderr.write(`launch --model lenet-mnist failed: ${r.stderr.slice(-500)}\n`);
    rows.push([`ringtrain, seed ${seed}`, fmt(s?.samplesPerSecond, 0), fmt(s?.seconds, 1), s ? s.epochs.map((e: { testAccuracy: number }) => fmt(100 * e.testAccuracy, 2)).join(', ') : 'n/a']);
  }
  const p = runPeer(peer, ['--data', fullMnistDir(), '--workers', '4', '--epochs', String(job.epochs), '--lr', String(job.optimizer.lr), '--batch', String(job.batchSize), '--cosine'], 1_800_000, PEER_MALLOC)?.[0];
  rows.push(['PyTorch DDP (Gloo), 4 ranks', fmt(p?.samples_per_s as number | undefined, 0), fmt((p?.seconds_at_epoch as number[] | undefined)?.at(-1), 1), p ? (p.test_acc as number[]).map((a) => fmt(100 * a, 2)).join(', ') : 'n/a']);
  return `The official MNIST (60,000 / 10,000), models/lenet-mnist.json (${job.epochs} epochs, batch 64 per worker, SGD lr ${job.optimizer.lr} momentum 0.9, cosine), 4 workers; samples/s: ringtrain's over the run's wall time, PyTorch's over its training loops; seconds: the whole run (PyTorch: to its last evaluation)\n${table(['who', 'samples/s', 'seconds', 'test accuracy % by epoch (official 10,000)'], rows)}`;
}

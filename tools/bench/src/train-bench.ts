import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Backend, createBackend, WasmBackend } from '@ringtrain/core';
import { loadDataset, loadEmbeddedMnist, writeIdxFolder } from '@ringtrain/data';
import { DEFAULT_JOB, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { fmt, runPeer } from './measure.js';
import { table } from '@ringtrain/cli';

/** The backend with a stopwatch on GEMM, so the rest (activations, loss, optimizer) shows. */
function withGemmTimer(inner: Backend): Backend & { gemmMs: number } {
  const timed = Object.create(inner) as Backend & { gemmMs: number };
  timed.gemmMs = 0;
  timed.gemm = (...args: Parameters<Backend['gemm']>): void => {
    const t = performance.now();
    inner.gemm(...args);
    timed.gemmMs += performance.now() - t;
  };
  return timed;
}

/** Training samples/s of MLP 784-256-128-10, batch 64, per backend, beside PyTorch single-process. */
export function trainBench(epochs: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-bench-'));
  writeIdxFolder(dir, loadEmbeddedMnist());
  const data = loadDataset({ source: 'idx', dir });
  const job = parseJobConfig({
    ...DEFAULT_JOB,
    model: { inputSize: 784, layers: [{ type: 'dense', units: 256 }, { type: 'relu' }, { type: 'dense', units: 128 }, { type: 'relu' }, { type: 'dense', units: 10 }], loss: 'softmax_cross_entropy' },
    dataset: { source: 'idx', dir },
    epochs,
  });
  const backends: Backend[] = [new WasmBackend()];
  const native = createBackend('auto').backend;
  if (native.name === 'native') backends.push(native);
  const results = backends.map((inner) => {
    const be = withGemmTimer(inner);
    const trainer = new Trainer(job, { backend: be, data });
    let seconds = 0;
    let samples = 0;
    for (let e = 0; e < epochs; e++) {
      if (e === 1) be.gemmMs = 0; // epoch 0 warms up, as in the peer
      const t0 = performance.now();
      for (let s = 0; s < trainer.stepsPerEpoch; s++) trainer.trainStep();
      if (e > 0) {
        seconds += (performance.now() - t0) / 1000;
        samples += trainer.stepsPerEpoch * job.batchSize;
      }
    }
    return { name: inner.name, rate: samples / seconds, gemmShare: be.gemmMs / 1000 / seconds, acc: trainer.evaluate('test').accuracy };
  });
  const peer = runPeer(fileURLToPath(new URL('../peers/torch_mlp.py', import.meta.url)), ['--data', dir, '--epochs', String(epochs)])?.[0];
  const torchRate = peer?.samples_per_s as number | undefined;
  const rows = results.map((r) => [r.name, fmt(r.rate, 0), `${fmt(100 * r.gemmShare, 0)}%`, fmt(r.acc, 4), fmt(torchRate, 0), fmt(r.rate / (torchRate ?? NaN), 2)]);
  rows.push(['pytorch', fmt(torchRate, 0), 'n/a', fmt(peer?.test_acc as number | undefined, 4), fmt(torchRate, 0), '1.00']);
  return `Training MLP 784-256-128-10, batch 64, SGD momentum, one process, one thread (${epochs - 1} timed epochs of 8,000 after one warm-up)\n${table(
    ['backend', 'samples/s', 'time in GEMM', 'test acc', 'pytorch samples/s', 'ratio'],
    rows,
  )}`;
}

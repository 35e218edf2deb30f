import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { createPack, loadIdxFolder, loadPacked, writeIdxUbyte } from '@ringtrain/data';
import { childrenPeakRss, fmt } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
const UNIT = Float32Array.from({ length: 256 }, (_, v) => v / 255);

/** Pixel bytes of a synthetic sample: its class's pattern plus hashed noise (cheap, deterministic). */
function fillRows(start: number, rows: number, out: Uint8Array, labelOf: (i: number) => number): void {
  for (let r = 0; r < rows; r++) {
    const i = start + r;
    const label = labelOf(i);
    for (let p = 0, o = r * 784; p < 784; p++, o++) out[o] = ((p * 7 + label * 29) & 255) ^ (Math.imul(i, 2654435761) >>> 27);
  }
}

/**
 * The data path: loading a 60,000-image IDX set, and training 2 workers from a packed dataset of
 * about 2 GB (generated here) with each worker's peak resident memory and the data phase's share.
 */
export async function dataBench(gigabytes: number): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-data-bench-'));
  try {
    // 60,000 IDX images.
    const idx = join(dir, 'idx');
    mkdirSync(idx);
    const images = new Uint8Array(60_000 * 784);
    fillRows(0, 60_000, images, (i) => i % 10);
    writeIdxUbyte(join(idx, 'train-images-idx3-ubyte'), [60_000, 28, 28], images);
    writeIdxUbyte(join(idx, 'train-labels-idx1-ubyte'), [60_000], Uint8Array.from({ length: 60_000 }, (_, i) => i % 10));
    writeIdxUbyte(join(idx, 't10k-images-idx3-ubyte'), [10_000, 28, 28], images.subarray(0, 10_000 * 784));
    writeIdxUbyte(join(idx, 't10k-labels-idx1-ubyte'), [10_000], Uint8Array.from({ length: 10_000 }, (_, i) => i % 10));
    const loads: number[] = [];
    for (let r = 0; r < 3; r++) {
      const t0 = performance.now();
      loadIdxFolder(idx);
      loads.push((performance.now() - t0) / 1000);
    }
    // A pack of about `gigabytes` GB.
    const pack = join(dir, 'pack');
    const size = Math.round((gigabytes * 1e9) / 784);
    const t0 = performance.now();
    const labelOf = (i: number): number => (Math.imul(i, 0x9e3779b1) >>> 28) % 10;
    createPack(pack, { name: 'synthetic 2 GB', features: 784, dtype: 'uint8', codeValues: UNIT, shape: [1, 28, 28], classes: 10 }, {
      train: { size, labels: Int32Array.from({ length: size }, (_, i) => labelOf(i)), fill: (s, n, out) => fillRows(s, n, out, labelOf) },
      test: { size: 10_000, labels: Int32Array.from({ length: 10_000 }, (_, i) => labelOf(size + i)), fill: (s, n, out) => fillRows(size + s, n, out, labelOf) },
    });
    const packSeconds = (performance.now() - t0) / 1000;
    const bytes = loadPacked(pack).train.size * 784;
    // 2 workers, 600 steps (a global batch of 128 touches 76,800 samples spread over the whole set).
    const launch = spawn(process.execPath, [cli, 'launch', '--workers', '2', '--data', `packed:${pack}`, '--max-steps', '600', '--epochs', '1', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'warn' } });
    let out = '';
    launch.stdout.on('data', (d: Buffer) => (out += d));
    const exited = new Promise<number | null>((r) => launch.once('exit', r));
    const peaks = await childrenPeakRss(launch.pid!, exited);
    if ((await exited) !== 0) return `data benchmark: launch failed`;
    const summary = JSON.parse(out.trim()) as { samplesPerSecond: number; timing: { dataMs: number; computeMs: number; allreduceMs: number; optimizerMs: number }[] };
    const share = summary.timing.map((t) => t.dataMs / (t.dataMs + t.computeMs + t.allreduceMs + t.optimizerMs));
    const rss = [...peaks.values()];
    return `Data path (MLP 784-128-10, 2 workers, batch 64 each, 600 steps)\n${table(
      ['what', 'figure', 'goal'],
      [
        ['load 60,000 IDX images (3 runs)', `${fmt(Math.min(...loads), 2)}–${fmt(Math.max(...loads), 2)} s`, '≤ 0.3 s'],
        [`pack ${fmt(bytes / 1e9, 2)} GB (${size.toLocaleString('en')} samples, generated)`, `${fmt(packSeconds, 1)} s`, ''],
        ['peak RSS of each worker training from it', rss.length ? `${rss.map((m) => fmt(m, 0)).join(', ')} MB` : 'n/a', '≤ 400 MB'],
        ['data phase share of the step, per rank', share.map((s) => `${fmt(100 * s, 1)}%`).join(', '), '≤ 5%'],
        ['samples/s', fmt(summary.samplesPerSecond, 0), ''],
      ],
    )}`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

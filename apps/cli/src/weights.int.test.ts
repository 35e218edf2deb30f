import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensorsHeader } from '@ringtrain/checkpoint';
import { loadEmbeddedMnist, writeIdxFolder } from '@ringtrain/data';
import { beforeAll, describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const ringtrain = (...args: string[]) => spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 120_000 });

describe('the weights as a product: inspect, export, evaluate, predict', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-weights-'));
  let ckpt = '';

  beforeAll(() => {
    const r = ringtrain('launch', '--workers', '2', '--checkpoint-dir', join(dir, 'ckpts'), '--keep-last', '1', '--keep-best', '0');
    expect(r.status, r.stderr).toBe(0);
    ckpt = join(dir, 'ckpts', readdirSync(join(dir, 'ckpts'))[0]);
  }, 120_000);

  it('inspect lists tensors, counts weights and biases apart, and sizes at every precision', () => {
    const r = ringtrain('inspect', ckpt);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/layers\.0\.weight +\| \[128, 784\] +\| 100352/);
    expect(r.stdout).toMatch(/optimizer\.momentum\.layers\.2\.bias/);
    expect(r.stdout).toMatch(/parameters: 101770 \(101632 weights, 138 biases\)/);
    expect(r.stdout).toMatch(/FP32 407\.1 kB, FP16 203\.5 kB, INT8 102\.7 kB, INT4 51\.9 kB/);
    expect(r.stdout).toMatch(/step 930, epoch 15/);
    const json = JSON.parse(ringtrain('inspect', ckpt, '--json').stdout);
    // int8: one byte a weight + a 4-byte scale per output row + fp32 biases; int4: two weights a byte.
    expect(json.sizes).toEqual({ fp32: 101770 * 4, fp16: 101770 * 2, int8: 101632 + 138 * 4 + 138 * 4, int4: 128 * 392 + 10 * 64 + 138 * 4 + 138 * 4 });
  });

  it('int8 export keeps test accuracy within 0.5 points of fp32; files carry per-row scales', () => {
    for (const q of ['int8', 'int4', 'fp16'] as const) {
      const out = join(dir, `w-${q}.safetensors`);
      const r = ringtrain('export', ckpt, '-o', out, '--quantize', q);
      expect(r.status, r.stderr).toBe(0);
      const m = /test accuracy ([\d.]+)% at fp32, ([\d.]+)% /.exec(r.stdout)!;
      const drop = Number(m[1]) - Number(m[2]);
      console.log(`${q}: ${m[1]}% → ${m[2]}%`);
      if (q === 'int8') expect(drop).toBeLessThanOrEqual(0.5);
      const header = readSafetensorsHeader(out) as Record<string, { dtype: string; shape: number[] }>;
      if (q === 'int8') {
        expect(header['layers.0.weight']).toMatchObject({ dtype: 'I8', shape: [128, 784] });
        expect(header['layers.0.weight.scale']).toMatchObject({ dtype: 'F32', shape: [128] });
      }
      if (q === 'int4') expect(header['layers.0.weight']).toMatchObject({ dtype: 'U8', shape: [128, 392] });
      if (q === 'fp16') expect(header['layers.2.weight']).toMatchObject({ dtype: 'F16', shape: [10, 128] });
      expect(header['layers.0.bias']).toMatchObject({ dtype: 'F32' });
      expect(Object.keys(header).some((k) => k.startsWith('optimizer.'))).toBe(false);
    }
  });

  it('evaluate and predict agree with each other on the test set', () => {
    const ev = JSON.parse(ringtrain('evaluate', ckpt).stdout);
    expect(ev.samples).toBe(2000);
    expect(ev.accuracy).toBeGreaterThanOrEqual(0.95);
    const idx = join(dir, 'idx');
    const split = loadEmbeddedMnist();
    writeIdxFolder(idx, split);
    const r = ringtrain('predict', ckpt, '--input', join(idx, 't10k-images-idx3-ubyte'));
    expect(r.status, r.stderr).toBe(0);
    const predicted = r.stdout.trim().split('\n').map(Number);
    expect(predicted).toHaveLength(2000);
    const accuracy = predicted.filter((p, i) => p === split.test.labels![i]).length / 2000;
    // The IDX export rounds pixels to bytes, so allow a sample or two of difference.
    expect(Math.abs(accuracy - ev.accuracy)).toBeLessThanOrEqual(0.002);
  });

  it('refuses a file that is not a checkpoint, naming it', () => {
    const r = ringtrain('inspect', join(dir, 'w-int8.safetensors'));
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/w-int8\.safetensors: not a ringtrain checkpoint/);
  });
});

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensorsHeader } from '@ringtrain/checkpoint';
import { loadEmbeddedMnist, writeIdxFolder } from '@ringtrain/data';
import { beforeAll, describe, expect, it } from 'vitest';
import { MLP_LEARNED } from './testing/learned.js';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const ringtrain = (...args: string[]) => spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 120_000 });

describe('the weights as a product: inspect, export, evaluate, predict', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-weights-'));
  let ckpt = '';

  beforeAll(() => {
    const r = ringtrain('launch', '--workers', '2', '--checkpoint-dir', join(dir, 'ckpts'), '--keep-last', '1', '--keep-best', '0');
    expect(r.status, r.stderr).toBe(0);
    ckpt = join(dir, 'ckpts', readdirSync(join(dir, 'ckpts')).filter((f) => f.endsWith('.safetensors'))[0]);
  }, 120_000);

  it('inspect lists tensors, counts weights and biases apart, and sizes at every precision', () => {
    const r = ringtrain('inspect', ckpt);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/layers\.0\.weight +\| F32 +\| \[128, 784\] +\| 100352/);
    expect(r.stdout).toMatch(/optimizer\.momentum\.layers\.2\.bias/);
    expect(r.stdout).toMatch(/parameters: 101770 \(101632 weights, 138 biases\)/);
    // Each precision's size beside the accuracy the model keeps at it.
    for (const [p, size] of [['fp32', '407.1 kB'], ['fp16', '203.8 kB'], ['int8', '102.7 kB'], ['int4', '51.9 kB']]) expect(r.stdout).toMatch(new RegExp(`\\| ${p} +\\| ${size.replace('.', '\\.')} +\\| 9\\d\\.\\d\\d% +\\| \\d\\.\\d{4} +\\|`));
    expect(r.stdout).toMatch(/step 930, epoch 15/);
    const json = JSON.parse(ringtrain('inspect', ckpt, '--json').stdout);
    // fp16: two bytes a weight; int8: one byte a weight + a 4-byte scale per output row; int4: two
    // weights a byte; biases fp32 in each.
    expect(json.sizes).toEqual({ fp32: 101770 * 4, fp16: 101632 * 2 + 138 * 4, int8: 101632 + 138 * 4 + 138 * 4, int4: 128 * 392 + 10 * 64 + 138 * 4 + 138 * 4 });
  });

  it('exports decode, read by an independent numpy reader, to the checkpoint weights within half a step of the right scale, and score what export reports', () => {
    const idx = join(dir, 'idx-export');
    writeIdxFolder(idx, loadEmbeddedMnist());
    const decoder = fileURLToPath(new URL('../src/testing/decode_weights.py', import.meta.url));
    const accuracies: Record<string, number> = {};
    for (const q of ['none', 'fp16', 'int8', 'int4'] as const) {
      const out = join(dir, `w-${q}.safetensors`);
      const r = ringtrain('export', ckpt, '-o', out, '--data', `idx:${idx}`, ...(q === 'none' ? [] : ['--quantize', q]));
      expect(r.status, r.stderr).toBe(0);
      const m = /test accuracy ([\d.]+)% at fp32, ([\d.]+)% /.exec(r.stdout)!;
      const [before, after] = [Number(m[1]) / 100, Number(m[2]) / 100];
      console.log(`${q}: ${m[1]}% → ${m[2]}%`);
      const header = readSafetensorsHeader(out) as Record<string, { dtype: string; shape: number[] }>;
      expect(Object.keys(header).some((k) => k.startsWith('optimizer.'))).toBe(false);
      expect(header['layers.0.bias']).toMatchObject({ dtype: 'F32' });
      const py = spawnSync('/usr/bin/python3', [decoder, out, ckpt, idx], { encoding: 'utf8' });
      expect(py.status, py.stderr).toBe(0);
      const decoded = JSON.parse(py.stdout) as { accuracy: number; samples: number; maxErrorOverHalfStep: number; maxScaleRelError: number };
      expect(decoded.samples).toBe(2000);
      // What export reports as "after" is what the file scores, read by someone else's reader.
      expect(Math.abs(decoded.accuracy - after)).toBeLessThanOrEqual(1 / 2000);
      if (q === 'int8' || q === 'int4') {
        expect(decoded.maxScaleRelError).toBeLessThan(1e-6); // scale = max|w| / qmax per row, not larger
        expect(decoded.maxErrorOverHalfStep).toBeLessThanOrEqual(1 + 1e-5);
        expect(decoded.maxErrorOverHalfStep).toBeGreaterThan(0.5); // rounding was exercised
      }
      if (q === 'none') expect(after).toBe(before);
      if (q === 'int8') expect(before - after).toBeLessThanOrEqual(0.005);
      accuracies[q] = after;
    }
    expect(readSafetensorsHeader(join(dir, 'w-int4.safetensors'))['layers.0.weight']).toMatchObject({ dtype: 'U8', shape: [128, 392] });
    expect(readSafetensorsHeader(join(dir, 'w-int8.safetensors'))['layers.0.weight.scale']).toMatchObject({ dtype: 'F32', shape: [128] });
    // The JSON format holds the same values the int8 file stands for.
    const jsonOut = join(dir, 'w-int8.json');
    const r = ringtrain('export', ckpt, '-o', jsonOut, '--format', 'json', '--quantize', 'int8', '--data', `idx:${idx}`);
    expect(r.status, r.stderr).toBe(0);
    expect(Number(/% at fp32, ([\d.]+)% int8/.exec(r.stdout)![1]) / 100).toBe(accuracies.int8);
    const json = JSON.parse(readFileSync(jsonOut, 'utf8'));
    expect(json.quantization).toBe('int8');
    expect(json.tensors['layers.0.weight'].shape).toEqual([128, 784]);
    expect(json.tensors['layers.0.weight'].values).toHaveLength(100352);
    expect(json.model_spec.layers).toHaveLength(3);
  });

  it('evaluate and predict agree with each other on the test set', () => {
    const ev = JSON.parse(ringtrain('evaluate', ckpt).stdout);
    expect(ev.samples).toBe(2000);
    expect(ev.accuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
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

  it('reads its own exports (inspect, evaluate) and refuses a file that is neither a checkpoint nor weights, naming it', () => {
    const r = ringtrain('inspect', join(dir, 'w-int8.safetensors'));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/weights at int8/);
    expect(r.stdout).toMatch(/layers\.0\.weight +\| I8 +\| \[128, 784\] +\| 100352/);
    const ev = JSON.parse(ringtrain('evaluate', join(dir, 'w-int8.safetensors')).stdout);
    expect(ev).toMatchObject({ precision: 'int8', samples: 2000 });
    const junk = join(dir, 'junk.safetensors');
    const header = Buffer.from('{"__metadata__":{"format":"someone-else/1"}}');
    const size = Buffer.alloc(8);
    size.writeBigUInt64LE(BigInt(header.length));
    writeFileSync(junk, Buffer.concat([size, header]));
    const bad = ringtrain('inspect', junk);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/ERR_CHECKPOINT_FORMAT: .*junk\.safetensors: not a ringtrain checkpoint \(format "someone-else\/1"/);
  });
});

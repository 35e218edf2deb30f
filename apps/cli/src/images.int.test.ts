// Image folders (one subfolder per class, PNG or JPEG), written by the test from the embedded MNIST.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeImage, loadEmbeddedMnist } from '@ringtrain/data';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { beforeAll, describe, expect, it } from 'vitest';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'ringtrain-images-'));

function ringtrain(...args: string[]) {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stderr: r.stderr, summary: r.status === 0 && r.stdout.trim() ? JSON.parse(r.stdout.trim().split('\n').at(-1)!) : null };
}

/** One MNIST digit (pixels in [0, 1]) as gray RGBA bytes. */
function rgba(x: Float32Array, i: number): Buffer {
  const out = Buffer.alloc(28 * 28 * 4, 255);
  for (let p = 0; p < 784; p++) out[p * 4] = out[p * 4 + 1] = out[p * 4 + 2] = Math.round(x[i * 784 + p] * 255);
  return out;
}
const png = (data: Buffer, width = 28, height = 28): Buffer => {
  const img = new PNG({ width, height });
  data.copy(img.data);
  return PNG.sync.write(img);
};

const { train, test } = loadEmbeddedMnist();
const pngDir = join(dir, 'png');

beforeAll(() => {
  // The embedded split as a folder: train/<digit>/*.png and test/<digit>/*.png.
  for (const [sub, ds] of [['', train], ['test', test]] as const) {
    for (let i = 0; i < ds.size; i++) {
      const d = join(pngDir, sub, String(ds.labels![i]));
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, `${String(i).padStart(5, '0')}.png`), png(rgba(ds.x, i)));
    }
  }
}, 60_000);

describe('image folders (real processes)', () => {
  it('a PNG folder of the embedded MNIST trains to the accuracy of the embedded source, the model fitted to 1×28×28 and 10 classes', () => {
    const folder = ringtrain('launch', '--workers', '2', '--epochs', '3', '--data', `images:${pngDir}`, '--json');
    expect(folder.code, folder.stderr).toBe(0);
    expect(folder.stderr).toMatch(/job: MLP 784-128-10/);
    const embedded = ringtrain('launch', '--workers', '2', '--epochs', '3', '--json');
    const [a, b] = [folder.summary.epochs.at(-1).testAccuracy, embedded.summary.epochs.at(-1).testAccuracy];
    console.log(`PNG folder ${(100 * a).toFixed(2)}%, embedded ${(100 * b).toFixed(2)}% (3 epochs; the folder's order is by class, then file)`);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(0.01);
    expect(folder.summary.epochs.at(-1).testAccuracy).toBeGreaterThan(0.93);
  }, 120_000);

  it('predict reads an image and a folder of images, and names the classes by their folders', () => {
    const ckpts = join(dir, 'png-ckpts');
    const r = ringtrain('train', '--data', `images:${pngDir}`, '--epochs', '2', '--checkpoint-dir', ckpts);
    expect(r.code, r.stderr).toBe(0);
    const [ckpt] = readdirSync(ckpts);
    const sevens = join(pngDir, 'test', '7');
    const p = spawnSync(process.execPath, [main, 'predict', join(ckpts, ckpt), '--input', sevens], { encoding: 'utf8' });
    expect(p.status, p.stderr).toBe(0);
    const lines = p.stdout.trim().split('\n');
    expect(lines).toHaveLength(readdirSync(sevens).length);
    expect(lines[0]).toMatch(/\/7\/\d+\.png\t\d$/);
    expect(lines.filter((l) => l.endsWith('\t7')).length / lines.length).toBeGreaterThan(0.85);
    const one = spawnSync(process.execPath, [main, 'predict', join(ckpts, ckpt), '--input', join(sevens, readdirSync(sevens)[0])], { encoding: 'utf8' });
    expect(one.status, one.stderr).toBe(0);
    expect(one.stdout.trim().split('\n')).toHaveLength(1);
  }, 120_000);

  it('JPEG decodes to the digits it encoded (quality 95), and a JPEG folder trains', () => {
    const jpgDir = join(dir, 'jpg');
    let err = 0;
    for (let i = 0; i < 200; i++) {
      const d = join(jpgDir, String(train.labels![i]));
      mkdirSync(d, { recursive: true });
      const file = join(d, `${i}.jpg`);
      writeFileSync(file, jpeg.encode({ data: rgba(train.x, i), width: 28, height: 28 }, 95).data);
      const back = decodeImage(file).rgba;
      for (let p = 0; p < 784; p++) err += Math.abs(back[p * 4] / 255 - train.x[i * 784 + p]);
    }
    expect(err / (200 * 784)).toBeLessThan(0.02);
    const r = ringtrain('train', '--data', `images:${jpgDir}`, '--epochs', '2', '--batch-size', '16', '--json');
    expect(r.code, r.stderr).toBe(0);
  }, 120_000);

  it('hostile folders get an error naming the file: a PNG bomb, a truncated JPEG, an odd size, no images', () => {
    const cases: [string, (d: string) => void, RegExp][] = [
      ['bomb', (d) => {
        // A valid 1×1 PNG whose header is edited to claim 100000×100000 pixels: a few dozen bytes.
        const small = png(Buffer.alloc(4, 255), 1, 1);
        small.writeUInt32BE(100_000, 16);
        small.writeUInt32BE(100_000, 20);
        writeFileSync(join(d, 'a', 'bomb.png'), small);
      }, /bomb\.png: 100000×100000 pixels, outside the limits/],
      ['truncated', (d) => writeFileSync(join(d, 'a', 'cut.jpg'), jpeg.encode({ data: rgba(train.x, 0), width: 28, height: 28 }, 90).data.subarray(0, 100)), /cut\.jpg: not a readable JPEG/],
      ['odd', (d) => writeFileSync(join(d, 'b', 'odd.png'), png(Buffer.alloc(30 * 28 * 4, 255), 30, 28)), /odd\.png is 30×28; the others are 28×28/],
      ['empty', (d) => writeFileSync(join(d, 'a', 'notes.txt'), 'no images here'), /no PNG or JPEG images in class subfolders/],
    ];
    for (const [name, make, why] of cases) {
      const d = join(dir, `hostile-${name}`);
      mkdirSync(join(d, 'a'), { recursive: true });
      mkdirSync(join(d, 'b'), { recursive: true });
      if (name !== 'empty') for (const i of [1, 2]) writeFileSync(join(d, 'b', `ok${i}.png`), png(rgba(train.x, i)));
      make(d);
      const t0 = Date.now();
      const r = ringtrain('train', '--data', `images:${d}`, '--epochs', '1');
      expect(r.code, name).toBe(1);
      expect(r.stderr, name).toMatch(why);
      expect(Date.now() - t0, name).toBeLessThan(10_000);
    }
    expect(readFileSync(join(dir, 'hostile-bomb', 'a', 'bomb.png')).length).toBeLessThan(100);
  }, 60_000);
});

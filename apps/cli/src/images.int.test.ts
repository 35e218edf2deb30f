// Image folders (one subfolder per class, PNG or JPEG), written by the test from the embedded MNIST.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Dataset, decodeImage, loadEmbeddedMnist, subset, writeIdxFolder } from '@ringtrain/data';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { available } from './testing/expect-env.js';
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
  it('a PNG folder holds the embedded MNIST exactly: bit for bit the run on the same digits in its order, and the embedded accuracy', () => {
    const folder = ringtrain('launch', '--workers', '2', '--epochs', '3', '--data', `images:${pngDir}`, '--json');
    expect(folder.code, folder.stderr).toBe(0);
    expect(folder.stderr).toMatch(/job: MLP 784-128-10/);
    // The same digits as IDX, in the folder's order (by class, then file): the only thing a folder
    // cannot keep is the embedded set's order, so this run must match the folder's bit for bit.
    const byClass = (ds: Dataset): Dataset => subset(ds, Int32Array.from(Array.from({ length: ds.size }, (_, i) => i).sort((i, j) => ds.labels![i] - ds.labels![j] || i - j)), ds.name);
    const idxDir = join(dir, 'idx-folder-order');
    writeIdxFolder(idxDir, { train: byClass(train), test: byClass(test) });
    const idx = ringtrain('launch', '--workers', '2', '--epochs', '3', '--data', `idx:${idxDir}`, '--json');
    expect(idx.code, idx.stderr).toBe(0);
    expect(folder.summary.weightsHash).toBe(idx.summary.weightsHash);
    expect(folder.summary.epochs).toEqual(idx.summary.epochs);
    // Against the embedded source (same pixels and seed, its own order): the same accuracy up to
    // what the order of the samples moves it (measured 0–0.5 points; 1.5 allowed, so that no
    // kernel's trajectory decides it).
    const embedded = ringtrain('launch', '--workers', '2', '--epochs', '3', '--json');
    const [a, b] = [folder.summary.epochs.at(-1).testAccuracy, embedded.summary.epochs.at(-1).testAccuracy];
    console.log(`PNG folder ${(100 * a).toFixed(2)}%, embedded ${(100 * b).toFixed(2)}% (3 epochs; the folder's order is by class, then file)`);
    expect(Math.abs(a - b)).toBeLessThanOrEqual(0.015);
    expect(a).toBeGreaterThan(0.9);
  }, 180_000);

  it('predict reads an image and a folder of images, and names the classes by their folders', () => {
    const ckpts = join(dir, 'png-ckpts');
    const r = ringtrain('train', '--data', `images:${pngDir}`, '--epochs', '2', '--checkpoint-dir', ckpts);
    expect(r.code, r.stderr).toBe(0);
    const [ckpt] = readdirSync(ckpts).filter((f) => f.endsWith('.safetensors'));
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

  it('JPEG (quality 95) decodes to the digits it encoded', () => {
    const jpgDir = join(dir, 'jpg-few');
    mkdirSync(jpgDir);
    let err = 0;
    for (let i = 0; i < 50; i++) {
      const file = join(jpgDir, `${i}.jpg`);
      writeFileSync(file, jpeg.encode({ data: rgba(train.x, i), width: 28, height: 28 }, 95).data);
      const back = decodeImage(file).rgba;
      for (let p = 0; p < 784; p++) err += Math.abs(back[p * 4] / 255 - train.x[i * 784 + p]);
    }
    expect(err / (50 * 784)).toBeLessThan(0.02);
  });

  // jpeg-js takes 50 ms to encode one image (it builds its tables each time); libjpeg, through
  // Pillow, encodes the whole split in seconds, and is an encoder other than the decoder's.
  const pil = spawnSync('/usr/bin/python3', ['-c', 'import PIL']).status === 0;
  it.skipIf(!available('PIL', pil, "/usr/bin/python3 has no Pillow (apt-get install python3-pil)"))('a JPEG folder (libjpeg, quality 95) of the whole split trains within 1.5 points of the PNG folder', () => {
    const jpgDir = join(dir, 'jpg');
    const convert = `import pathlib, sys
from PIL import Image
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for png in src.rglob('*.png'):
    out = dst / png.relative_to(src).with_suffix('.jpg')
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(png).convert('L').save(out, quality=95)`;
    const c = spawnSync('/usr/bin/python3', ['-c', convert, pngDir, jpgDir], { encoding: 'utf8' });
    expect(c.status, c.stderr).toBe(0);
    // Same digits, files and order as the PNG folder: only JPEG's loss tells them apart.
    const [jpg, png] = [jpgDir, pngDir].map((d) => ringtrain('launch', '--workers', '2', '--epochs', '3', '--data', `images:${d}`, '--json'));
    expect(jpg.code, jpg.stderr).toBe(0);
    expect(png.code, png.stderr).toBe(0);
    expect(jpg.summary.epochs.at(-1).testSamples).toBe(test.size);
    const [a, b] = [jpg.summary.epochs.at(-1).testAccuracy, png.summary.epochs.at(-1).testAccuracy];
    console.log(`JPEG folder ${(100 * a).toFixed(2)}%, PNG folder ${(100 * b).toFixed(2)}%`);
    // Measured 0–0.35 points apart; 1.5 allowed, so that no kernel's trajectory decides it.
    expect(Math.abs(a - b)).toBeLessThanOrEqual(0.015);
  }, 180_000);

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

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { extname, join } from 'node:path';
import type jpegJs from 'jpeg-js';
import type pngJs from 'pngjs';
import { byteDataset, type Dataset, type DatasetSplit } from './dataset.js';
import { DataError } from './errors.js';
import { UNIT_BYTES } from './idx.js';

// The decoders load with the first image (synchronously: they are CommonJS), so a process that
// reads no image folder (every worker of an MNIST or CSV job) does not pay for them at start-up.
const require = createRequire(import.meta.url);
const decoders = { png: null as typeof pngJs.PNG | null, jpeg: null as typeof jpegJs | null };
const PNG = (): typeof pngJs.PNG => (decoders.png ??= (require('pngjs') as typeof pngJs).PNG);
const jpeg = (): typeof jpegJs => (decoders.jpeg ??= require('jpeg-js') as typeof jpegJs);

/** Bounds checked before a byte is decoded: a small file must not ask for gigabytes (a PNG bomb). */
export const IMAGE_LIMITS = { maxSide: 8192, maxPixels: 1 << 24, maxFileBytes: 64 * 1024 * 1024 } as const;

const EXTENSIONS = new Set(['.png', '.jpg', '.jpeg']);

interface Decoded {
  file: string;
  width: number;
  height: number;
  rgba: Uint8Array;
}

/** A PNG or JPEG as RGBA bytes; errors name the file. */
export function decodeImage(file: string): Decoded {
  const fail = (why: string, cause?: unknown): never => {
    throw new DataError('ERR_DATA_FORMAT', `${file}: ${why}`, { cause });
  };
  const size = statSync(file).size;
  if (size > IMAGE_LIMITS.maxFileBytes) fail(`${size} bytes, over the ${IMAGE_LIMITS.maxFileBytes}-byte limit for an image`);
  const buf = readFileSync(file);
  const png = extname(file).toLowerCase() === '.png';
  if (png) {
    // The IHDR chunk follows the 8-byte signature: width and height before anything is inflated.
    if (buf.length < 24 || buf.readUInt32BE(0) !== 0x89504e47) fail('not a PNG (no PNG signature)');
    checkDimensions(buf.readUInt32BE(16), buf.readUInt32BE(20), fail);
    try {
      const img = PNG().sync.read(buf);
      return { file, width: img.width, height: img.height, rgba: img.data };
    } catch (err) {
      return fail(`not a readable PNG (${(err as Error).message})`, err);
    }
  }
  try {
    const img = jpeg().decode(buf, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: IMAGE_LIMITS.maxPixels / 1e6, maxMemoryUsageInMB: 512 });
    checkDimensions(img.width, img.height, fail);
    return { file, width: img.width, height: img.height, rgba: img.data };
  } catch (err) {
    if (err instanceof DataError) throw err;
    return fail(`not a readable JPEG (${(err as Error).message})`, err);
  }
}

function checkDimensions(width: number, height: number, fail: (why: string) => never): void {
  if (!(width > 0 && height > 0) || width > IMAGE_LIMITS.maxSide || height > IMAGE_LIMITS.maxSide || width * height > IMAGE_LIMITS.maxPixels) {
    fail(`${width}×${height} pixels, outside the limits (sides up to ${IMAGE_LIMITS.maxSide}, ${IMAGE_LIMITS.maxPixels} pixels)`);
  }
}

/** Class folders (sorted) and their image files (sorted), as torchvision's ImageFolder reads them. */
function listFolder(dir: string, skip: string[] = []): { classes: string[]; files: { file: string; cls: number }[] } {
  if (!existsSync(dir)) throw new DataError('ERR_DATA_NOT_FOUND', `${dir}: no such folder`);
  const classes = readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !skip.includes(e.name))
    .map((e) => e.name)
    .sort();
  const files = classes.flatMap((name, cls) =>
    readdirSync(join(dir, name))
      .filter((f) => EXTENSIONS.has(extname(f).toLowerCase()))
      .sort()
      .map((f) => ({ file: join(dir, name, f), cls })),
  );
  if (!files.length) throw new DataError('ERR_DATA_FORMAT', `${dir}: no PNG or JPEG images in class subfolders (one subfolder per class)`);
  return { classes, files };
}

/**
 * An image folder: one subfolder per class, PNG or JPEG, all of one size; `test/` (with the same
 * class subfolders) is the test split when present. Pixels become features in [0, 1], row by row,
 * one channel when every image is gray, else three (RGB; alpha dropped).
 */
/** An image's RGBA pixels as features in [0, 1], one plane per channel (CHW, as convolutions read them). */
export function planarPixels(rgba: Uint8Array, area: number, channels: number, out: Float32Array): void {
  for (let c = 0; c < channels; c++) for (let p = 0; p < area; p++) out[c * area + p] = rgba[p * 4 + c] / 255;
}

export function loadImageFolder(dir: string): { split?: DatasetSplit; all?: Dataset; shape: [number, number, number] } {
  const train = listFolder(dir, ['test']);
  const test = existsSync(join(dir, 'test')) ? listFolder(join(dir, 'test')) : null;
  if (test && test.classes.join('/') !== train.classes.join('/')) {
    throw new DataError('ERR_DATA_FORMAT', `${join(dir, 'test')} has the classes ${test.classes.join(', ')}; ${dir} has ${train.classes.join(', ')}`);
  }
  const decoded = [...train.files, ...(test?.files ?? [])].map((f) => decodeImage(f.file));
  // The size most images have; the first image of another size is the odd one.
  const sizes = new Map<string, number>();
  for (const d of decoded) sizes.set(`${d.width}×${d.height}`, (sizes.get(`${d.width}×${d.height}`) ?? 0) + 1);
  const common = [...sizes].sort((p, q) => q[1] - p[1])[0][0];
  const [width, height] = common.split('×').map(Number);
  const odd = decoded.find((d) => d.width !== width || d.height !== height);
  if (odd) throw new DataError('ERR_DATA_FORMAT', `${odd.file} is ${odd.width}×${odd.height}; the others are ${common}`);
  const gray = decoded.every((d) => {
    for (let i = 0; i < d.rgba.length; i += 4) if (d.rgba[i] !== d.rgba[i + 1] || d.rgba[i] !== d.rgba[i + 2]) return false;
    return true;
  });
  const channels = gray ? 1 : 3;
  const features = width * height * channels;
  const build = (files: { file: string; cls: number }[], offset: number, name: string): Dataset => {
    // Pixels stay bytes (a quarter of the memory of floats), one plane per channel.
    const codes = new Uint8Array(files.length * features);
    const area = width * height;
    files.forEach((_, i) => {
      const { rgba } = decoded[offset + i];
      for (let c = 0; c < channels; c++) for (let p = 0; p < area; p++) codes[i * features + c * area + p] = rgba[p * 4 + c];
    });
    return byteDataset({ name, size: files.length, features, labels: Int32Array.from(files, (f) => f.cls), classes: train.classes.length, targetSize: 0, classNames: train.classes, shape }, codes, UNIT_BYTES);
  };
  const shape: [number, number, number] = [channels, height, width];
  const all = build(train.files, 0, `images:${dir}`);
  if (!test) return { all, shape };
  return { split: { train: all, test: build(test.files, train.files.length, `images:${join(dir, 'test')}`) }, shape };
}

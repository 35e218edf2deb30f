import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { byteDataset, countClasses, type Dataset, type DatasetSplit, withClasses } from './dataset.js';
import { DataError } from './errors.js';

/** The largest IDX file (after gzip) read: 10× Fashion-MNIST's training images (47 MB). */
export const MAX_IDX_BYTES = 512 * 1024 * 1024;

/** IDX element types: code → bytes per element. */
const TYPES: Record<number, { bytes: number; read: (v: DataView, o: number) => number }> = {
  0x08: { bytes: 1, read: (v, o) => v.getUint8(o) },
  0x09: { bytes: 1, read: (v, o) => v.getInt8(o) },
  0x0b: { bytes: 2, read: (v, o) => v.getInt16(o, false) },
  0x0c: { bytes: 4, read: (v, o) => v.getInt32(o, false) },
  0x0d: { bytes: 4, read: (v, o) => v.getFloat32(o, false) },
  0x0e: { bytes: 8, read: (v, o) => v.getFloat64(o, false) },
};

export interface IdxArray {
  type: number;
  dims: number[];
  /** Raw values as numbers (ubyte pixels stay 0..255). */
  data: Float64Array | Uint8Array;
}

/** Reads an IDX file (raw, or gzip by its magic bytes), checking the header against the length. */
export function readIdx(file: string, maxBytes = MAX_IDX_BYTES): IdxArray {
  if (!existsSync(file)) throw new DataError('ERR_DATA_NOT_FOUND', `${file}: no such file`);
  let buf: Buffer = readFileSync(file);
  if (buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b) {
    // A gzip bomb (a small file that inflates to gigabytes) is refused: by the size its trailer
    // states, before inflating, and by a cap on the output for a trailer that lies.
    const stated = buf.length >= 18 ? buf.readUInt32LE(buf.length - 4) : 0;
    if (stated > maxBytes) throw new DataError('ERR_DATA_TOO_LARGE', `${file}: inflates to ${stated} bytes, over the ${maxBytes}-byte limit for an IDX file`);
    try {
      buf = gunzipSync(buf, { maxOutputLength: maxBytes });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw new DataError('ERR_DATA_TOO_LARGE', `${file}: inflates past the ${maxBytes}-byte limit for an IDX file`, { cause: err });
      throw new DataError('ERR_DATA_TRUNCATED', `${file}: gzip stream is corrupt or truncated (${(err as Error).message})`, { cause: err });
    }
  }
  if (buf.length < 4) throw new DataError('ERR_DATA_TRUNCATED', `${file}: ${buf.length} bytes, shorter than the 4-byte IDX magic`);
  if (buf[0] !== 0 || buf[1] !== 0) throw new DataError('ERR_DATA_FORMAT', `${file}: not an IDX file (magic starts ${buf[0]}, ${buf[1]}; expected 0, 0)`);
  const type = TYPES[buf[2]];
  if (!type) throw new DataError('ERR_DATA_FORMAT', `${file}: unknown IDX element type 0x${buf[2].toString(16)}`);
  const ndim = buf[3];
  if (ndim < 1) throw new DataError('ERR_DATA_FORMAT', `${file}: IDX with 0 dimensions`);
  const headerBytes = 4 + 4 * ndim;
  if (buf.length < headerBytes) throw new DataError('ERR_DATA_TRUNCATED', `${file}: header needs ${headerBytes} bytes, file has ${buf.length}`);
  const dims: number[] = [];
  for (let d = 0; d < ndim; d++) dims.push(buf.readUInt32BE(4 + 4 * d));
  const count = dims.reduce((a, b) => a * b, 1);
  const need = headerBytes + count * type.bytes;
  if (buf.length < need) throw new DataError('ERR_DATA_TRUNCATED', `${file}: dims [${dims.join(', ')}] need ${need} bytes, file has ${buf.length} (truncated)`);
  if (buf.length > need) throw new DataError('ERR_DATA_FORMAT', `${file}: ${buf.length - need} bytes past the data that dims [${dims.join(', ')}] describe`);
  if (buf[2] === 0x08) return { type: 0x08, dims, data: new Uint8Array(buf.buffer, buf.byteOffset + headerBytes, count) };
  const view = new DataView(buf.buffer, buf.byteOffset + headerBytes, count * type.bytes);
  const data = new Float64Array(count);
  for (let i = 0; i < count; i++) data[i] = type.read(view, i * type.bytes);
  return { type: buf[2], dims, data };
}

/** Writes unsigned-byte IDX (images or labels), gzip when the name ends in .gz. */
export function writeIdxUbyte(file: string, dims: number[], data: Uint8Array): void {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const bytes = Buffer.concat([header, data]);
  writeFileSync(file, file.endsWith('.gz') ? gzipSync(bytes) : bytes);
}

/** Finds `name` in `dir` as name, name.gz, or with the '.' spelling some mirrors use. */
function findIdx(dir: string, name: string): string {
  const candidates = [name, `${name}.gz`, name.replace(/-idx/, '.idx'), `${name.replace(/-idx/, '.idx')}.gz`];
  for (const c of candidates) if (existsSync(join(dir, c))) return join(dir, c);
  throw new DataError('ERR_DATA_NOT_FOUND', `${dir}: no ${name}[.gz] (an MNIST-format folder has train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)`);
}

/** What a pixel byte stands for: v / 255. */
export const UNIT_BYTES = Float32Array.from({ length: 256 }, (_, v) => v / 255);

function idxDataset(dir: string, images: string, labels: string, name: string): Dataset {
  const imgFile = findIdx(dir, images);
  const lblFile = findIdx(dir, labels);
  const img = readIdx(imgFile);
  const lbl = readIdx(lblFile);
  if (lbl.dims.length !== 1) throw new DataError('ERR_DATA_FORMAT', `${lblFile}: labels must be 1-D, got dims [${lbl.dims.join(', ')}]`);
  if (img.dims[0] !== lbl.dims[0]) throw new DataError('ERR_DATA_FORMAT', `${imgFile} has ${img.dims[0]} images but ${lblFile} has ${lbl.dims[0]} labels`);
  const size = img.dims[0];
  const features = img.dims.slice(1).reduce((a, b) => a * b, 1);
  // Unsigned-byte pixels scale to [0, 1] as torchvision's ToTensor does; other types stay as stored.
  // A plain loop: Float32Array.from with a map walks the iterator protocol, ~30× slower (10 s for 60,000 images).

  const labelArr = Int32Array.from(lbl.data);
  // [N, H, W] images are one channel; [N, C, H, W] keep theirs.
  const dims = img.dims.slice(1);
  const shape = dims.length === 2 ? [1, ...dims] : dims.length === 3 ? dims : undefined;
  const meta = { name, size, features, labels: labelArr, classes: countClasses(labelArr, lblFile), targetSize: 0, ...(shape ? { shape } : {}) };
  // Unsigned-byte pixels stay bytes (v/255 as torchvision's ToTensor, one batch at a time); other types stay as stored.
  return img.data instanceof Uint8Array ? byteDataset(meta, img.data, UNIT_BYTES) : { ...meta, x: Float32Array.from(img.data) };
}

/** An MNIST-format folder (MNIST, Fashion-MNIST, KMNIST, …): train and t10k images and labels. */
export function loadIdxFolder(dir: string, name = `idx:${dir}`): DatasetSplit {
  if (!existsSync(dir)) throw new DataError('ERR_DATA_NOT_FOUND', `${dir}: no such folder`);
  const train = idxDataset(dir, 'train-images-idx3-ubyte', 'train-labels-idx1-ubyte', `${name}/train`);
  const test = idxDataset(dir, 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte', `${name}/test`);
  if (train.features !== test.features) throw new DataError('ERR_DATA_FORMAT', `${dir}: train has ${train.features} features per sample, test ${test.features}`);
  const classes = Math.max(train.classes, test.classes);
  return { train: withClasses(train, classes), test: withClasses(test, classes) };
}

/** Writes a split as an MNIST-format folder (for peers such as PyTorch to train on the same data). */
export function writeIdxFolder(dir: string, split: DatasetSplit, side = 28): void {
  mkdirSync(dir, { recursive: true });
  for (const [prefix, ds] of [['train', split.train], ['t10k', split.test]] as const) {
    const pixels = Uint8Array.from(ds.x, (v) => Math.round(Math.min(1, Math.max(0, v)) * 255));
    writeIdxUbyte(join(dir, `${prefix}-images-idx3-ubyte`), [ds.size, side, side], pixels);
    writeIdxUbyte(join(dir, `${prefix}-labels-idx1-ubyte`), [ds.size], Uint8Array.from(ds.labels!));
  }
}

import { createHash } from 'node:crypto';
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { type FileHandle, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CheckpointError } from './errors.js';

/** A named float32 tensor. */
export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Any dtype, as raw little-endian bytes (exports: F16, I8, and INT4 packed two per U8 byte). */
export interface RawTensor {
  name: string;
  dtype: 'F32' | 'F16' | 'I8' | 'U8';
  shape: number[];
  bytes: Uint8Array;
}

const DTYPE_SIZE = { F32: 4, F16: 2, I8: 1, U8: 1 } as const;

function toRaw(t: NamedTensor | RawTensor): RawTensor {
  if ('bytes' in t) return t;
  if (t.shape.reduce((a, b) => a * b, 1) !== t.data.length) {
    throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `tensor ${t.name}: shape [${t.shape.join(', ')}] does not hold ${t.data.length} elements`);
  }
  return { name: t.name, dtype: 'F32', shape: t.shape, bytes: bytesOf(t.data) };
}

/** The file's bytes as a header buffer and the tensors' own bytes (not copied); `checksum` is the data's SHA-256. */
function encode(raws: RawTensor[], metadata: Record<string, string>, checksum: string): Uint8Array[] {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of raws) {
    const elements = t.shape.reduce((a, b) => a * b, 1);
    if (t.bytes.length !== elements * DTYPE_SIZE[t.dtype]) {
      throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `tensor ${t.name}: ${t.bytes.length} bytes for shape [${t.shape.join(', ')}] of ${t.dtype}`);
    }
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  header.__metadata__ = { ...metadata, [CHECKSUM_KEY]: checksum };
  (header.__metadata__ as Record<string, string>)[HEADER_CHECKSUM_KEY] = headerDigest(header);
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8); // data starts 8-byte aligned
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)), 0);
  head.write(json, 8);
  return [head, ...raws.map((t) => t.bytes)];
}

/** SHA-256 of all tensor bytes, in 4 MiB pieces with a turn of the event loop between them. */
async function checksumAsync(raws: RawTensor[]): Promise<string> {
  const hash = createHash('sha256');
  const piece = 4 << 20;
  for (const t of raws) {
    for (let o = 0; o < t.bytes.length; o += piece) {
      hash.update(t.bytes.subarray(o, o + piece));
      await new Promise((r) => setImmediate(r));
    }
  }
  return hash.digest('hex');
}

function checksum(raws: RawTensor[]): string {
  const hash = createHash('sha256');
  for (const t of raws) hash.update(t.bytes);
  return hash.digest('hex');
}

const tempName = (path: string): string => join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);

export interface SafetensorsFile {
  tensors: NamedTensor[];
  /** `__metadata__`: strings only, as the format requires. */
  metadata: Record<string, string>;
}

/** Metadata key of the SHA-256 over all tensor bytes, written and verified by this library. */
export const CHECKSUM_KEY = 'ringtrain.sha256';
/**
 * Metadata key of the SHA-256 over the rest of the header (tensor entries and metadata, keys sorted):
 * the data checksum alone would let a flipped bit in the step, the cursor or a shape pass.
 */
export const HEADER_CHECKSUM_KEY = 'ringtrain.header_sha256';

/** SHA-256 of a header, less its own header checksum, as JSON with sorted keys at every level. */
function headerDigest(header: Record<string, unknown>): string {
  const canonical = (x: unknown): unknown => {
    if (Array.isArray(x)) return x.map(canonical);
    if (typeof x !== 'object' || x === null) return x;
    return Object.fromEntries(Object.keys(x).sort().map((k) => [k, canonical((x as Record<string, unknown>)[k])]));
  };
  const { [HEADER_CHECKSUM_KEY]: _, ...metadata } = (header.__metadata__ ?? {}) as Record<string, string>;
  return createHash('sha256').update(JSON.stringify(canonical({ ...header, __metadata__: metadata }))).digest('hex');
}

/** Headers larger than this are refused before they are read (safetensors itself allows 100 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/**
 * Writes the safetensors layout (8-byte little-endian header length, JSON header with dtype, shape
 * and byte offsets per tensor and `__metadata__`, then the raw little-endian data) atomically:
 * to a temporary file in the same folder, fsync, rename over `path`, fsync the folder. A crash
 * leaves the old file or the new one, never a torn one under `path`.
 */
export function writeSafetensors(path: string, tensors: (NamedTensor | RawTensor)[], metadata: Record<string, string> = {}): void {
  const raws = tensors.map(toRaw);
  const parts = encode(raws, metadata, checksum(raws));
  const tmp = tempName(path);
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'w', 0o644);
    for (const p of parts) writeAll(fd, p);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
    syncFolder(dirname(path));
  } catch (err) {
    if (fd !== null) closeSync(fd);
    rmSync(tmp, { force: true });
    throw ioError(path, err);
  }
}

/** As writeSafetensors, without blocking the event loop (the caller must not change the tensors meanwhile). */
export async function writeSafetensorsAsync(path: string, tensors: (NamedTensor | RawTensor)[], metadata: Record<string, string> = {}): Promise<void> {
  const raws = tensors.map(toRaw);
  const parts = encode(raws, metadata, await checksumAsync(raws));
  const tmp = tempName(path);
  let file: FileHandle | null = null;
  try {
    file = await open(tmp, 'w', 0o644);
    for (const p of parts) {
      // 4 MiB a write, so no single call holds a large piece of memory hostage.
      for (let done = 0; done < p.length; ) done += (await file.write(p, done, Math.min(4 << 20, p.length - done))).bytesWritten;
    }
    await file.sync();
    await file.close();
    file = null;
    await rename(tmp, path);
    syncFolder(dirname(path));
  } catch (err) {
    await file?.close().catch(() => {});
    await rm(tmp, { force: true });
    throw ioError(path, err);
  }
}

function ioError(path: string, err: unknown): CheckpointError {
  // Stryker disable next-line ConditionalExpression: defensive: the write paths raise no CheckpointError inside their try today
  if (err instanceof CheckpointError) return err;
  const e = err as NodeJS.ErrnoException;
  const why = e.code === 'ENOSPC' ? 'the disk is full' : e.code === 'EACCES' || e.code === 'EROFS' ? 'the folder is not writable' : e.code === 'ENOENT' ? 'the folder does not exist' : e.message;
  return new CheckpointError('ERR_CHECKPOINT_IO', `cannot write ${path}: ${why} (${e.code ?? 'error'}); any previous file there is intact`, { cause: err });
}

export interface ReadOptions {
  /** Refuse a file without the data checksum. */
  requireChecksum?: boolean;
  /** Refuse a file without the header checksum (files of this version have it; older ones may not). */
  requireHeaderChecksum?: boolean;
}

/** Reads and verifies a safetensors file of float32 tensors: structure, sizes, then the checksum. */
export function readSafetensors(path: string, options: ReadOptions = {}): SafetensorsFile {
  const { tensors, metadata } = readSafetensorsRaw(path, options);
  const notF32 = tensors.find((t) => t.dtype !== 'F32');
  if (notF32) throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: tensor ${notF32.name}: dtype "${notF32.dtype}"; this reader takes F32`);
  // The raw reader read all the data into one buffer of its own: float views into it, no second
  // copy (a 200 MB checkpoint is read once). A misaligned tensor (never written by this library) is copied.
  return {
    metadata,
    tensors: tensors.map((t) => ({
      name: t.name,
      shape: t.shape,
      data: t.bytes.byteOffset % 4 === 0 ? new Float32Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.length / 4) : new Float32Array(Uint8Array.from(t.bytes).buffer),
    })),
  };
}

/**
 * Reads and verifies a safetensors file of any dtype this project writes (F32, F16, I8, U8):
 * structure, sizes, then the checksum. The tensors' bytes are views into one buffer, in file order.
 */
export function readSafetensorsRaw(path: string, options: ReadOptions = {}): { tensors: RawTensor[]; metadata: Record<string, string> } {
  let fd: number;
  let size: number;
  try {
    fd = openSync(path, 'r');
    size = statSync(path).size;
  } catch (err) {
    throw new CheckpointError('ERR_CHECKPOINT_IO', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  refuseFolder(fd, path);
  try {
    const fail = (code: 'ERR_CHECKPOINT_TRUNCATED' | 'ERR_CHECKPOINT_FORMAT', why: string): never => {
      throw new CheckpointError(code, `${path}: ${why}`);
    };
    if (size < 8) fail('ERR_CHECKPOINT_TRUNCATED', `${size} bytes, shorter than the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) fail('ERR_CHECKPOINT_FORMAT', `header claims ${headerLen} bytes, over the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file`);
    if (headerLen > BigInt(size - 8)) fail('ERR_CHECKPOINT_TRUNCATED', `header claims ${headerLen} bytes, the file has ${size - 8} after the length`);
    const n = Number(headerLen);
    const jsonBuf = Buffer.alloc(n);
    readSync(fd, jsonBuf, 0, n, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(jsonBuf.toString('utf8'));
    } catch (err) {
      return fail('ERR_CHECKPOINT_FORMAT', `header is not JSON (${(err as Error).message})`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('ERR_CHECKPOINT_FORMAT', 'header is not a JSON object');
    const dataStart = 8 + n;
    const dataBytes = size - dataStart;
    const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
    if (typeof metadata !== 'object' || Object.values(metadata).some((x) => typeof x !== 'string')) fail('ERR_CHECKPOINT_FORMAT', '__metadata__ must map strings to strings');
    const entries = Object.entries(header)
      .filter(([k]) => k !== '__metadata__')
      .map(([name, info]) => {
        const i = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (typeof i?.dtype !== 'string' || !Object.hasOwn(DTYPE_SIZE, i.dtype)) fail('ERR_CHECKPOINT_FORMAT', `tensor ${name}: dtype ${JSON.stringify(i?.dtype)}; this reader takes ${Object.keys(DTYPE_SIZE).join(', ')}`);
        const dtype = i.dtype as RawTensor['dtype'];
        const size = DTYPE_SIZE[dtype];
        const shape = i.shape as number[];
        const offs = i.data_offsets as number[];
        if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) fail('ERR_CHECKPOINT_FORMAT', `tensor ${name}: bad shape ${JSON.stringify(i.shape)}`);
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && o >= 0) || offs[1] < offs[0]) fail('ERR_CHECKPOINT_FORMAT', `tensor ${name}: bad data_offsets ${JSON.stringify(i.data_offsets)}`);
        if (offs[1] - offs[0] !== shape.reduce((a, b) => a * b, 1) * size) fail('ERR_CHECKPOINT_FORMAT', `tensor ${name}: shape [${shape.join(', ')}] of ${dtype} needs ${shape.reduce((a, b) => a * b, 1) * size} bytes, offsets span ${offs[1] - offs[0]}`);
        if (offs[1] > dataBytes) fail('ERR_CHECKPOINT_TRUNCATED', `tensor ${name} ends at byte ${offs[1]} of the data, which has ${dataBytes}`);
        return { name, dtype, shape, start: offs[0], end: offs[1] };
      })
      .sort((a, b) => a.start - b.start);
    let expect = 0;
    for (const e of entries) {
      if (e.start !== expect) fail('ERR_CHECKPOINT_FORMAT', `tensor ${e.name} starts at byte ${e.start}, expected ${expect} (overlap or gap)`);
      expect = e.end;
    }
    // Stryker disable next-line ConditionalExpression,EqualityOperator,StringLiteral: the TRUNCATED branch cannot be reached (a tensor past the data is refused above); kept for a reader who reorders the checks
    if (expect !== dataBytes) fail(expect < dataBytes ? 'ERR_CHECKPOINT_FORMAT' : 'ERR_CHECKPOINT_TRUNCATED', `tensors cover ${expect} data bytes, the file has ${dataBytes}`);
    const data = Buffer.alloc(dataBytes);
    // Stryker disable next-line ConditionalExpression: equivalent: a read of 0 bytes reads nothing
    if (dataBytes) readSync(fd, data, 0, dataBytes, dataStart);
    const headerSum = metadata[HEADER_CHECKSUM_KEY];
    if (headerSum === undefined && options.requireHeaderChecksum) fail('ERR_CHECKPOINT_FORMAT', `no ${HEADER_CHECKSUM_KEY} in its metadata, so its header cannot be verified`);
    if (headerSum !== undefined && headerDigest(header) !== headerSum) {
      throw new CheckpointError('ERR_CHECKPOINT_CHECKSUM', `${path}: header SHA-256 does not match the recorded ${String(headerSum).slice(0, 16)}… (a changed step, cursor, shape or setting)`);
    }
    const sum = metadata[CHECKSUM_KEY];
    if (sum === undefined && options.requireChecksum) fail('ERR_CHECKPOINT_FORMAT', `no ${CHECKSUM_KEY} in its metadata, so its data cannot be verified`);
    if (sum !== undefined) {
      const actual = createHash('sha256').update(data).digest('hex');
      if (actual !== sum) throw new CheckpointError('ERR_CHECKPOINT_CHECKSUM', `${path}: data SHA-256 ${actual.slice(0, 16)}… does not match the recorded ${sum.slice(0, 16)}…`);
    }
    const tensors = entries.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, bytes: data.subarray(e.start, e.end) }));
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** A folder opens for reading and fails at the first read (EISDIR): named as what it is, its descriptor closed. */
function refuseFolder(fd: number, path: string): void {
  if (!fstatSync(fd).isDirectory()) return;
  closeSync(fd);
  throw new CheckpointError('ERR_CHECKPOINT_IO', `${path} is a folder; give a .safetensors file in it (or --resume latest --checkpoint-dir ${path})`);
}

/** Just the JSON header of a safetensors file (tensor entries and `__metadata__`), without its data. */
export function readSafetensorsHeader(path: string): Record<string, unknown> {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new CheckpointError('ERR_CHECKPOINT_IO', `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  refuseFolder(fd, path);
  try {
    const lenBuf = Buffer.alloc(8);
    if (readSync(fd, lenBuf, 0, 8, 0) < 8) throw new CheckpointError('ERR_CHECKPOINT_TRUNCATED', `${path}: shorter than the 8-byte header length`);
    const n = lenBuf.readBigUInt64LE(0);
    if (n > BigInt(MAX_HEADER_BYTES)) throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: header claims ${n} bytes, over the ${MAX_HEADER_BYTES}-byte limit: not a safetensors file`);
    const json = Buffer.alloc(Number(n));
    if (readSync(fd, json, 0, json.length, 8) < json.length) throw new CheckpointError('ERR_CHECKPOINT_TRUNCATED', `${path}: header claims ${n} bytes, the file is shorter`);
    try {
      return JSON.parse(json.toString('utf8'));
    } catch (err) {
      throw new CheckpointError('ERR_CHECKPOINT_FORMAT', `${path}: header is not JSON (${(err as Error).message})`);
    }
  } finally {
    closeSync(fd);
  }
}

function bytesOf(x: Float32Array): Uint8Array {
  return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** fsync the folder, so the rename itself survives a crash (not possible on every platform). */
function syncFolder(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Windows cannot open folders; the rename is still atomic there.
  } finally {
    if (fd !== null) closeSync(fd);
  }
}

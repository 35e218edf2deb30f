import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import type { Dataset, DatasetSplit } from './dataset.js';
import { DataError } from './errors.js';
import { type TextTokenizer, textWindows, type TokenizedText } from './text.js';

/**
 * A packed dataset (`ringtrain data pack`): a folder with `index.json` and, per split, fixed-size
 * binary shards of rows (one byte or one float32 per value) and a labels file. Training reads the
 * rows it needs by positional reads, never the whole set, so a worker's memory does not grow with
 * the dataset; the floats of a batch are made in the Batcher's buffer.
 */
export const PACK_FORMAT = 'ringtrain-pack/1';
/** Rows per shard are chosen so that a shard holds about this many bytes. */
const SHARD_BYTES = 64 << 20;

/** The index's schema, built when a pack is read (training from memory never needs it). */
function defineIndexSchema() {
  const shardSchema = z.strictObject({ file: z.string().regex(/^[\w.-]+$/), rows: z.number().int().positive(), bytes: z.number().int().positive(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
  const fileName = z.string().regex(/^[\w.-]+$/);
  const sha = z.string().regex(/^[0-9a-f]{64}$/);
  const splitSchema = z.strictObject({ size: z.number().int().min(0), labels: fileName, labelsSha256: sha, crc: fileName, crcSha256: sha, shards: z.array(shardSchema) });
  return z.strictObject({
    format: z.literal(PACK_FORMAT),
    name: z.string(),
    features: z.number().int().positive().max(1 << 24),
    dtype: z.enum(['uint8', 'float32']),
    /** What each byte stands for (uint8 packs). */
    codeValues: z.array(z.number()).length(256).optional(),
    shape: z.array(z.number().int().positive()).optional(),
    classes: z.number().int().min(0),
    classNames: z.array(z.string()).optional(),
    train: splitSchema,
    test: splitSchema,
  });
}
let indexSchema: ReturnType<typeof defineIndexSchema> | undefined;
type PackIndex = z.infer<ReturnType<typeof defineIndexSchema>>;

/** One split to pack, produced row block by row block (so a pack may be larger than memory). */
export interface PackSource {
  size: number;
  labels: Int32Array;
  /** Writes rows [start, start + rows) as bytes into out (rows × rowBytes). */
  fill(start: number, rows: number, out: Uint8Array): void;
}

/** What a pack describes besides its rows. */
export interface PackMeta {
  name: string;
  features: number;
  dtype: 'uint8' | 'float32';
  codeValues?: Float32Array;
  shape?: readonly number[];
  classes: number;
  classNames?: readonly string[];
}

/** Writes a pack from row sources: shards, labels, then the index last (a half-written pack has no index). */
export function createPack(dir: string, meta: PackMeta, sources: { train: PackSource; test: PackSource }): PackIndex {
  mkdirSync(dir, { recursive: true });
  const rowBytes = meta.features * (meta.dtype === 'uint8' ? 1 : 4);
  const rowsPerShard = Math.max(1, Math.floor(SHARD_BYTES / rowBytes));
  const writeSplit = (src: PackSource, which: 'train' | 'test'): PackIndex['train'] => {
    const shards: PackIndex['train']['shards'] = [];
    const buffer = new Uint8Array(Math.min(rowsPerShard, Math.max(1, src.size)) * rowBytes);
    const crcs = new Uint32Array(src.size);
    for (let start = 0, s = 0; start < src.size; start += rowsPerShard, s++) {
      const rows = Math.min(rowsPerShard, src.size - start);
      const data = buffer.subarray(0, rows * rowBytes);
      src.fill(start, rows, data);
      for (let r = 0; r < rows; r++) crcs[start + r] = crc32(data.subarray(r * rowBytes, (r + 1) * rowBytes));
      const file = `${which}-${String(s).padStart(5, '0')}.bin`;
      writeAtomically(join(dir, file), data);
      shards.push({ file, rows, bytes: data.byteLength, sha256: sha256(data) });
    }
    const labels = new Uint8Array(Int32Array.from(src.labels).buffer);
    writeAtomically(join(dir, `${which}-labels.bin`), labels);
    const crcBytes = new Uint8Array(crcs.buffer);
    writeAtomically(join(dir, `${which}-crc.bin`), crcBytes);
    return { size: src.size, labels: `${which}-labels.bin`, labelsSha256: sha256(labels), crc: `${which}-crc.bin`, crcSha256: sha256(crcBytes), shards };
  };
  const index: PackIndex = {
    format: PACK_FORMAT,
    name: meta.name,
    features: meta.features,
    dtype: meta.dtype,
    ...(meta.codeValues ? { codeValues: Array.from(meta.codeValues) } : {}),
    ...(meta.shape ? { shape: [...meta.shape] } : {}),
    classes: meta.classes,
    ...(meta.classNames ? { classNames: [...meta.classNames] } : {}),
    train: writeSplit(sources.train, 'train'),
    test: writeSplit(sources.test, 'test'),
  };
  writeAtomically(join(dir, 'index.json'), Buffer.from(`${JSON.stringify(index, null, 1)}\n`));
  return index;
}

/** Writes an in-memory split as a pack (bytes stay bytes; floats are written as float32). */
export function writePacked(dir: string, split: DatasetSplit, name: string): PackIndex {
  if (split.scaling) throw new DataError('ERR_DATA_CONFIG', `${name}: a rescaled dataset cannot be packed (pack the source, and rescale when training)`);
  const { train, test } = split;
  if (!train.labels || !test.labels) throw new DataError('ERR_DATA_CONFIG', `${name}: only classification data can be packed (it has no labels)`);
  const bytes = train.codes !== undefined;
  if ((test.codes !== undefined) !== bytes || test.features !== train.features) throw new DataError('ERR_DATA_FORMAT', `${name}: test and train must hold the same kind and number of values`);
  if (bytes && String(train.codeValues) !== String(test.codeValues)) throw new DataError('ERR_DATA_FORMAT', `${name}: test and train bytes stand for different values`);
  const source = (ds: Dataset): PackSource => ({
    size: ds.size,
    labels: ds.labels!,
    fill: (start, rows, out) => out.set(bytes ? ds.codes!.subarray(start * ds.features, (start + rows) * ds.features) : new Uint8Array(ds.x.buffer, ds.x.byteOffset + start * ds.features * 4, rows * ds.features * 4)),
  });
  const meta: PackMeta = { name, features: train.features, dtype: bytes ? 'uint8' : 'float32', ...(bytes ? { codeValues: train.codeValues } : {}), ...(train.shape ? { shape: train.shape } : {}), classes: Math.max(train.classes, test.classes), ...(train.classNames ? { classNames: train.classNames } : {}) };
  return createPack(dir, meta, { train: source(train), test: source(test) });
}

/**
 * A packed text (`ringtrain data pack text:FILE`): its tokens, tokenized once (a BPE learned once),
 * as little-endian uint16 files for the training and validation splits, and an index with the
 * tokenizer. Windows are cut when it is read, at the model's context.
 */
export const TEXT_PACK_FORMAT = 'ringtrain-text-pack/1';

function defineTextIndexSchema() {
  const split = z.strictObject({ tokens: z.number().int().min(0).max(1 << 30), file: z.string().regex(/^[\w.-]+$/), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
  return z.strictObject({
    format: z.literal(TEXT_PACK_FORMAT),
    name: z.string(),
    classNames: z.array(z.string()).min(2).max(1 << 16),
    tokenizer: z.discriminatedUnion('type', [
      z.strictObject({ type: z.literal('characters') }),
      z.strictObject({ type: z.literal('bpe'), vocabSize: z.number().int(), merges: z.array(z.number().int().min(0).max(65535)).max(2 * 65280), charsPerToken: z.number().positive() }),
    ]),
    train: split,
    val: split,
  });
}
type TextPackIndex = z.infer<ReturnType<typeof defineTextIndexSchema>>;

/** Writes a tokenized text as a text pack: the token files, then the index last. */
export function writeTextPack(dir: string, tokens: TokenizedText, name: string, tokenizer: TextTokenizer): TextPackIndex {
  mkdirSync(dir, { recursive: true });
  const write = (which: 'train' | 'val', ids: Uint16Array): TextPackIndex['train'] => {
    const bytes = new Uint8Array(ids.length * 2);
    const view = new DataView(bytes.buffer);
    ids.forEach((id, i) => view.setUint16(2 * i, id, true));
    const file = `${which}-tokens.bin`;
    writeAtomically(join(dir, file), bytes);
    return { tokens: ids.length, file, sha256: sha256(bytes) };
  };
  const index: TextPackIndex = {
    format: TEXT_PACK_FORMAT,
    name,
    classNames: tokens.symbols,
    tokenizer: tokens.merges ? { type: 'bpe', vocabSize: tokenizer.type === 'bpe' ? tokenizer.vocabSize : 256 + tokens.merges.length / 2, merges: Array.from(tokens.merges), charsPerToken: tokens.charsPerToken ?? 1 } : { type: 'characters' },
    train: write('train', tokens.train),
    val: write('val', tokens.val),
  };
  writeAtomically(join(dir, 'index.json'), Buffer.from(`${JSON.stringify(index)}\n`));
  return index;
}

/** What reading a text pack takes: the model's context, and the tokenizer the job records (which must be the pack's). */
export interface TextPackOptions {
  context: number;
  evalWindows?: number;
  tokenizer?: TextTokenizer;
}

function loadTextPack(dir: string, raw: unknown, options: TextPackOptions | undefined): DatasetSplit {
  const indexFile = join(dir, 'index.json');
  const parsed = defineTextIndexSchema().safeParse(raw);
  if (!parsed.success) throw new DataError('ERR_DATA_FORMAT', `${indexFile}: not a ringtrain text pack index (${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')})`);
  const index = parsed.data;
  if (!options) throw new DataError('ERR_DATA_CONFIG', `${dir} holds a packed text: it trains a language model (--model gpt), whose context cuts its windows`);
  const packMerges = index.tokenizer.type === 'bpe' ? index.tokenizer.merges : null;
  if (options.tokenizer?.type === 'bpe' && options.tokenizer.merges && String(options.tokenizer.merges) !== String(packMerges)) {
    throw new DataError('ERR_DATA_CONFIG', `${dir}: the job's BPE merges are not the ones its text was packed with; pack the text again with this tokenizer, or leave the job's tokenizer out`);
  }
  if (index.tokenizer.type === 'bpe' && index.classNames.length !== 256 + index.tokenizer.merges.length / 2) throw new DataError('ERR_DATA_FORMAT', `${indexFile}: ${index.tokenizer.merges.length / 2} merges make ${256 + index.tokenizer.merges.length / 2} tokens, the index names ${index.classNames.length}`);
  const read = (which: 'train' | 'val'): Uint16Array => {
    const { tokens, file, sha256: sum } = index[which];
    const path = join(dir, file);
    let raw: Buffer;
    try {
      raw = readFileSync(path);
    } catch (err) {
      throw new DataError('ERR_DATA_NOT_FOUND', `${path}: the ${which} tokens cannot be read (${(err as NodeJS.ErrnoException).code})`);
    }
    if (raw.length !== tokens * 2) throw new DataError(raw.length < tokens * 2 ? 'ERR_DATA_TRUNCATED' : 'ERR_DATA_FORMAT', `${path}: ${raw.length} bytes for ${tokens} tokens of 2 bytes`);
    if (sha256(raw) !== sum) throw new DataError('ERR_DATA_FORMAT', `${path}: SHA-256 does not match the index (a corrupt token file)`);
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const ids = new Uint16Array(tokens);
    for (let i = 0; i < tokens; i++) ids[i] = view.getUint16(2 * i, true);
    const bad = ids.findIndex((id) => id >= index.classNames.length);
    if (bad >= 0) throw new DataError('ERR_DATA_FORMAT', `${path}: token ${bad} is ${ids[bad]}, past the vocabulary of ${index.classNames.length}`);
    return ids;
  };
  const tokens: TokenizedText = {
    train: read('train'),
    val: read('val'),
    symbols: index.classNames,
    ...(packMerges ? { merges: Uint16Array.from(packMerges), charsPerToken: (index.tokenizer as { charsPerToken: number }).charsPerToken } : {}),
  };
  return textWindows(`packed:${dir}`, tokens, options);
}

/** Opens a packed folder: reads and checks its index and each shard's size; the rows stay on disk. A text pack is cut into windows of `text.context`. */
export function loadPacked(dir: string, text?: TextPackOptions): DatasetSplit {
  const indexFile = join(dir, 'index.json');
  if (!existsSync(indexFile)) throw new DataError('ERR_DATA_NOT_FOUND', `${dir}: no index.json (make a packed dataset with: ringtrain data pack <source> ${dir})`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(indexFile, 'utf8'));
  } catch (err) {
    throw new DataError('ERR_DATA_FORMAT', `${indexFile}: not a ringtrain pack index (${(err as Error).message})`);
  }
  if ((raw as { format?: unknown } | null)?.format === TEXT_PACK_FORMAT) return loadTextPack(dir, raw, text);
  if (text) throw new DataError('ERR_DATA_CONFIG', `${dir} holds no text (it is a pack of rows): a language model trains on text (ringtrain data pack text:FILE)`);
  const parsed = (indexSchema ??= defineIndexSchema()).safeParse(raw);
  if (!parsed.success) throw new DataError('ERR_DATA_FORMAT', `${indexFile}: not a ringtrain pack index (${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')})`);
  const index = parsed.data;
  if (index.dtype === 'uint8' && !index.codeValues) throw new DataError('ERR_DATA_FORMAT', `${indexFile}: a uint8 pack needs codeValues`);
  const open = (which: 'train' | 'test'): Dataset => new PackedSplit(dir, index, which).dataset();
  return { train: open('train'), test: open('test') };
}

/**
 * One split of a pack: shards opened once, rows read where they lie. Each row read is checked
 * against its CRC-32 (a corrupt row is an error naming the shard and the row); the shards'
 * SHA-256 in the index are for checking a whole pack, which training never reads whole.
 */
class PackedSplit {
  private readonly rowBytes: number;
  private readonly starts: number[] = [];
  private readonly fds: number[] = [];
  private crcs: Uint32Array = new Uint32Array(0);
  private readonly row: Uint8Array;
  private readonly codeValues: Float32Array | null;

  constructor(
    private readonly dir: string,
    private readonly index: PackIndex,
    private readonly which: 'train' | 'test',
  ) {
    const split = index[which];
    this.rowBytes = index.features * (index.dtype === 'uint8' ? 1 : 4);
    this.row = new Uint8Array(this.rowBytes);
    this.codeValues = index.codeValues ? Float32Array.from(index.codeValues) : null;
    let start = 0;
    for (const [s, shard] of split.shards.entries()) {
      const path = join(dir, shard.file);
      if (shard.bytes !== shard.rows * this.rowBytes) throw new DataError('ERR_DATA_FORMAT', `${join(dir, 'index.json')}: shard ${s} (${shard.file}) claims ${shard.rows} rows in ${shard.bytes} bytes, rows are ${this.rowBytes} bytes`);
      let fd: number;
      try {
        fd = openSync(path, 'r');
      } catch (err) {
        throw new DataError('ERR_DATA_NOT_FOUND', `${path}: shard ${s} of ${which} cannot be opened (${(err as NodeJS.ErrnoException).code})`);
      }
      const size = fstatSync(fd).size;
      if (size !== shard.bytes) {
        closeSync(fd);
        throw new DataError(size < shard.bytes ? 'ERR_DATA_TRUNCATED' : 'ERR_DATA_FORMAT', `${path}: shard ${s} of ${which} has ${size} bytes, the index says ${shard.bytes}`);
      }
      this.fds.push(fd);
      this.starts.push(start);
      start += shard.rows;
    }
    if (start !== split.size) throw new DataError('ERR_DATA_FORMAT', `${join(dir, 'index.json')}: the ${which} shards hold ${start} rows, the index says ${split.size}`);
  }

  /** A per-split file named by the index, checked against its SHA-256 and size. */
  private sideFile(name: string, sum: string, bytes: number, what: string): Buffer {
    const path = join(this.dir, name);
    let raw: Buffer;
    try {
      raw = readFileSync(path);
    } catch (err) {
      throw new DataError('ERR_DATA_NOT_FOUND', `${path}: the ${this.which} ${what} cannot be read (${(err as NodeJS.ErrnoException).code})`);
    }
    if (raw.length !== bytes) throw new DataError(raw.length < bytes ? 'ERR_DATA_TRUNCATED' : 'ERR_DATA_FORMAT', `${path}: ${raw.length} bytes for ${this.index[this.which].size} ${what}`);
    if (sha256(raw) !== sum) throw new DataError('ERR_DATA_FORMAT', `${path}: SHA-256 does not match the index (a corrupt ${what} file)`);
    return raw;
  }

  dataset(): Dataset {
    const { index, which } = this;
    const split = index[which];
    const labelsPath = join(this.dir, split.labels);
    const labels = new Int32Array(Uint8Array.from(this.sideFile(split.labels, split.labelsSha256, split.size * 4, 'labels')).buffer);
    this.crcs = new Uint32Array(Uint8Array.from(this.sideFile(split.crc, split.crcSha256, split.size * 4, 'row checksums')).buffer);
    const bad = labels.findIndex((l) => l < 0 || l >= index.classes);
    if (bad >= 0) throw new DataError('ERR_DATA_FORMAT', `${labelsPath}: label ${labels[bad]} at row ${bad} is outside 0..${index.classes - 1}`);
    const self = this;
    let floats: Float32Array | null = null;
    return {
      name: `packed:${this.dir}/${which}`,
      size: split.size,
      features: index.features,
      labels,
      classes: index.classes,
      targetSize: 0,
      ...(index.classNames ? { classNames: index.classNames } : {}),
      ...(index.shape ? { shape: index.shape } : {}),
      readRow: (i: number, out: Float32Array, at: number) => self.readRow(i, out, at),
      // All the floats at once only for what truly needs them (an export), never in training.
      get x(): Float32Array {
        if (!floats) {
          floats = new Float32Array(split.size * index.features);
          for (let i = 0; i < split.size; i++) self.readRow(i, floats, i * index.features);
        }
        return floats;
      },
    };
  }

  /** Row i as floats at out[at ...], by one positional read. */
  readRow(i: number, out: Float32Array, at: number): void {
    let s = this.starts.length - 1;
    while (this.starts[s] > i) s--;
    const position = (i - this.starts[s]) * this.rowBytes;
    const got = readSync(this.fds[s], this.row, 0, this.rowBytes, position);
    const file = join(this.dir, this.index[this.which].shards[s].file);
    if (got !== this.rowBytes) throw new DataError('ERR_DATA_TRUNCATED', `${file}: shard ${s} ended at row ${i} (read ${got} of ${this.rowBytes} bytes)`);
    if (crc32(this.row) !== this.crcs[i]) throw new DataError('ERR_DATA_FORMAT', `${file}: row ${i - this.starts[s]} of shard ${s} (${this.which} sample ${i}) does not match its CRC-32 (a corrupt shard)`);
    const f = this.index.features;
    if (this.codeValues) {
      const table = this.codeValues;
      for (let k = 0; k < f; k++) out[at + k] = table[this.row[k]];
    } else {
      const values = new Float32Array(this.row.buffer, 0, f);
      out.set(values, at);
    }
  }

}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function writeAtomically(path: string, data: Uint8Array): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    for (let done = 0; done < data.length; ) done += writeSync(fd, data, done, data.length - done);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}


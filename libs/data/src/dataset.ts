import { DataError } from './errors.js';

/**
 * Samples in memory: `size` rows of `features` floats, with class labels or regression targets.
 * Images are stored as they came, one byte per value (`codes`, each standing for `codeValues[code]`):
 * a quarter of the memory, and batches become floats one at a time (the Batcher). Their `x` is
 * made only if something asks for all the floats at once.
 */
export interface Dataset {
  readonly name: string;
  readonly size: number;
  readonly features: number;
  readonly x: Float32Array;
  /** One byte per value, when the samples are stored as bytes (images). */
  readonly codes?: Uint8Array;
  /** What each byte stands for (256 floats; v/255 for pixels). */
  readonly codeValues?: Float32Array;
  /** Reads sample i as floats into out[at…], when the samples stay on disk (a packed dataset). */
  readonly readRow?: (i: number, out: Float32Array, at: number) => void;
  /** Class of each sample (classification), else undefined; `labelWidth` of them per sample for a sequence. */
  readonly labels?: Int32Array;
  /** Labels per sample: a text window's next token at each of its positions (default 1). */
  readonly labelWidth?: number;
  /** Number of classes; 0 for regression. */
  readonly classes: number;
  /** `size` rows of `targetSize` floats (regression), else undefined. */
  readonly targets?: Float32Array;
  readonly targetSize: number;
  /** The name of each class, when the data named them (CSV string labels, image folders). */
  readonly classNames?: readonly string[];
  /** [C, H, W] of a sample when the samples are images (stored channel by channel, as convolutions read them). */
  readonly shape?: readonly number[];
}

export interface DatasetSplit {
  train: Dataset;
  test: Dataset;
  /** How the features were rescaled (from the training set), if they were. */
  scaling?: { shift: number[]; scale: number[] };
  /** The merges of the byte-level BPE a text was tokenized with (learned from its training split, or given). */
  merges?: Uint16Array;
  /** Characters per token of the validation text, for a BPE (bits per character = nats per token / ln 2 / this). */
  charsPerToken?: number;
}

/** A dataset of byte-coded values; its floats (`x`) are made on first use, once. */
export function byteDataset(meta: Omit<Dataset, 'x' | 'codes' | 'codeValues'>, codes: Uint8Array, codeValues: Float32Array): Dataset {
  if (codes.length !== meta.size * meta.features) throw new DataError('ERR_DATA_FORMAT', `${meta.name}: ${codes.length} bytes for ${meta.size} samples of ${meta.features} values`);
  let floats: Float32Array | null = null;
  return {
    ...meta,
    codes,
    codeValues,
    get x(): Float32Array {
      if (!floats) {
        floats = new Float32Array(codes.length);
        for (let i = 0; i < codes.length; i++) floats[i] = codeValues[codes[i]];
      }
      return floats;
    },
  };
}

/** Everything but the values, read without making a byte dataset's floats. */
function metaOf(ds: Dataset): Omit<Dataset, 'x' | 'codes' | 'codeValues'> {
  const out: Record<string, unknown> = {};
  for (const [k, d] of Object.entries(Object.getOwnPropertyDescriptors(ds))) if (k !== 'x' && k !== 'codes' && k !== 'codeValues') out[k] = d.value;
  return out as unknown as Omit<Dataset, 'x' | 'codes' | 'codeValues'>;
}

/** The same samples with another class count (train and test agree on it), without touching the values. */
export function withClasses(ds: Dataset, classes: number): Dataset {
  if (ds.codes) return byteDataset({ ...metaOf(ds), classes }, ds.codes, ds.codeValues!);
  return { ...metaOf(ds), x: ds.x, classes };
}

/** The same samples as floats (for what rescales every value in place). */
export function asFloats(ds: Dataset): Dataset {
  return ds.codes ? { ...metaOf(ds), x: ds.x } : ds;
}

/** The rows `indices` of `ds`, copied into a new dataset (bytes stay bytes). */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = ds.name): Dataset {
  const n = indices.length;
  if (ds.codes) {
    const codes = new Uint8Array(n * ds.features);
    const labels = ds.labels ? new Int32Array(n) : undefined;
    for (let r = 0; r < n; r++) {
      const i = indices[r];
      if (!(i >= 0 && i < ds.size)) throw new DataError('ERR_DATA_CONFIG', `subset: index ${i} outside 0..${ds.size - 1} of ${ds.name}`);
      codes.set(ds.codes.subarray(i * ds.features, (i + 1) * ds.features), r * ds.features);
      if (labels) labels[r] = ds.labels![i];
    }
    return byteDataset({ ...metaOf(ds), name, size: n, labels }, codes, ds.codeValues!);
  }
  const x = new Float32Array(n * ds.features);
  const labels = ds.labels ? new Int32Array(n) : undefined;
  const targets = ds.targets ? new Float32Array(n * ds.targetSize) : undefined;
  for (let r = 0; r < n; r++) {
    const i = indices[r];
    if (!(i >= 0 && i < ds.size)) throw new DataError('ERR_DATA_CONFIG', `subset: index ${i} outside 0..${ds.size - 1} of ${ds.name}`);
    x.set(ds.x.subarray(i * ds.features, (i + 1) * ds.features), r * ds.features);
    if (labels) labels[r] = ds.labels![i];
    if (targets) targets.set(ds.targets!.subarray(i * ds.targetSize, (i + 1) * ds.targetSize), r * ds.targetSize);
  }
  return { name, size: n, features: ds.features, x, labels, classes: ds.classes, targets, targetSize: ds.targetSize, ...(ds.classNames ? { classNames: ds.classNames } : {}), ...(ds.shape ? { shape: ds.shape } : {}) };
}

/** Classes from labels 0..max; refuses negative or fractional labels, naming the row. */
export function countClasses(labels: Int32Array, source: string): number {
  let max = -1;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] < 0) throw new DataError('ERR_DATA_FORMAT', `${source}: label ${labels[i]} at row ${i} is negative`);
    if (labels[i] > max) max = labels[i];
  }
  return max + 1;
}

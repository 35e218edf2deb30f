import { DataError } from './errors.js';

/** Samples in memory: `size` rows of `features` floats, with class labels or regression targets. */
export interface Dataset {
  readonly name: string;
  readonly size: number;
  readonly features: number;
  readonly x: Float32Array;
  /** Class of each sample (classification), else undefined. */
  readonly labels?: Int32Array;
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
}

/** The rows `indices` of `ds`, copied into a new dataset. */
export function subset(ds: Dataset, indices: ArrayLike<number>, name = ds.name): Dataset {
  const n = indices.length;
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

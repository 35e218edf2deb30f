import type { DatasetSplit } from './dataset.js';

export type Normalization = 'none' | 'standardize' | 'minmax';

/** What a normalization did: feature j became (x[j] − shift[j]) / scale[j]. New inputs need the same (predict). */
export interface FeatureScaling {
  shift: number[];
  scale: number[];
}

/**
 * Rescales features in place with statistics from the training set only (so the test set
 * does not leak into training): standardize to mean 0, std 1, or min-max to [0, 1]. Returns the
 * scaling, or null for 'none'.
 */
export function normalize(split: DatasetSplit, how: Normalization): FeatureScaling | null {
  if (how === 'none') return null;
  const { train, test } = split;
  const f = train.features;
  const a = new Float64Array(f);
  const b = new Float64Array(f);
  if (how === 'standardize') {
    for (let i = 0; i < train.size; i++) for (let j = 0; j < f; j++) a[j] += train.x[i * f + j];
    for (let j = 0; j < f; j++) a[j] /= Math.max(1, train.size);
    for (let i = 0; i < train.size; i++) for (let j = 0; j < f; j++) b[j] += (train.x[i * f + j] - a[j]) ** 2;
    for (let j = 0; j < f; j++) b[j] = Math.sqrt(b[j] / Math.max(1, train.size)) || 1;
  } else {
    a.fill(Infinity);
    b.fill(-Infinity);
    for (let i = 0; i < train.size; i++)
      for (let j = 0; j < f; j++) {
        a[j] = Math.min(a[j], train.x[i * f + j]);
        b[j] = Math.max(b[j], train.x[i * f + j]);
      }
    for (let j = 0; j < f; j++) b[j] = b[j] - a[j] || 1;
  }
  const scaling = { shift: Array.from(a), scale: Array.from(b) };
  for (const ds of [train, test]) applyScaling(ds.x, scaling);
  return scaling;
}

/** Applies a scaling to rows of features, in place. */
export function applyScaling(x: Float32Array, { shift, scale }: FeatureScaling): void {
  const f = shift.length;
  for (let i = 0; i < x.length; i++) x[i] = (x[i] - shift[i % f]) / scale[i % f];
}

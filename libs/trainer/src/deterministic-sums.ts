// Deterministic mode's parts that need no trainer: the exact search for each tensor's largest
// exponent over the ranks, and the dropout seed of a micro-batch (the trainer's deterministic step
// uses them; docs/core.md, "Deterministic mode").

import { mix } from '@ringtrain/data';

/** The dropout seed of micro-batch `index` of `step`: the data order's hash, so nearby values give unrelated streams. */
export function microBatchSeed(seed: number, step: number, index: number): number {
  return mix(seed, step, index);
}

/** The binary exponents a deterministic step counts: E with max|g| ≤ 2^E, from below float32's smallest to past its largest. */
const EXPONENTS = { low: -160, slots: 300 } as const;

/**
 * Per tensor, a one-hot count of E = ⌈log₂ max⌉ (its own slot past the exponents for a NaN or
 * ±Inf; nothing for an all-zero tensor). Summed over the ranks, exactly, it says each tensor's
 * largest exponent in any micro-batch, and whether any is not finite.
 */
export function exponentCounts(max: Float32Array): Float32Array {
  const width = EXPONENTS.slots + 1;
  const counts = new Float32Array(max.length * width);
  max.forEach((a, k) => {
    if (!Number.isFinite(a)) counts[k * width + EXPONENTS.slots] = 1;
    else if (a > 0) counts[k * width + Math.ceil(Math.log2(a)) - EXPONENTS.low] = 1;
  });
  return counts;
}

/** From summed counts: each tensor's bound 2^E (0 for all zeros, NaN when a value was not finite). */
export function largestExponents(counts: Float32Array, tensors: number): Float64Array {
  const width = EXPONENTS.slots + 1;
  const bounds = new Float64Array(tensors);
  for (let k = 0; k < tensors; k++) {
    if (counts[k * width + EXPONENTS.slots] > 0) bounds[k] = Number.NaN;
    else for (let e = EXPONENTS.slots - 1; e >= 0; e--) if (counts[k * width + e] > 0) {
      bounds[k] = 2 ** (e + EXPONENTS.low);
      break;
    }
  }
  return bounds;
}

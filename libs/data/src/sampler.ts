// Data order that depends only on (seed, epoch): any rank, any world size, any resume computes
// the same permutation with no state to save.

/** 32-bit mix of three words (a splitmix/murmur-style finaliser). */
function mix(a: number, b: number, c: number): number {
  let h = Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x632be5ab, 0xc2b2ae35) ^ Math.imul(c ^ 0x27d4eb2f, 0x165667b1);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A permutation of 0..n−1 determined by (seed, epoch): Fisher–Yates driven by a stateless hash. */
export function epochPermutation(n: number, seed: number, epoch: number): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const s = seed >>> 0;
  const e = epoch >>> 0;
  for (let i = n - 1; i > 0; i--) {
    const u = (mix(s, e, 2 * i) * 2 ** 21 + (mix(s, e, 2 * i + 1) >>> 11)) / 2 ** 53;
    const j = Math.floor(u * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/** How an epoch is cut into global batches of worldSize·batchPerRank samples. */
export interface ShardPlan {
  /** Global batches per epoch: the same on every rank, so no rank waits on another. */
  stepsPerEpoch: number;
  /** Samples per rank per step. */
  batchPerRank: number;
  worldSize: number;
}

/**
 * Global batch g of an epoch covers order[g·N·b, (g+1)·N·b) and rank r takes its r-th contiguous
 * slice of b. The tail that does not fill a global batch is dropped (as DistributedSampler with
 * drop_last), so every rank runs exactly the same number of steps.
 */
export function shardPlan(size: number, batchPerRank: number, worldSize: number): ShardPlan {
  return { stepsPerEpoch: Math.floor(size / (batchPerRank * worldSize)), batchPerRank, worldSize };
}

// Data order that depends only on (seed, epoch): any rank, any world size, any resume computes
// the same permutation with no state to save.

/** 32-bit mix of three words (a splitmix/murmur-style finaliser): nearby inputs give unrelated outputs. */
export function mix(a: number, b: number, c: number): number {
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

/** How an epoch is cut into global batches of a fixed number of samples. */
export interface ShardPlan {
  /** Global batches per epoch: the same on every rank, so no rank waits on another. */
  stepsPerEpoch: number;
  /** Samples per step over all ranks: fixed for the run, whatever the number of workers. */
  globalBatch: number;
}

/**
 * Global batch g of an epoch covers order[g·B, (g+1)·B). The tail that does not fill a global
 * batch is dropped (as DistributedSampler with drop_last), so every rank runs exactly the same
 * number of steps.
 */
export function shardPlan(size: number, globalBatch: number): ShardPlan {
  return { stepsPerEpoch: Math.floor(size / globalBatch), globalBatch };
}

/** One rank's slice of a global batch: its offset in the batch and its number of samples. */
export interface RankSlice {
  start: number;
  count: number;
}

/**
 * Rank r of N takes samples [⌊B·r/N⌋, ⌊B·(r+1)/N⌋) of each global batch of B: contiguous slices
 * that cover the batch exactly once, even (B/N each) when N divides B, at most one apart otherwise.
 */
export function rankSlice(globalBatch: number, rank: number, worldSize: number): RankSlice {
  const start = Math.floor((globalBatch * rank) / worldSize);
  return { start, count: Math.floor((globalBatch * (rank + 1)) / worldSize) - start };
}

export interface StragglerOptions {
  /** Reports per rank that make up the window (default 5). */
  window?: number;
  /** Slower than this multiple of the median rank is slow (default 1.5). */
  ratio?: number;
  /** Rounds in a row before a rank is flagged slow, or healthy again (default 3): "consistently". */
  consecutive?: number;
  /** And slower than the median by at least this much per step (default 0.5 ms): jitter on tiny steps is no straggler. */
  minExcessMs?: number;
}

export interface StragglerChange {
  rank: number;
  slow: boolean;
  /** The rank's window mean over the median's. */
  ratio: number;
}

export interface ComputeSpread {
  min: number;
  median: number;
  max: number;
}

/**
 * Flags ranks whose compute time per step (data + forward/backward: the part that is the rank's
 * own, not the all-reduce, where everyone waits for the slowest) stays above `ratio` × the median
 * rank's over a window of reports. The median is the lower one, so that in a ring of two the
 * faster rank is the reference.
 */
export class StragglerDetector {
  private readonly windows: number[][];
  private readonly streak: number[];
  private readonly slow: boolean[];
  private readonly window: number;
  private readonly ratio: number;
  private readonly consecutive: number;
  private readonly minExcessMs: number;
  private rounds = 0;

  constructor(
    readonly worldSize: number,
    options: StragglerOptions = {},
  ) {
    this.window = options.window ?? 5;
    this.ratio = options.ratio ?? 1.5;
    this.consecutive = options.consecutive ?? 3;
    this.minExcessMs = options.minExcessMs ?? 0.5;
    this.windows = Array.from({ length: worldSize }, () => []);
    this.streak = new Array(worldSize).fill(0);
    this.slow = new Array(worldSize).fill(false);
  }

  /** One rank's report: its compute milliseconds per step over the report's steps. */
  add(rank: number, msPerStep: number): void {
    const w = this.windows[rank];
    w.push(msPerStep);
    if (w.length > this.window) w.shift();
  }

  /** Window means per rank (NaN before a rank's first report). */
  means(): number[] {
    return this.windows.map((w) => (w.length ? w.reduce((s, x) => s + x, 0) / w.length : Number.NaN));
  }

  spread(): ComputeSpread | null {
    const m = this.means();
    if (m.some(Number.isNaN)) return null;
    const sorted = [...m].sort((a, b) => a - b);
    return { min: sorted[0], median: sorted[Math.floor((sorted.length - 1) / 2)], max: sorted[sorted.length - 1] };
  }

  isSlow(rank: number): boolean {
    return this.slow[rank];
  }

  /** After every rank has reported for a step: the ranks that became slow or healthy again. */
  evaluate(): StragglerChange[] {
    // The first window is warm-up (JIT compilation, caches): ranks differ there by chance.
    if (++this.rounds <= this.window) return [];
    const spread = this.spread();
    if (!spread || this.worldSize < 2 || spread.median <= 0) return [];
    const means = this.means();
    const changes: StragglerChange[] = [];
    for (let r = 0; r < this.worldSize; r++) {
      const ratio = means[r] / spread.median;
      const looksSlow = ratio > this.ratio && means[r] - spread.median > this.minExcessMs;
      if (looksSlow === this.slow[r]) {
        this.streak[r] = 0;
        continue;
      }
      if (++this.streak[r] >= this.consecutive) {
        this.slow[r] = looksSlow;
        this.streak[r] = 0;
        changes.push({ rank: r, slow: looksSlow, ratio });
      }
    }
    return changes;
  }
}

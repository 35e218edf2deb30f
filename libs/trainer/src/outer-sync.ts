import type { SyncConfig } from './job-config.js';

type Diloco = Extract<SyncConfig, { type: 'diloco' }>;

/** Where a round started: enough to come back to it (the trainer's step, epoch and cursor). */
export interface RoundStart {
  globalStep: number;
}

/**
 * DiLoCo's outer loop for one replica. A round starts from weights every replica shares (the
 * anchor); each takes `innerSteps` local steps; then the ring averages the pseudo-gradient
 * Δ = anchor − weights, and the outer optimizer (Nesterov momentum) moves the anchor:
 * v ← μ·v + Δ, weights ← anchor − lr·(Δ + μ·v). The same bits in give the same bits out on every
 * replica, so replicas are identical again at every round's end.
 */
export class OuterSync<S extends RoundStart = RoundStart> {
  /** The weights at the start of this round. */
  readonly anchor: Float32Array;
  private readonly delta: Float32Array;
  /** The round in progress, or null at a sync point (replicas identical). */
  round: S | null = null;

  constructor(
    readonly config: Diloco,
    /** The outer velocity: an optimizer slot, so that checkpoints and joining replicas carry it. */
    readonly momentum: Float32Array,
  ) {
    this.anchor = new Float32Array(momentum.length);
    this.delta = new Float32Array(momentum.length);
  }

  begin(values: Float32Array, start: S): void {
    this.anchor.set(values);
    this.round = start;
  }

  /** Whether the round ends after the step that made the step count `globalStep`. */
  due(globalStep: number, forced: boolean): boolean {
    return this.round !== null && (forced || globalStep - this.round.globalStep >= this.config.innerSteps);
  }

  /** Δ = (anchor − weights) × weight (a rank's share of the global batch, N·n/B), to be averaged. */
  pseudoGradient(values: Float32Array, weight: number): Float32Array {
    const d = this.delta;
    for (let i = 0; i < d.length; i++) d[i] = this.anchor[i] - values[i];
    if (weight !== 1) for (let i = 0; i < d.length; i++) d[i] *= weight;
    return d;
  }

  /** The outer step with the averaged Δ (in `pseudoGradient`'s buffer); ends the round. */
  apply(values: Float32Array): void {
    const { lr, momentum: mu } = this.config.outerOptimizer;
    const v = this.momentum;
    const d = this.delta;
    for (let i = 0; i < d.length; i++) {
      v[i] = Math.fround(mu * v[i] + d[i]);
      values[i] = this.anchor[i] - Math.fround(lr * Math.fround(d[i] + Math.fround(mu * v[i])));
    }
    this.round = null;
  }

  /** Back to the round's start: the anchor's weights; returns where the round started. */
  rewind(values: Float32Array): S | null {
    const start = this.round;
    if (start) values.set(this.anchor);
    this.round = null;
    return start;
  }
}

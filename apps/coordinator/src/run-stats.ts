import type { MessageOf } from '@ringtrain/protocol';

export interface EpochStats {
  trainLoss: number;
  testLoss: number;
  testAccuracy: number;
  testSamples: number;
}

/** A complete evaluation: the train loss is the epoch's so far. */
export interface EvaluationFigures extends EpochStats {
  epoch: number;
  step: number;
  atEpochEnd: boolean;
}

export interface RankTiming {
  rank: number;
  dataMs: number;
  computeMs: number;
  allreduceMs: number;
  optimizerMs: number;
}

/** What the coordinator knows of a run: progress, per-epoch evaluation, where each rank's time went. */
export class RunStats {
  step = 0;
  totalSteps = 0;
  epoch = 0;
  loss = 0;
  samples = 0;
  readonly epochs: EpochStats[] = [];
  readonly timing: RankTiming[];
  weightsHash = '';
  /** Checkpoints written during the run, oldest first. */
  readonly checkpoints: { step: number; path: string; stallMs: number; writeMs: number }[] = [];
  replicaChecks = 0;
  private startedAt = 0;
  private endedAt = 0;
  /** Evaluation shares being collected, by the step they were taken after. */
  private readonly evals = new Map<number, MessageOf<'evaluated'>[]>();
  /** World size of the generation whose evaluation shares are being collected, per step. */
  private readonly evalWorld = new Map<number, { generation: number; worldSize: number }>();
  /** Steps whose evaluation is complete. */
  private readonly evaluatedSteps = new Set<number>();
  /**
   * Per epoch, per rank: kept apart and added up in rank order at the epoch's end, so that the
   * figure does not depend on the order in which ranks' reports happened to arrive.
   */
  private readonly trainLoss = new Map<number, Map<number, { sum: number; n: number }>>();

  constructor(
    readonly worldSize: number,
    readonly totalEpochs: number,
  ) {
    this.timing = Array.from({ length: worldSize }, (_, rank) => ({ rank, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0 }));
  }

  start(totalSteps: number): void {
    this.totalSteps = totalSteps;
    this.startedAt = performance.now();
  }

  get seconds(): number {
    return ((this.endedAt || performance.now()) - this.startedAt) / 1000;
  }

  /** Training samples per second over all ranks since the start. */
  get samplesPerSecond(): number {
    return this.seconds > 0 ? this.samples / this.seconds : 0;
  }

  addProgress(p: MessageOf<'progress'>): void {
    const t = this.timing[p.rank];
    t.dataMs += p.dataMs;
    t.computeMs += p.computeMs;
    t.allreduceMs += p.allreduceMs;
    t.optimizerMs += p.optimizerMs;
    this.samples += p.samples;
    if (p.rank === 0) {
      this.step = p.step;
      this.epoch = p.epoch;
      this.loss = p.loss;
    }
    const ranks = this.trainLoss.get(p.epoch) ?? new Map<number, { sum: number; n: number }>();
    const l = ranks.get(p.rank) ?? { sum: 0, n: 0 };
    l.sum += p.loss * p.samples;
    l.n += p.samples;
    ranks.set(p.rank, l);
    this.trainLoss.set(p.epoch, ranks);
  }

  /**
   * Adds a rank's share of an evaluation (one per step: an epoch's end, or an `evalEvery` within
   * it); its figures once every rank of its generation (of `worldSize` ranks) has sent its share,
   * else null. Shares of an older generation are replaced. An epoch's end also sets `epochs`.
   */
  addEvaluation(e: MessageOf<'evaluated'>, worldSize = this.worldSize): EvaluationFigures | null {
    // Taken again after a fault that some rank saw it complete through: the first one stands.
    if (e.atEpochEnd ? this.epochs[e.epoch] : this.evaluatedSteps.has(e.step)) return null;
    const seen = this.evalWorld.get(e.step);
    if (!seen || seen.generation !== e.generation) {
      this.evalWorld.set(e.step, { generation: e.generation, worldSize });
      this.evals.set(e.step, []);
    }
    const list = this.evals.get(e.step)!;
    if (list.some((x) => x.rank === e.rank)) return null;
    list.push(e);
    if (list.length < this.evalWorld.get(e.step)!.worldSize) return null;
    this.evals.delete(e.step);
    this.evalWorld.delete(e.step);
    this.evaluatedSteps.add(e.step);
    const samples = list.reduce((s, x) => s + x.samples, 0);
    const byRank = [...(this.trainLoss.get(e.epoch) ?? new Map<number, { sum: number; n: number }>()).entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
    const l = byRank.reduce((t, x) => ({ sum: t.sum + x.sum, n: t.n + x.n }), { sum: 0, n: 0 });
    const figures: EpochStats = {
      trainLoss: l.n ? l.sum / l.n : NaN,
      testLoss: list.reduce((s, x) => s + x.lossSum, 0) / samples,
      testAccuracy: list.reduce((s, x) => s + x.correct, 0) / samples,
      testSamples: samples,
    };
    if (e.atEpochEnd) this.epochs[e.epoch] = figures;
    return { ...figures, epoch: e.epoch, step: e.step, atEpochEnd: e.atEpochEnd };
  }

  /** Epoch figures from before a coordinator restart (see RunJournal); nulls are epochs not evaluated then. */
  restoreEpochs(epochs: ({ trainLoss: number | null; testLoss: number | null; testAccuracy: number | null; testSamples: number } | null)[]): void {
    epochs.forEach((e, i) => {
      if (e && !this.epochs[i]) this.epochs[i] = { trainLoss: e.trainLoss ?? NaN, testLoss: e.testLoss ?? NaN, testAccuracy: e.testAccuracy ?? NaN, testSamples: e.testSamples };
    });
  }

  finish(weightsHash: string, steps: number, replicaChecks: number): void {
    this.endedAt = performance.now();
    this.weightsHash = weightsHash;
    this.step = steps;
    this.replicaChecks = replicaChecks;
  }

  toJSON(): object {
    return {
      worldSize: this.worldSize,
      steps: this.step,
      seconds: this.seconds,
      samplesPerSecond: this.samplesPerSecond,
      epochs: this.epochs,
      timing: this.timing,
      weightsHash: this.weightsHash,
      replicaChecks: this.replicaChecks,
      checkpoints: this.checkpoints,
    };
  }
}

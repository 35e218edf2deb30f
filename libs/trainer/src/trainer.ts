import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import {
  absMax,
  activationFloatsPerSample,
  allFinite,
  type Backend,
  type BatchResult,
  clipGradNorm,
  CoreError,
  createBackend,
  firstNonFinite,
  fixedPointHalves,
  fixedPointMean,
  createOptimizer,
  learningRate,
  Model,
  type Optimizer,
  Rng,
  type RngState,
  scale,
} from '@ringtrain/core';
import { Batcher, type Dataset, type DatasetSplit, epochPermutation, loadDataset, type RankSlice, rankSlice, type ShardPlan, shardPlan } from '@ringtrain/data';
import type { JobConfig } from './job-config.js';
import { exponentCounts, largestExponents, microBatchSeed } from './deterministic-sums.js';
import { OuterSync } from './outer-sync.js';

/**
 * Where training stands, all of it that is not a tensor: a checkpoint saves it, `restore` resumes
 * from it. `cursor` counts the samples of the current epoch's order already consumed, so a resume
 * with another number of workers continues from the same place in the same order.
 */
export interface TrainerState {
  globalStep: number;
  epoch: number;
  cursor: number;
  optimizerStep: number;
  dropoutRng: RngState;
}

/** Loss and accuracy over a set of samples. */
export interface EvalResult {
  loss: number;
  accuracy: number;
  samples: number;
}

/** A step's gradients: the batch's loss and accuracy, and the time spent gathering the batch. */
export interface StepResult extends BatchResult {
  dataMs: number;
}

/** One tensor's health at a sampled step: how big it is, its gradient, and how much the step moved it. */
export interface TensorHealth {
  name: string;
  role: 'weight' | 'bias';
  weightNorm: number;
  gradNorm: number;
  /** ‖Δw‖ / ‖w‖ of this step (about 1e-3 is healthy; far above, the step is too large). */
  updateRatio: number;
}

/** What was not finite on this replica, and where (the first tensor with a bad gradient). */
export interface NonFinite {
  /** 'gradientSum': every rank's own gradient was finite, but their sum in the all-reduce overflowed. */
  what: 'loss' | 'gradient' | 'gradientSum';
  tensor?: string;
  value: number;
}

/** The bad value's place, for messages: "loss", "gradient of layers.0.weight", … */
export function describeNonFinite(bad: Pick<NonFinite, 'what' | 'tensor'>): string {
  if (bad.what === 'loss') return 'loss';
  if (bad.what === 'gradientSum') return 'the all-reduced gradient (a sum of finite gradients overflowed)';
  return `gradient${bad.tensor ? ` of ${bad.tensor}` : ''}`;
}

export interface StepOptions {
  /** Runs between the gradients and the non-finite check (fault drills). */
  afterGradients?: () => void | Promise<void>;
  /** Told of every non-finite value before the rule acts on it. */
  onNonFinite?: (bad: NonFinite) => void;
  /** Also measure every tensor's norms (the health report). */
  health?: boolean;
  /** The run's last step: a DiLoCo round ends with it, so that the replicas end identical. */
  lastStep?: boolean;
  /**
   * Overlap: `reduce` each finished tail of the gradients of at least this many bytes while the
   * layers below still compute (0 or absent: one `reduce` after the whole backward pass).
   */
  bucketBytes?: number;
}

/**
 * All-reduces `grads` (a range of `params.grads` starting at `offset`) in place, averaging (or,
 * with `sum`, summing) over the ranks; resolves whether the result is finite on every rank.
 */
export type Reduce = (grads: Float32Array, offset: number, sum?: boolean) => Promise<boolean>;

/** What one data-parallel step did and where its time went. */
export interface StepOutcome extends StepResult {
  skipped: boolean;
  epochEnded: boolean;
  /** This rank's own non-finite value (the step was skipped on every rank), if any. */
  nonFinite: NonFinite | null;
  computeMs: number;
  allreduceMs: number;
  optimizerMs: number;
  tensors?: TensorHealth[];
}

export interface TrainerOptions {
  /** Which of `worldSize` data-parallel replicas this is (0 and 1 for a single process). */
  rank?: number;
  worldSize?: number;
  /**
   * Samples per step over all ranks (default batchSize × worldSize). Fixed for a run: when workers
   * come and go, the same global batch is split over whoever is there, so the trajectory does not change.
   */
  globalBatch?: number;
  /** A backend to share (benchmarks); otherwise one is created from `config.backend`. */
  backend?: Backend;
  /** A dataset already in memory; otherwise loaded from `config.dataset`. */
  data?: DatasetSplit;
}

/**
 * One replica's training state and its steps. A single process calls `trainStep` in a loop; a
 * cluster worker calls `computeGradients`, averages `model.params.grads` over the ring, then
 * `applyUpdate`, so every replica takes the same step.
 */
/** The optimizer slot that holds DiLoCo's outer velocity. */
const OUTER_MOMENTUM = 'outer_momentum';

export class Trainer {
  readonly model: Model;
  readonly optimizer: Optimizer;
  readonly backend: Backend;
  readonly data: DatasetSplit;
  readonly plan: ShardPlan;
  /** This replica's place: it changes when the membership does (see `place`). */
  rank: number;
  worldSize: number;
  private slice: RankSlice;
  /** Set when the backend was chosen automatically without the native one: how to enable it. */
  readonly backendHint?: string;
  /** Optimizer steps taken since the start of training. */
  globalStep = 0;
  /** The current epoch, and the samples of its order consumed so far. */
  epoch = 0;
  cursor = 0;
  private batcher: Batcher;
  private before: Float32Array | null = null;
  private readonly evalBatchers: Record<'train' | 'test', Batcher>;
  private order: Uint32Array | null = null;
  private orderEpoch = -1;
  /** Which batch the batcher holds (filled ahead during the previous all-reduce), or null. */
  private loaded: { epoch: number; position: number; count: number; n: number } | null = null;
  /** Deterministic mode: this rank's micro-batch gradients of the step, one after another, and the halves of their fixed-point sum. */
  private micro: Float32Array | null = null;
  private halves: Float32Array | null = null;
  private offsets: Int32Array | null = null;
  /** DiLoCo (`sync.type` "diloco"): the outer loop; null when every step all-reduces its gradients. */
  private readonly outer: OuterSync<TrainerState> | null;

  constructor(
    readonly config: JobConfig,
    options: TrainerOptions = {},
  ) {
    this.rank = options.rank ?? 0;
    this.worldSize = options.worldSize ?? 1;
    if (options.backend) this.backend = options.backend;
    else ({ backend: this.backend, hint: this.backendHint } = createBackend(config.backend));
    this.data = options.data ?? loadDataset(config.dataset);
    const { train } = this.data;
    if (train.features !== config.model.inputSize) {
      throw new CoreError('ERR_SHAPE', `model inputSize ${config.model.inputSize} does not match dataset ${train.name} with ${train.features} features`);
    }
    this.model = new Model(config.model, this.backend, { seed: config.seed });
    const classes = this.model.outputSize / this.model.positions;
    if (train.classes > 0 && config.model.loss === 'softmax_cross_entropy' && classes < train.classes) {
      throw new CoreError('ERR_SHAPE', `model has ${classes} outputs${this.model.positions > 1 ? ' per position' : ''} but dataset ${train.name} has ${train.classes} ${train.labelWidth ? 'tokens in its vocabulary' : 'classes'}`);
    }
    this.optimizer = createOptimizer(config.optimizer, this.model.params);
    if (config.sync?.type === 'diloco') {
      const momentum = this.model.params.newSlot();
      this.optimizer.state.slots[OUTER_MOMENTUM] = momentum;
      this.outer = new OuterSync<TrainerState>(config.sync, momentum);
    } else {
      this.outer = null;
    }
    const globalBatch = options.globalBatch ?? config.globalBatchSize ?? config.batchSize * this.worldSize;
    this.plan = shardPlan(train.size, globalBatch);
    if (this.plan.stepsPerEpoch === 0) {
      const perWorker = Math.floor(train.size / (globalBatch / config.batchSize));
      throw new CoreError('ERR_SHAPE', `dataset ${train.name} has ${train.size} samples, fewer than one global batch of ${globalBatch} (${globalBatch / config.batchSize} workers × batch ${config.batchSize}); ${perWorker > 0 ? `give --batch-size ${perWorker} or less` : 'give fewer workers'}`);
    }
    const alloc = (n: number): Float32Array => this.backend.alloc(n);
    this.slice = this.checkedSlice(this.rank, this.worldSize);
    this.batcher = new Batcher(train, Math.max(1, this.slice.count), alloc);
    // Evaluation batches hold at most EVAL_MEMORY_FLOATS of activations (a conv net at 1,000
    // samples a batch would take gigabytes and block its process for seconds).
    const evalBatch = Math.max(1, Math.min(config.evalBatchSize, Math.floor(EVAL_MEMORY_FLOATS / activationFloatsPerSample(this.model.spec))));
    this.evalBatchers = {
      train: new Batcher(train, evalBatch, alloc),
      test: new Batcher(this.data.test, evalBatch, alloc),
    };
  }

  get stepsPerEpoch(): number {
    return this.plan.stepsPerEpoch;
  }

  /** Samples in one step over all ranks. */
  get globalBatch(): number {
    return this.plan.globalBatch;
  }

  /** This rank's samples per step. */
  get localBatch(): number {
    return this.slice.count;
  }

  /** This rank's slice of each global batch: its offset in the batch and its number of samples. */
  get batchSlice(): RankSlice {
    return { ...this.slice };
  }

  /**
   * Moves this replica to another place in a new generation of the ring: the same global batch,
   * split over `worldSize` ranks (unevenly where it does not divide).
   */
  place(rank: number, worldSize: number): void {
    this.slice = this.checkedSlice(rank, worldSize);
    this.rank = rank;
    this.worldSize = worldSize;
    if (this.slice.count > this.batcher.capacity) this.batcher = new Batcher(this.data.train, this.slice.count, (n) => this.backend.alloc(n));
  }

  private checkedSlice(rank: number, worldSize: number): RankSlice {
    if (!Number.isInteger(worldSize) || worldSize < 1 || worldSize > this.globalBatch || !Number.isInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new CoreError('ERR_SHAPE', `rank ${rank} of ${worldSize} cannot take a slice of a global batch of ${this.globalBatch}`);
    }
    if (!this.config.deterministic) return rankSlice(this.globalBatch, rank, worldSize);
    // Whole micro-batches: each is computed alike whoever computes it.
    const m = this.config.batchSize;
    const micro = rankSlice(this.globalBatch / m, rank, worldSize);
    return { start: micro.start * m, count: micro.count * m };
  }

  state(): TrainerState {
    return { globalStep: this.globalStep, epoch: this.epoch, cursor: this.cursor, optimizerStep: this.optimizer.state.step, dropoutRng: this.model.dropoutRng.state() };
  }

  /**
   * Whether this replica is at a sync point, where every replica holds the same weights: always,
   * unless DiLoCo is inside a round. Replica checks, checkpoints, leaves and regroups wait for one.
   */
  get atSyncPoint(): boolean {
    return this.outer?.round == null;
  }

  /**
   * DiLoCo: back to the start of the round in progress (its weights, step and cursor; the inner
   * optimizer's state cleared), as every replica does when a round's ring breaks. Else nothing.
   */
  rewindRound(): void {
    const start = this.outer?.rewind(this.model.params.values);
    if (!start) return;
    this.resetInnerState();
    this.restore(start);
    this.loaded = null;
  }

  /** The inner optimizer starts each round afresh: its slots (not the outer velocity) zeroed. */
  private resetInnerState(): void {
    for (const [name, slot] of Object.entries(this.optimizer.state.slots)) if (name !== OUTER_MOMENTUM) slot.fill(0);
    this.optimizer.state.step = 0;
  }

  /** Continues from a saved state (the tensors are restored separately, into the flat buffers). */
  restore(s: TrainerState): void {
    if (s.cursor < 0 || s.cursor > this.data.train.size) throw new CoreError('ERR_STATE', `sample cursor ${s.cursor} is outside the training set of ${this.data.train.size}`);
    this.globalStep = s.globalStep;
    this.epoch = s.epoch;
    this.cursor = s.cursor + this.globalBatch > this.data.train.size ? 0 : s.cursor;
    if (this.cursor !== s.cursor) this.epoch++; // the saved epoch's tail is too short for this world size
    this.optimizer.state.step = s.optimizerStep;
    this.model.dropoutRng.setState(s.dropoutRng);
    if (this.outer) this.outer.round = null; // saved and shared states are sync points
  }

  /** The scheduled learning rate of the next step. */
  get learningRate(): number {
    return learningRate(this.config.schedule, this.config.optimizer.lr, this.globalStep, this.runSteps);
  }

  /** The run's length in steps: its epochs, or its `steps` where those end it sooner. */
  get runSteps(): number {
    const epochs = this.config.epochs * this.plan.stepsPerEpoch;
    return this.config.steps ? Math.min(this.config.steps, epochs) : epochs;
  }

  /**
   * Forward and backward on this rank's slice of the next global batch; fills the gradients. The
   * loss may come back NaN or ±Inf: `checkFinite` tells, the caller applies `config.nonFinite`.
   */
  computeGradients(): StepResult {
    const t0 = performance.now();
    const n = this.loadBatch(this.epoch, this.cursor);
    const dataMs = performance.now() - t0;
    const result = this.model.computeGradients(this.batcher.x, this.batcher.batchTargets(), n);
    // DiLoCo's inner steps use their own mean as it is, and weight the pseudo-gradient instead.
    const weight = this.sliceWeight(n);
    if (weight !== 1 && !this.outer) scale(this.model.params.grads, weight);
    return { ...result, dataMs };
  }

  /**
   * A slice's gradient is its own mean; the all-reduce averages over N ranks. Uneven slices are
   * weighted by n·N/B so that the average is the whole batch's mean (even slices: ×1, which the
   * callers skip, keeping the even case bit-identical).
   */
  private sliceWeight(n: number): number {
    return (n * this.worldSize) / this.globalBatch;
  }

  /**
   * Puts this rank's slice of the global batch at (epoch, cursor) in the batcher, unless it is
   * there already: global batch = order[cursor, cursor + B); rank r takes [⌊B·r/N⌋, ⌊B·(r+1)/N⌋).
   */
  private loadBatch(epoch: number, cursor: number): number {
    const { start, count } = this.slice;
    const l = this.loaded;
    if (l && l.epoch === epoch && l.position === cursor + start && l.count === count) return l.n;
    if (this.orderEpoch !== epoch) {
      this.order = epochPermutation(this.data.train.size, this.config.seed, epoch);
      this.orderEpoch = epoch;
    }
    const n = this.batcher.fill(this.order!, cursor + start, count);
    this.loaded = { epoch, position: cursor + start, count, n };
    return n;
  }

  /**
   * While the all-reduce runs: the next step's batch, into the batcher (whose current batch the
   * backward pass no longer needs). A step that is aborted and redone, or a new world size, finds
   * another batch there and loads its own; the data is the same either way.
   */
  private prefetchNext(): void {
    let { epoch, cursor } = this;
    cursor += this.globalBatch;
    if (cursor + this.globalBatch > this.data.train.size) {
      epoch++;
      cursor = 0;
    }
    this.loadBatch(epoch, cursor);
  }

  /** null when the loss and every gradient are finite; otherwise what is not, and where. */
  checkFinite(loss: number, end?: number): NonFinite | null {
    if (!Number.isFinite(loss)) return { what: 'loss', value: loss };
    const grads = end === undefined ? this.model.params.grads : this.model.params.grads.subarray(0, end);
    if (allFinite(grads)) return null;
    return this.nonFiniteIn(firstNonFinite(grads));
  }

  /** The non-finite gradient at flat index `at`, named by its tensor. */
  private nonFiniteIn(at: number): NonFinite {
    const grads = this.model.params.grads;
    // allFinite is exact, so some element is bad (at >= 0); the guard is only a safety net.
    return { what: 'gradient', tensor: at >= 0 ? this.model.params.tensorAt(at)?.name : undefined, value: at >= 0 ? grads[at] : Number.POSITIVE_INFINITY };
  }

  /** The error for a non-finite value under the `stop` policy. */
  nonFiniteError(bad: NonFinite, step = this.globalStep): CoreError {
    return new CoreError('ERR_NON_FINITE', `rank ${this.rank}: ${describeNonFinite(bad)} is ${bad.value} at step ${step} (epoch ${this.epoch}); lower the learning rate, set clipGradNorm, or set nonFinite to "skip"`);
  }

  /** Passes over this step's batch without changing the weights (the `skip` policy). */
  skipUpdate(): boolean {
    return this.advance();
  }

  /** `applyUpdate`, measuring every tensor before and after (for the health report every K steps). */
  applyUpdateWithHealth(): { epochEnded: boolean; tensors: TensorHealth[] } {
    const params = this.model.params;
    this.before ??= new Float32Array(params.length);
    this.before.set(params.values);
    const gradNorms = params.tensorNorms(params.grads);
    const epochEnded = this.applyUpdate();
    const weightNorms = params.tensorNorms();
    const delta = this.before;
    for (let i = 0; i < delta.length; i++) delta[i] = params.values[i] - delta[i];
    const deltaNorms = params.tensorNorms(delta);
    const tensors = params.tensors.map((t, i) => ({
      name: t.name,
      role: t.role,
      weightNorm: weightNorms[i],
      gradNorm: gradNorms[i],
      updateRatio: weightNorms[i] > 0 ? deltaNorms[i] / weightNorms[i] : deltaNorms[i] > 0 ? Number.POSITIVE_INFINITY : 0,
    }));
    return { epochEnded, tensors };
  }

  /**
   * Clipping (if set), the scheduled learning rate and the optimizer step; advances the step and
   * the cursor. Returns true when this step ended an epoch (the tail too short for a global batch
   * is dropped, so every rank takes the same number of steps).
   */
  applyUpdate(): boolean {
    if (this.config.clipGradNorm) clipGradNorm(this.model.params.grads, this.config.clipGradNorm);
    this.optimizer.step(this.learningRate);
    return this.advance();
  }

  private advance(): boolean {
    this.globalStep++;
    this.cursor += this.globalBatch;
    if (this.cursor + this.globalBatch > this.data.train.size) {
      this.epoch++;
      this.cursor = 0;
      return true;
    }
    return false;
  }

  /** One whole step of a single process; a non-finite loss or gradient stops or skips by `config.nonFinite`. */
  trainStep(): StepResult & { skipped: boolean } {
    if (this.config.deterministic) {
      const local = this.microBatchGradients();
      if (local.bad) this.applyNonFiniteRule(local.bad);
      const { skipped } = this.finishStep(local.bad === null ? this.fromFixedPoint(this.fixedPointLimbs(largestExponents(exponentCounts(local.max), local.max.length))) : false);
      return { ...local.result, skipped };
    }
    const r = this.computeGradients();
    const bad = this.screen(r.loss);
    if (this.outer && this.atSyncPoint) this.outer.begin(this.model.params.values, this.state());
    const { skipped, epochEnded } = this.finishStep(bad === null);
    // Alone, DiLoCo's average is this replica's own pseudo-gradient.
    if (this.outer?.due(this.globalStep, epochEnded)) this.endRound(allFinite(this.outer.pseudoGradient(this.model.params.values, 1)));
    return { ...r, skipped };
  }

  /**
   * One data-parallel step: gradients on this rank's slice, the non-finite rule, `reduce` (the
   * all-reduce average of `model.params.grads`, resolving whether the result is finite on every
   * rank alike), then the update. The rule, here and only here:
   * - a NaN/±Inf loss or gradient of this rank is reported (`onNonFinite`); under "stop" the step
   *   throws; under "skip" element 0 of the gradient is poisoned, so that after the all-reduce
   *   every rank sees a non-finite result and skips the same step;
   * - a non-finite reduced gradient with no poison in it means finite gradients whose sum
   *   overflowed ("gradientSum"): reported, then stopped or skipped alike.
   * The optimizer runs only after `reduce` resolved: when it rejects (a lost peer), the weights,
   * the optimizer state, the step and the cursor are untouched.
   */
  async step(reduce: Reduce, options: StepOptions = {}): Promise<StepOutcome> {
    if (this.outer) return this.localStep(this.outer, (delta) => reduce(delta, 0), options);
    if (this.config.deterministic) return this.deterministicStep(reduce, options);
    const t0 = performance.now();
    const n = this.loadBatch(this.epoch, this.cursor);
    const dataMs = performance.now() - t0;
    const { result, reductions, last, badSent } = await this.gradientsReducedInRanges(n, reduce, Math.floor((options.bucketBytes ?? 0) / 4));
    const r = { ...result, dataMs };
    await options.afterGradients?.();
    // The lowest bad index first, as one check over all the gradients would find it.
    const bad = this.checkFinite(r.loss, last.length) ?? badSent;
    if (bad) this.applyNonFiniteRule(bad, options.onNonFinite);
    const t1 = performance.now();
    reductions.push(reduce(last, 0));
    this.prefetchNext();
    const finite = (await Promise.all(reductions)).every(Boolean);
    const t2 = performance.now();
    const end = this.finishStep(finite, options.onNonFinite, options.health ?? false);
    const t3 = performance.now();
    return { ...r, ...end, nonFinite: bad, computeMs: t1 - t0 - r.dataMs, allreduceMs: t2 - t1, optimizerMs: t3 - t2 };
  }

  /**
   * A deterministic step: the same weights whatever the number of ranks and whichever rank
   * computes what. The global batch is M micro-batches of `batchSize`; a rank computes its own one
   * at a time (the same shapes, the same dropout masks, so the same bits on any rank). Each
   * tensor's gradients are rounded to a grid fixed by the binary exponent of its largest value in
   * any micro-batch (found by summing one-hot counts of each rank's exponent: exact, so any order
   * gives it alike), 2⁻³⁰ of M times that; on that grid a sum is an integer sum, exact, so its
   * order does not matter. A rank's integer sum goes on the wire as two 16-bit halves in float32
   * (sums of up to 256 of them stay exact integers), and every rank rebuilds the same mean.
   */
  private async deterministicStep(reduce: Reduce, options: StepOptions): Promise<StepOutcome> {
    const t0 = performance.now();
    const local = this.microBatchGradients();
    await options.afterGradients?.();
    if (local.bad) {
      this.applyNonFiniteRule(local.bad, options.onNonFinite);
      local.max[0] = Number.NaN; // every rank sees it in the maximum, and skips the step
    }
    const t1 = performance.now();
    const counts = exponentCounts(local.max);
    const reduced = this.worldSize > 1 ? await reduce(counts, 0, true) : true;
    const max = largestExponents(counts, local.max.length);
    let finite = reduced && max.every((v) => Number.isFinite(v));
    if (finite) {
      const limbs = this.fixedPointLimbs(max);
      finite = (await reduce(limbs.halves, 0, true)) && this.fromFixedPoint(limbs);
    } else this.model.params.grads[0] = Number.NaN; // a skip, not an overflow
    const t2 = performance.now();
    const end = this.finishStep(finite, options.onNonFinite, options.health ?? false);
    const t3 = performance.now();
    return { ...local.result, ...end, nonFinite: local.bad, computeMs: t1 - t0 - local.result.dataMs, allreduceMs: t2 - t1, optimizerMs: t3 - t2 };
  }

  /** This rank's micro-batches, one at a time: their gradients kept, each tensor's largest |value| over them, the mean loss. */
  private microBatchGradients(): { result: StepResult; max: Float32Array; bad: NonFinite | null } {
    const m = this.config.batchSize;
    const params = this.model.params;
    const P = params.length;
    const count = this.slice.count / m;
    const first = this.slice.start / m;
    if (!this.micro || this.micro.length < count * P) this.micro = new Float32Array(count * P);
    const max = new Float32Array(params.tensors.length);
    let [loss, correct, dataMs] = [0, 0, 0];
    let bad: NonFinite | null = null;
    for (let j = 0; j < count; j++) {
      const d0 = performance.now();
      if (this.orderEpoch !== this.epoch) {
        this.order = epochPermutation(this.data.train.size, this.config.seed, this.epoch);
        this.orderEpoch = this.epoch;
      }
      const n = this.batcher.fill(this.order!, this.cursor + this.slice.start + j * m, m);
      dataMs += performance.now() - d0;
      // Dropout masks belong to the micro-batch (its step and index), not to the rank that computes it.
      this.model.dropoutRng.setState(new Rng(microBatchSeed(this.config.seed, this.globalStep, first + j)).state());
      const r = this.model.computeGradients(this.batcher.x, this.batcher.batchTargets(), n);
      loss += r.loss;
      correct += r.correct;
      if (!Number.isFinite(r.loss)) bad ??= { what: 'loss', value: r.loss };
      const grads = params.grads;
      this.micro.set(grads, j * P);
      params.tensors.forEach((t, k) => {
        const part = grads.subarray(t.offset, t.offset + t.length);
        const a = this.backend.absMax ? this.backend.absMax(part, t.length) : absMax(part, t.length);
        if (!(a <= max[k]) && !Number.isNaN(max[k])) max[k] = a; // NaN wins, and stays
      });
    }
    // A NaN or ±Inf gradient shows in its tensor's maximum.
    const k = max.findIndex((v) => !Number.isFinite(v));
    if (k >= 0) bad ??= { what: 'gradient', tensor: params.tensors[k].name, value: max[k] };
    this.loaded = null; // the batcher holds a micro-batch, not the slice
    return { result: { loss: count ? loss / count : 0, correct, dataMs }, max, bad };
  }

  /**
   * The sum of this rank's micro-batch gradients on each tensor's grid (2⁻³⁰ of M times `bound`,
   * a power of two at least its largest value), as two float32 halves: value = 65536·hi + lo,
   * |hi|, |lo| ≤ 2¹⁵.
   */
  private fixedPointLimbs(max: Float64Array): { halves: Float32Array; quanta: Float64Array } {
    const P = this.model.params.length;
    const M = this.globalBatch / this.config.batchSize;
    const count = this.slice.count / this.config.batchSize;
    // |Σ over all M micro-batches| ≤ M·max ≤ 2³⁰·q: each half stays within 2¹⁵.
    const quanta = Float64Array.from(max, (a) => (a > 0 ? 2 ** (Math.ceil(Math.log2(M * a)) - 30) : 1));
    const perQ = Float64Array.from(quanta, (q) => 1 / q); // powers of two: the products are exact
    if (this.halves?.length !== 2 * P) this.halves = new Float32Array(2 * P);
    const args = [this.micro ?? new Float32Array(0), count, P, this.tensorOffsets, perQ, this.halves] as const;
    if (this.backend.fixedPointHalves) this.backend.fixedPointHalves(...args);
    else fixedPointHalves(...args);
    return { halves: this.halves, quanta };
  }



  /** The gradients from the summed halves: (65536·hi + lo)·q / M on every rank alike. Returns whether they are finite. */
  private fromFixedPoint({ halves, quanta }: { halves: Float32Array; quanta: Float64Array }): boolean {
    const grads = this.model.params.grads;
    const M = this.globalBatch / this.config.batchSize;
    const perMicro = Float64Array.from(quanta, (q) => q / M); // the same rounding on every rank
    const args = [halves, grads.length, this.tensorOffsets, perMicro, grads] as const;
    if (this.backend.fixedPointMean) this.backend.fixedPointMean(...args);
    else fixedPointMean(...args);
    return allFinite(grads);
  }

  /** Where each tensor starts in the flat parameters, and where the last ends. */
  private get tensorOffsets(): Int32Array {
    return (this.offsets ??= Int32Array.from([...this.model.params.tensors.map((t) => t.offset), this.model.params.length]));
  }



  /**
   * Forward and backward on the loaded slice of `n` samples, handing every finished tail of the
   * gradients of at least `bucket` floats to `reduce` while the layers below compute (overlap;
   * 0: none). Returns the reductions under way and the range left for the caller to reduce last
   * (it holds element 0, where the non-finite rule marks a skipped step), weighted like the rest.
   */
  private async gradientsReducedInRanges(n: number, reduce: Reduce, bucket: number): Promise<{ result: BatchResult; reductions: Promise<boolean>[]; last: Float32Array; badSent: NonFinite | null }> {
    const grads = this.model.params.grads;
    const weight = this.sliceWeight(n);
    const reductions: Promise<boolean>[] = [];
    let sent = grads.length;
    // This rank's own non-finite value in a range already handed to `reduce`, found before the sum replaced it.
    let badSent: NonFinite | null = null;
    const stages = this.model.gradientStages(this.batcher.x, this.batcher.batchTargets(), n);
    let next = stages.next();
    while (!next.done) {
      const from = next.value;
      if (bucket > 0 && from > 0 && sent - from >= bucket) {
        const part = grads.subarray(from, sent);
        if (weight !== 1) scale(part, weight);
        if (badSent === null && !allFinite(part)) badSent = this.nonFiniteIn(from + firstNonFinite(part));
        const reducing = reduce(part, from);
        // A failure (a lost peer) is the step's, thrown by the caller; until then it must not count as unhandled.
        reducing.catch(() => {});
        reductions.push(reducing);
        sent = from;
      }
      // The ring's messages are handled between layers, so a range sent goes round while the next layers compute.
      if (reductions.length) await yieldToEventLoop();
      next = stages.next();
    }
    const last = grads.subarray(0, sent);
    if (weight !== 1) scale(last, weight);
    return { result: next.value, reductions, last, badSent };
  }

  /**
   * A DiLoCo step: this replica's own update, no all-reduce; at the round's end (every
   * `innerSteps`, at an epoch's end and at the run's last step) `reduce` averages the
   * pseudo-gradient and the outer optimizer runs, only after it resolved. A non-finite local value
   * skips this replica's step (its own rule); a non-finite average stops the run, or (skip) drops
   * the round on every replica alike. When `reduce` rejects, `rewindRound` returns to the start.
   */
  private async localStep(outer: OuterSync<TrainerState>, reduce: (delta: Float32Array) => Promise<boolean>, options: StepOptions): Promise<StepOutcome> {
    if (this.atSyncPoint) outer.begin(this.model.params.values, this.state());
    const t0 = performance.now();
    const r = this.computeGradients();
    await options.afterGradients?.();
    const bad = this.screen(r.loss, options.onNonFinite);
    const t1 = performance.now();
    this.prefetchNext();
    const end = this.finishStep(bad === null, undefined, options.health ?? false);
    const t2 = performance.now();
    let allreduceMs = 0;
    if (outer.due(this.globalStep, end.epochEnded || (options.lastStep ?? false))) {
      const finite = await reduce(outer.pseudoGradient(this.model.params.values, this.sliceWeight(this.slice.count)));
      allreduceMs = performance.now() - t2;
      this.endRound(finite, options.onNonFinite);
    }
    const optimizerMs = performance.now() - t2 - allreduceMs;
    return { ...r, ...end, nonFinite: bad, computeMs: t1 - t0 - r.dataMs, allreduceMs, optimizerMs };
  }

  /** The outer step with the averaged pseudo-gradient (or, when it is not finite, the rule). */
  private endRound(finite: boolean, onNonFinite?: (bad: NonFinite) => void): void {
    const outer = this.outer!;
    const values = this.model.params.values;
    if (finite) {
      outer.apply(values);
    } else {
      const overflow: NonFinite = { what: 'gradientSum', value: Number.NaN };
      onNonFinite?.(overflow);
      if (this.config.nonFinite === 'stop') throw this.nonFiniteError(overflow);
      outer.rewind(values); // skip: the round is dropped, the weights stay the anchor's
    }
    this.resetInnerState();
  }

  /** This rank's own loss and gradient: null when finite, else reported, then stop (throw) or poison. */
  private screen(loss: number, onNonFinite?: (bad: NonFinite) => void): NonFinite | null {
    const bad = this.checkFinite(loss);
    if (bad) this.applyNonFiniteRule(bad, onNonFinite);
    return bad;
  }

  private applyNonFiniteRule(bad: NonFinite, onNonFinite?: (bad: NonFinite) => void): void {
    onNonFinite?.(bad);
    if (this.config.nonFinite === 'stop') throw this.nonFiniteError(bad);
    this.model.params.grads[0] = Number.NaN; // NaN + x = NaN: every rank sees it after the all-reduce
  }

  /** Skips the update when the (reduced) gradient is not finite, else applies it. */
  private finishStep(finite: boolean, onNonFinite?: (bad: NonFinite) => void, health = false): { skipped: boolean; epochEnded: boolean; tensors?: TensorHealth[] } {
    const grads = this.model.params.grads;
    if (!finite && Number.isFinite(grads[0])) {
      const overflow: NonFinite = { what: 'gradientSum', value: grads.find((x) => !Number.isFinite(x)) ?? Number.NaN };
      onNonFinite?.(overflow);
      if (this.config.nonFinite === 'stop') throw this.nonFiniteError(overflow);
    }
    if (!finite) return { skipped: true, epochEnded: this.skipUpdate() };
    if (health) return { skipped: false, ...this.applyUpdateWithHealth() };
    return { skipped: false, epochEnded: this.applyUpdate() };
  }

  /**
   * Loss and accuracy on this rank's share of `which`: contiguous ranges that together cover every
   * sample exactly once across ranks (sum `samples`-weighted results over ranks for the total).
   */
  evaluate(which: 'train' | 'test' = 'test'): EvalResult {
    const [start, end] = this.evaluationShare(which);
    return evaluateRange(this.model, this.evalBatchers[which], start, end);
  }

  /** As `evaluate`, giving the event loop a turn between batches (heartbeats go on in a worker). */
  async evaluateYielding(which: 'train' | 'test' = 'test'): Promise<EvalResult> {
    const [start, end] = this.evaluationShare(which);
    const batcher = this.evalBatchers[which];
    const total = { loss: 0, correct: 0 };
    for (let i = start; i < end; i += batcher.capacity) {
      const part = evaluateRange(this.model, batcher, i, Math.min(end, i + batcher.capacity));
      total.loss += part.loss * part.samples;
      total.correct += Math.round(part.accuracy * part.samples);
      await new Promise((resolve) => setImmediate(resolve));
    }
    const samples = end - start;
    return { loss: samples ? total.loss / samples : 0, accuracy: samples ? total.correct / samples : 0, samples };
  }

  /**
   * This rank's contiguous share of a split: [start, end). Deterministic: rank 0 takes it all, so
   * that the figures behind decisions (the best checkpoint) are summed in one order, whatever the
   * number of ranks.
   */
  private evaluationShare(which: 'train' | 'test'): [number, number] {
    const ds: Dataset = this.data[which];
    if (this.config.deterministic) return this.rank === 0 ? [0, ds.size] : [0, 0];
    return [Math.floor((ds.size * this.rank) / this.worldSize), Math.floor((ds.size * (this.rank + 1)) / this.worldSize)];
  }
}

/** Activation floats an evaluation batch may hold: 32 Mi floats, 128 MiB. */
const EVAL_MEMORY_FLOATS = 32 * 1024 * 1024;

/** Loss and accuracy of `model` on the samples [start, end) of the batcher's dataset, a batch at a time. */
export function evaluateRange(model: Model, batcher: Batcher, start = 0, end = batcher.dataset.size): EvalResult {
  let loss = 0;
  let correct = 0;
  for (let i = start; i < end; i += batcher.capacity) {
    const n = batcher.fillRange(i, Math.min(batcher.capacity, end - i));
    const r = model.evaluate(batcher.x, batcher.batchTargets(), n);
    loss += r.loss * n;
    correct += r.correct;
  }
  const samples = end - start;
  // A sequence model predicts at every position: its accuracy is per token.
  return { loss: samples ? loss / samples : 0, accuracy: samples ? correct / (samples * model.positions) : 0, samples };
}

import type {
  CheckpointInfo,
  ConfigSummary,
  Evaluation,
  GenerationChange,
  HealthReport,
  MessageOf,
  MetricsPoint,
  Phases,
  RankInfo,
  RankState,
  RingProbe,
  RunError,
  RunJournalFile,
  RunState,
  StatusEventBody,
  StatusWarning,
} from '@ringtrain/protocol';
import { HealthWatch, type HealthThresholds } from './health-watch.js';
import { networkBound } from './network-bound.js';
import { StragglerDetector, type StragglerOptions } from './stragglers.js';

export interface StatusFeedOptions {
  runId: string;
  workers: number;
  config: ConfigSummary;
  /** At most one metrics event per this many ms (default 250): a fast run does not flood clients. */
  intervalMs?: number;
  /** Points kept for the charts; beyond it the history is thinned (default 2000). */
  maxHistory?: number;
  health?: HealthThresholds;
  stragglers?: StragglerOptions;
  /** What would help when the network bounds the run (names the job's options), for the warning. */
  networkAdvice?: string;
}

type Listener = (event: StatusEventBody) => void;

/** Progress reports of all ranks for one step window. */
interface Round {
  /** The ranks that reported this step: a round is complete when each rank has, once. */
  ranks: Set<number>;
  epoch: number;
  steps: number;
  samples: number;
  lossSum: number;
  counted: number;
  skipped: number;
  lr: number;
  phases: Phases;
}

const LIST_LIMIT = 100;
const zeroPhases = (): Phases => ({ dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0 });
const PHASES = ['dataMs', 'computeMs', 'allreduceMs', 'optimizerMs'] as const;

/**
 * The live picture of a run that the status socket, the dashboard and /metrics show: it takes what
 * the coordinator hears, keeps the state a new client needs (a snapshot), and emits events. Progress
 * reports are merged across ranks per step, then coalesced in time, so a client sees at most one
 * metrics event per interval however fast the run.
 */
export class StatusFeed {
  private state: RunState = 'gathering';
  private generation = 0;
  private worldSize = 0;
  private error: RunError | null = null;
  private readonly generations: GenerationChange[] = [];
  private runId: string;
  private startedAt: number | null = null;
  private startedPerf = 0;
  private startStep = 0;
  private totalSteps = 0;
  private bytesPerAllreduce = 0;
  private step = 0;
  private readonly ranks: RankInfo[] = [];
  private readonly rankPhases: Phases[][] = [];
  private readonly rounds = new Map<number, Round>();
  private pending: Round | null = null;
  private lastPoint: MetricsPoint | null = null;
  private history: MetricsPoint[] = [];
  private readonly evaluations: Evaluation[] = [];
  private readonly checkpoints: CheckpointInfo[] = [];
  private readonly warnings: StatusWarning[] = [];
  private lastHealth: HealthReport | null = null;
  private ring: RingProbe | null = null;
  private networkWarned = false;
  private stragglers: StragglerDetector | null = null;
  private readonly healthWatch: HealthWatch;
  private readonly listeners = new Set<Listener>();
  private readonly timer: NodeJS.Timeout;
  private readonly intervalMs: number;

  constructor(private readonly options: StatusFeedOptions) {
    this.runId = options.runId;
    this.intervalMs = options.intervalMs ?? 250;
    this.healthWatch = new HealthWatch(options.health);
    this.timer = setInterval(() => this.flush(), this.intervalMs);
    this.timer.unref();
  }

  subscribe(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  close(): void {
    clearInterval(this.timer);
  }

  snapshot(access: 'read' | 'admin', resync = false): StatusEventBody<'snapshot'> {
    return {
      type: 'snapshot',
      resync,
      runId: this.runId,
      state: this.state,
      generation: this.generation,
      workers: this.options.workers,
      worldSize: this.worldSize,
      config: this.options.config,
      startedAt: this.startedAt,
      ranks: this.ranks.map((r) => ({ ...r })),
      metrics: this.lastPoint,
      history: [...this.history],
      evaluations: [...this.evaluations],
      checkpoints: [...this.checkpoints],
      warnings: [...this.warnings],
      health: this.lastHealth,
      error: this.error,
      generations: [...this.generations],
      ring: this.ring,
      access,
    };
  }

  // ---- what the coordinator hears ----

  setState(state: RunState, generation: number, error: RunError | null = null): void {
    if (state === 'finished' || state === 'failed' || state === 'stopped') this.flush();
    this.state = state;
    this.generation = generation;
    this.error = error;
    this.emit({ type: 'state', state, generation, error });
  }

  /** A restarted coordinator continues the run its workers hold: the run keeps its id (and, from its journal, its past). */
  adoptRun(runId: string, past: Pick<RunJournalFile, 'startedAt' | 'history' | 'evaluations' | 'checkpoints' | 'warnings' | 'generations'> | null = null): void {
    this.runId = runId;
    if (!past) return;
    // The past first, then what this coordinator has seen since it started.
    this.startedAt = past.startedAt ?? this.startedAt;
    this.history = [...past.history, ...this.history];
    this.evaluations.unshift(...past.evaluations.filter((e) => !this.evaluations.some((x) => x.step === e.step)));
    this.checkpoints.unshift(...past.checkpoints);
    this.warnings.unshift(...past.warnings);
    this.generations.unshift(...past.generations);
    for (const list of [this.checkpoints, this.warnings]) if (list.length > LIST_LIMIT) list.splice(0, list.length - LIST_LIMIT);
    if (this.generations.length > LIST_LIMIT) this.generations.splice(1, this.generations.length - LIST_LIMIT); // keep the start
  }

  /** What a restarted coordinator would need of this feed (see RunJournal). */
  past(): Pick<RunJournalFile, 'runId' | 'startedAt' | 'history' | 'evaluations' | 'checkpoints' | 'warnings' | 'generations'> {
    return { runId: this.runId, startedAt: this.startedAt, history: [...this.history], evaluations: [...this.evaluations], checkpoints: [...this.checkpoints], warnings: [...this.warnings], generations: [...this.generations] };
  }

  /** A new generation is training: why it formed, what failed first, how long the recovery took. */
  generationChanged(change: GenerationChange): void {
    this.generations.push(change);
    if (this.generations.length > LIST_LIMIT) this.generations.splice(1, 1); // keep the start
    this.worldSize = change.worldSize;
    this.emit({ type: 'generation', change });
  }

  workerJoined(w: { workerId: string; host: string; pid: number; address: string }): void {
    const info: RankInfo = { rank: -1, workerId: w.workerId, host: w.host, pid: w.pid, address: w.address, state: 'joined', step: 0, phases: null };
    this.ranks.push(info);
    this.emit({ type: 'rank', rank: { ...info } });
  }

  workerLeft(workerId: string): void {
    const i = this.ranks.findIndex((r) => r.workerId === workerId && r.rank === -1);
    if (i < 0) return;
    const [info] = this.ranks.splice(i, 1);
    this.emit({ type: 'rank', rank: { ...info, state: 'lost' }, reason: 'left before the run started' });
  }

  /** The ring is formed: ranks in the order given (worker ids). */
  ranksAssigned(workerIds: string[]): void {
    this.worldSize = workerIds.length;
    this.rounds.clear(); // a generation's half-reported steps end with it
    const byId = new Map(this.ranks.map((r) => [r.workerId, r]));
    this.ranks.length = 0;
    workerIds.forEach((id, rank) => {
      const info = byId.get(id) ?? { rank, workerId: id, host: '', pid: 0, address: '', state: 'joined' as const, step: 0, phases: null };
      info.rank = rank;
      this.ranks.push(info);
      this.rankPhases[rank] = [];
    });
    this.stragglers = new StragglerDetector(this.worldSize, this.options.stragglers);
  }

  setRankState(rank: number, state: RankState, reason?: string): void {
    const info = this.ranks[rank];
    if (!info || info.rank !== rank || info.state === state) return;
    info.state = state;
    this.emit({ type: 'rank', rank: { ...info }, ...(reason ? { reason } : {}) });
  }

  /** A later generation trains: its ranks are training again. */
  resumed(): void {
    for (const r of this.ranks) this.setRankState(r.rank, 'training');
  }

  started(totalSteps: number, startStep: number, parameters: number): void {
    this.startedAt = Date.now();
    this.startedPerf = performance.now();
    this.totalSteps = totalSteps;
    this.startStep = startStep;
    this.step = startStep;
    this.bytesPerAllreduce = 4 * parameters;
    for (const r of this.ranks) this.setRankState(r.rank, 'training');
  }

  progress(p: MessageOf<'progress'>): void {
    const info = this.ranks[p.rank];
    if (!info) return;
    info.step = p.step;
    const steps = p.steps;
    const perStep: Phases = { dataMs: p.dataMs / steps, computeMs: p.computeMs / steps, allreduceMs: p.allreduceMs / steps, optimizerMs: p.optimizerMs / steps };
    const window = this.rankPhases[p.rank];
    window.push(perStep);
    if (window.length > 5) window.shift();
    info.phases = meanPhases(window);
    this.stragglers?.add(p.rank, perStep.dataMs + perStep.computeMs);

    const round = this.rounds.get(p.step) ?? { ranks: new Set<number>(), epoch: p.epoch, steps, samples: 0, lossSum: 0, counted: 0, skipped: p.skipped, lr: p.lr, phases: zeroPhases() };
    // A rank that reports a step twice (a peer's forgery: one rank must not complete a round) counts once.
    if (round.ranks.has(p.rank)) return;
    round.ranks.add(p.rank);
    round.samples += p.samples;
    const counted = steps - p.skipped;
    round.lossSum += p.loss * counted;
    round.counted += counted;
    for (const k of PHASES) round.phases[k] += perStep[k] / this.worldSize;
    this.rounds.set(p.step, round);
    if (round.ranks.size < this.worldSize) return;
    this.rounds.delete(p.step);
    this.step = p.step;
    this.merge(round);
    for (const change of this.stragglers?.evaluate() ?? []) this.onStraggler(change.rank, change.slow, change.ratio);
    this.checkNetworkBound();
  }

  /** The ring's measurement of itself, at the start of a generation. */
  ringProbe(probe: RingProbe): void {
    this.ring = probe;
    this.emit({ type: 'ring', ring: probe });
  }

  /** Once a run: when every rank's window says the all-reduce, over a slow ring, takes most of its step. */
  private checkNetworkBound(): void {
    if (this.networkWarned || !this.ring) return;
    const windows = this.rankPhases.slice(0, this.worldSize);
    if (windows.length < 2 || windows.some((w) => !w || w.length < 3)) return;
    const bound = networkBound(windows.map(meanPhases), this.ring);
    if (!bound) return;
    this.networkWarned = true;
    const gbit = (this.ring.busbwMBps * 8) / 1000;
    this.warning({
      code: 'WARN_NETWORK_BOUND',
      message: `the network bounds this run: the all-reduce takes ${bound.allreduceMs.toFixed(1)} of each ${bound.stepMs.toFixed(1)} ms step on every rank, over a ring that measured ${this.ring.busbwMBps.toFixed(0)} MB/s (about ${gbit.toFixed(2)} Gbit/s)${this.options.networkAdvice ? `; ${this.options.networkAdvice}` : ''}`,
      step: this.step,
    });
  }

  evaluation(e: Evaluation): void {
    this.flush();
    this.evaluations.push(e);
    this.emit({ type: 'evaluation', evaluation: e });
  }

  checkpointSaved(c: CheckpointInfo): void {
    this.checkpoints.push(c);
    if (this.checkpoints.length > LIST_LIMIT) this.checkpoints.shift();
    this.emit({ type: 'checkpoint', ok: true, checkpoint: c, step: c.step });
  }

  checkpointFailed(step: number, error: string): void {
    this.emit({ type: 'checkpoint', ok: false, step, error });
    this.warning({ code: 'WARN_CHECKPOINT_FAILED', message: `checkpoint at step ${step} not saved: ${error}`, rank: 0, step });
  }

  health(report: HealthReport): void {
    this.lastHealth = report;
    this.emit({ type: 'health', health: report });
    for (const w of this.healthWatch.check(report)) this.warning(w);
  }

  warning(w: StatusWarning): void {
    this.warnings.push(w);
    if (this.warnings.length > LIST_LIMIT) this.warnings.shift();
    this.emit({ type: 'warning', warning: w });
  }

  end(summary: { steps: number; seconds: number; samplesPerSecond: number; testAccuracy: number | null }): void {
    this.flush();
    this.emit({ type: 'end', state: this.state, error: this.error, ...summary });
  }

  // ---- inside ----

  private merge(round: Round): void {
    if (!this.pending) {
      this.pending = { ...round, phases: { ...round.phases } };
      return;
    }
    const p = this.pending;
    for (const k of PHASES) p.phases[k] = (p.phases[k] * p.steps + round.phases[k] * round.steps) / (p.steps + round.steps);
    p.steps += round.steps;
    p.samples += round.samples;
    p.lossSum += round.lossSum;
    p.counted += round.counted;
    p.skipped += round.skipped;
    p.epoch = round.epoch;
    p.lr = round.lr;
  }

  /** Turns the rounds merged since the last flush into one point on the curves. */
  private flush(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    const now = performance.now();
    const stepMs = PHASES.reduce((sum, k) => sum + p.phases[k], 0);
    const n = this.worldSize;
    const allreduceSeconds = p.phases.allreduceMs / 1000;
    const stepsPerSecond = (this.step - this.startStep) / ((now - this.startedPerf) / 1000);
    const point: MetricsPoint = {
      step: this.step,
      epoch: p.epoch,
      totalSteps: this.totalSteps,
      samples: p.samples,
      loss: p.counted > 0 ? p.lossSum / p.counted : null,
      // From the ranks' own step times, not from when reports happened to arrive: steady, and
      // free of the evaluation and checkpoint pauses between steps.
      samplesPerSecond: stepMs > 0 ? p.samples / ((p.steps * stepMs) / 1000) : 0,
      lr: p.lr,
      phases: p.phases,
      allreduceBusbw: n > 1 && allreduceSeconds > 0 ? ((this.bytesPerAllreduce / allreduceSeconds) * 2 * (n - 1)) / n : 0,
      etaSeconds: stepsPerSecond > 0 ? (this.totalSteps - this.step) / stepsPerSecond : null,
      skippedSteps: p.skipped,
      rankComputeMs: this.ranks.map((r) => (r.phases ? r.phases.dataMs + r.phases.computeMs : 0)),
    };
    this.lastPoint = point;
    this.history.push(point);
    // Thin the oldest half instead of dropping it: the chart keeps the whole run's shape.
    const max = this.options.maxHistory ?? 2000;
    if (this.history.length > max) {
      const half = Math.floor(max / 2);
      this.history = [...this.history.slice(0, half).filter((_, i) => i % 2 === 0), ...this.history.slice(half)];
    }
    this.emit({ type: 'metrics', metrics: point, ranks: this.ranks.map((r) => ({ ...r })), computeSpread: this.stragglers?.spread() ?? null });
  }

  private onStraggler(rank: number, slow: boolean, ratio: number): void {
    const info = this.ranks[rank];
    if (!info || info.state === 'done' || info.state === 'lost' || info.state === 'failed') return;
    const spread = this.stragglers?.spread();
    const ms = (x: number): string => `${x.toFixed(2)} ms`;
    if (slow) {
      const why = `compute ${ratio.toFixed(1)}× the median rank's (${ms(this.stragglers!.means()[rank])} vs ${ms(spread?.median ?? 0)} per step)`;
      this.setRankState(rank, 'slow', why);
      this.warning({ code: 'WARN_RANK_SLOW', message: `rank ${rank} (${info.workerId}) is slow: ${why}; every step waits for it`, rank, step: this.step });
    } else {
      this.setRankState(rank, 'training', `healthy again: compute ${ratio.toFixed(1)}× the median`);
    }
  }

  private emit(event: StatusEventBody): void {
    for (const l of this.listeners) l(event);
  }
}

function meanPhases(list: Phases[]): Phases {
  const m = zeroPhases();
  for (const p of list) for (const k of PHASES) m[k] += p[k] / list.length;
  return m;
}

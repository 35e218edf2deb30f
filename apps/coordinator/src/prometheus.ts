import { rankStates, runStates, type StatusEventBody } from '@ringtrain/protocol';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** Histogram observations one metrics point may add (a point covers the steps since the last). */
const MAX_OBSERVATIONS_PER_POINT = 10_000;

/** Seconds from 100 µs to ~100 s, for step phases and checkpoint times. */
const SECONDS_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 100];

/**
 * The run in the Prometheus text format (`GET /metrics`), kept in a registry of its own (not the
 * process-wide default) and updated from the same events the status socket sends.
 */
export class PrometheusMetrics {
  readonly registry = new Registry();
  private readonly steps = new Counter({ name: 'ringtrain_steps_total', help: 'Training steps completed (all ranks take each step together)', registers: [this.registry] });
  private readonly samples = new Counter({ name: 'ringtrain_samples_total', help: 'Training samples processed over all ranks', registers: [this.registry] });
  private readonly skipped = new Counter({ name: 'ringtrain_skipped_steps_total', help: 'Steps skipped because a loss or gradient was not finite', registers: [this.registry] });
  private readonly loss = new Gauge({ name: 'ringtrain_loss', help: 'Training loss (mean over the last metrics interval)', registers: [this.registry] });
  private readonly lr = new Gauge({ name: 'ringtrain_learning_rate', help: 'Learning rate of the latest step', registers: [this.registry] });
  private readonly rate = new Gauge({ name: 'ringtrain_samples_per_second', help: 'Training throughput over all ranks', registers: [this.registry] });
  private readonly busbw = new Gauge({ name: 'ringtrain_allreduce_busbw_bytes_per_second', help: 'Bus bandwidth of the gradient all-reduce (nccl-tests definition)', registers: [this.registry] });
  private readonly phase = new Histogram({
    name: 'ringtrain_step_phase_seconds',
    help: 'Time per step in each phase (data, compute = forward/backward, allreduce, optimizer), mean over ranks',
    labelNames: ['phase'],
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  private readonly rankPhase = new Gauge({
    name: 'ringtrain_rank_step_phase_seconds',
    help: "Each rank's time per step in each phase, mean over its last reports (a straggler stands out in compute)",
    labelNames: ['rank', 'phase'],
    registers: [this.registry],
  });
  private readonly runState = new Gauge({ name: 'ringtrain_run_state', help: 'The run state (1 for the current one)', labelNames: ['state'], registers: [this.registry] });
  private readonly rankState = new Gauge({ name: 'ringtrain_rank_state', help: 'Each rank state (1 for the current one)', labelNames: ['rank', 'state'], registers: [this.registry] });
  private readonly testAccuracy = new Gauge({ name: 'ringtrain_test_accuracy', help: 'Test accuracy at the latest evaluation', registers: [this.registry] });
  private readonly testLoss = new Gauge({ name: 'ringtrain_test_loss', help: 'Test loss at the latest evaluation (a language model: nats per token on the validation split)', registers: [this.registry] });
  // A language model's, registered at its first evaluation: other runs have no such figure.
  private readonly testBitsPerChar = new Gauge({ name: 'ringtrain_test_bits_per_char', help: "A language model's validation loss in bits per character at the latest evaluation", registers: [] });
  private readonly testPerplexity = new Gauge({ name: 'ringtrain_test_perplexity', help: "A language model's validation perplexity at the latest evaluation", registers: [] });
  private readonly checkpoints = new Counter({ name: 'ringtrain_checkpoints_total', help: 'Checkpoints written or failed', labelNames: ['result'], registers: [this.registry] });
  private readonly checkpointWrite = new Histogram({ name: 'ringtrain_checkpoint_write_seconds', help: 'Time to write a checkpoint (in the background)', buckets: SECONDS_BUCKETS, registers: [this.registry] });
  private readonly checkpointStall = new Histogram({ name: 'ringtrain_checkpoint_stall_seconds', help: 'Time training paused to snapshot a checkpoint', buckets: SECONDS_BUCKETS, registers: [this.registry] });
  private readonly warnings = new Counter({ name: 'ringtrain_warnings_total', help: 'Warnings raised, by code', labelNames: ['code'], registers: [this.registry] });
  private readonly memberships = new Counter({
    name: 'ringtrain_membership_changes_total',
    help: 'New generations after the start, by cause (fault: counted against --max-restarts; join; leave)',
    labelNames: ['cause'],
    registers: [this.registry],
  });
  private readonly worldSize = new Gauge({ name: 'ringtrain_world_size', help: 'Workers in the current generation', registers: [this.registry] });
  private readonly recovery = new Histogram({ name: 'ringtrain_recovery_seconds', help: 'From a fault, join or leave to training again', labelNames: ['cause'], buckets: SECONDS_BUCKETS, registers: [this.registry] });
  readonly statusClients = new Gauge({ name: 'ringtrain_status_clients', help: 'Clients connected to the status socket', registers: [this.registry] });
  readonly statusDropped = new Counter({ name: 'ringtrain_status_dropped_events_total', help: 'Events not sent to a status client that was behind (it gets a snapshot instead)', registers: [this.registry] });
  readonly statusResyncs = new Counter({ name: 'ringtrain_status_resyncs_total', help: 'Times a slow status client fell behind and was sent a fresh snapshot instead of the events it missed', registers: [this.registry] });
  private lastStep: number | null = null;

  constructor() {
    for (const s of runStates) this.runState.set({ state: s }, s === 'gathering' ? 1 : 0);
    this.checkpoints.inc({ result: 'saved' }, 0);
    this.checkpoints.inc({ result: 'failed' }, 0);
    for (const cause of ['fault', 'join', 'leave']) this.memberships.inc({ cause }, 0);
  }

  /** The step the run starts from (non-zero on a resume), so that steps_total counts this run's steps. */
  started(step: number): void {
    this.lastStep = step;
  }

  observe(e: StatusEventBody): void {
    switch (e.type) {
      case 'generation':
        this.worldSize.set(e.change.worldSize);
        if (e.change.cause === 'start') return;
        this.memberships.inc({ cause: e.change.cause });
        this.recovery.observe({ cause: e.change.cause }, e.change.recoveryMs / 1000);
        return;
      case 'metrics': {
        const m = e.metrics;
        // A run that lost every worker starts again from an earlier step: counters never go back.
        const steps = Math.max(0, m.step - (this.lastStep ?? m.step));
        this.lastStep = m.step;
        this.steps.inc(steps);
        this.samples.inc(m.samples);
        if (m.loss !== null) this.loss.set(m.loss);
        this.lr.set(m.lr);
        this.rate.set(m.samplesPerSecond);
        this.busbw.set(m.allreduceBusbw);
        this.skipped.inc(m.skippedSteps);
        for (const r of e.ranks) {
          if (!r.phases || r.rank < 0) continue;
          const rank = String(r.rank);
          this.rankPhase.set({ rank, phase: 'data' }, r.phases.dataMs / 1000);
          this.rankPhase.set({ rank, phase: 'compute' }, r.phases.computeMs / 1000);
          this.rankPhase.set({ rank, phase: 'allreduce' }, r.phases.allreduceMs / 1000);
          this.rankPhase.set({ rank, phase: 'optimizer' }, r.phases.optimizerMs / 1000);
        }
        // A point stands for `steps` steps with these mean times: one observation per step, up to a
        // bound no run's point reaches (points come every few steps), so no peer's number sets the loop.
        for (let i = 0; i < Math.min(steps, MAX_OBSERVATIONS_PER_POINT); i++) {
          this.phase.observe({ phase: 'data' }, m.phases.dataMs / 1000);
          this.phase.observe({ phase: 'compute' }, m.phases.computeMs / 1000);
          this.phase.observe({ phase: 'allreduce' }, m.phases.allreduceMs / 1000);
          this.phase.observe({ phase: 'optimizer' }, m.phases.optimizerMs / 1000);
        }
        return;
      }
      case 'state':
        for (const s of runStates) this.runState.set({ state: s }, s === e.state ? 1 : 0);
        return;
      case 'rank':
        if (e.rank.rank < 0) return;
        for (const s of rankStates) this.rankState.set({ rank: String(e.rank.rank), state: s }, s === e.rank.state ? 1 : 0);
        return;
      case 'evaluation':
        this.testAccuracy.set(e.evaluation.testAccuracy);
        this.testLoss.set(e.evaluation.testLoss);
        if (e.evaluation.bitsPerChar !== undefined && e.evaluation.perplexity !== undefined) {
          if (!this.registry.getSingleMetric('ringtrain_test_perplexity')) {
            this.registry.registerMetric(this.testBitsPerChar);
            this.registry.registerMetric(this.testPerplexity);
          }
          this.testBitsPerChar.set(e.evaluation.bitsPerChar);
          this.testPerplexity.set(e.evaluation.perplexity);
        }
        return;
      case 'checkpoint':
        this.checkpoints.inc({ result: e.ok ? 'saved' : 'failed' });
        if (e.checkpoint) {
          this.checkpointWrite.observe(e.checkpoint.writeMs / 1000);
          this.checkpointStall.observe(e.checkpoint.stallMs / 1000);
        }
        return;
      case 'warning':
        this.warnings.inc({ code: e.warning.code });
        return;
      default:
    }
  }
}

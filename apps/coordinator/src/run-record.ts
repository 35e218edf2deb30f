import type { ControlMessage } from '@ringtrain/protocol';
import { bitsPerCharacter, describeLanguageModelLoss, describeNonFinite } from '@ringtrain/trainer';
import type { Logger } from 'pino';
import type { RunStats } from './run-stats.js';
import type { StatusFeed } from './status-feed.js';

/** Checkpoints listed in the run's summary: the newest (a long run saves many; retention keeps fewer on disk). */
const MAX_CHECKPOINTS_KEPT = 1000;

/**
 * What the workers report, once the membership machine has checked it, into the run's figures
 * (RunStats) and its live picture (StatusFeed, which /metrics also reads).
 */
export class RunRecord {
  /** The size of each generation: an epoch's evaluation is complete once every rank of its generation reported. */
  private readonly worldSizes = new Map<number, number>();
  /** Waiting for a checkpoint saved after a step (a stop that waits for its checkpoint). */
  private savedWaiters: { after: number; wake: () => void }[] = [];

  constructor(
    readonly stats: RunStats,
    readonly feed: StatusFeed,
    private readonly log: Logger,
    private readonly epochs: number,
    /** Tokens a sample predicts (a language model's context), or 1: a language model's evaluation reads in nats, bits and perplexity. */
    private readonly positions: number,
    /** Characters a token stands for (a BPE's, on the validation text; 1 for characters): bits per character are per character. */
    private readonly charsPerToken: number,
    private readonly hooks: { progress: (stats: RunStats) => void; epoch: (epoch: number, stats: RunStats) => void },
  ) {}

  private withinPlan(epoch: number, step: number): boolean {
    return epoch < this.epochs && (this.stats.totalSteps === 0 || step <= this.stats.totalSteps);
  }

  generationSize(generation: number, worldSize: number): void {
    this.worldSizes.set(generation, worldSize);
  }

  /** Resolves true at the first checkpoint saved after `step`, false after `timeoutMs`. */
  nextSave(step: number, timeoutMs: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      this.savedWaiters.push({ after: step, wake: () => resolve(true) });
      setTimeout(() => resolve(false), timeoutMs).unref();
    });
  }

  /** A worker's report; `currentWorldSize` for an evaluation of a generation not seen forming. */
  report(rank: number, msg: ControlMessage, currentWorldSize: number): void {
    // Figures are kept by epoch and step: a peer's numbers past the run's plan would key memory
    // (and the loops that walk it) by the peer's choice, so they are dropped, with a warning.
    if ((msg.type === 'progress' || msg.type === 'evaluated') && !this.withinPlan(msg.epoch, msg.step)) {
      this.log.warn(`rank ${rank}: a ${msg.type} report for epoch ${msg.epoch}, step ${msg.step}, past the run's ${this.epochs} epochs and ${this.stats.totalSteps} steps: dropped`);
      return;
    }
    switch (msg.type) {
      case 'ready':
        this.feed.setRankState(rank, 'ready');
        return;
      case 'progress':
        this.stats.addProgress(msg);
        this.feed.progress(msg);
        this.hooks.progress(this.stats);
        return;
      case 'evaluated': {
        const e = this.stats.addEvaluation(msg, this.worldSizes.get(msg.generation) ?? currentWorldSize);
        if (!e) return;
        const lm = this.positions > 1;
        this.feed.evaluation({
          epoch: e.epoch,
          step: e.step,
          trainLoss: Number.isFinite(e.trainLoss) ? e.trainLoss : null,
          testLoss: e.testLoss,
          testAccuracy: e.testAccuracy,
          samples: e.testSamples,
          ...(lm ? { bitsPerChar: bitsPerCharacter(e.testLoss, this.charsPerToken), perplexity: Math.exp(e.testLoss) } : {}),
        });
        const where = e.atEpochEnd ? `epoch ${e.epoch + 1}/${this.epochs}${lm ? `, step ${e.step}` : ''}` : `step ${e.step}/${this.stats.totalSteps}`;
        this.log.info(
          { epoch: e.epoch, step: e.step, testLoss: e.testLoss, testAccuracy: e.testAccuracy, trainLoss: e.trainLoss, samplesPerSecond: this.stats.samplesPerSecond },
          lm
            ? `${where}: loss ${e.trainLoss.toFixed(4)}, ${describeLanguageModelLoss(e.testLoss, this.charsPerToken)} on ${e.testSamples} windows, ${Math.round(this.stats.samplesPerSecond * this.positions)} tokens/s`
            : `${where}: loss ${e.trainLoss.toFixed(4)}, test ${(100 * e.testAccuracy).toFixed(2)}% on ${e.testSamples} samples, ${Math.round(this.stats.samplesPerSecond)} samples/s`,
        );
        if (e.atEpochEnd) this.hooks.epoch(e.epoch, this.stats);
        return;
      }
      case 'done':
        this.feed.setRankState(rank, 'done');
        return;
      case 'saved':
        this.stats.checkpoints.push({ step: msg.step, path: msg.path, stallMs: msg.stallMs, writeMs: msg.writeMs });
        if (this.stats.checkpoints.length > MAX_CHECKPOINTS_KEPT) this.stats.checkpoints.shift();
        this.feed.checkpointSaved({ step: msg.step, path: msg.path, stallMs: msg.stallMs, writeMs: msg.writeMs });
        this.log.info({ step: msg.step, path: msg.path, stallMs: msg.stallMs, writeMs: msg.writeMs }, `checkpoint at step ${msg.step}: ${msg.path} (training paused ${msg.stallMs.toFixed(1)} ms to copy, written in ${msg.writeMs.toFixed(0)} ms)`);
        for (const w of this.savedWaiters.filter((x) => msg.step > x.after)) w.wake();
        this.savedWaiters = this.savedWaiters.filter((x) => msg.step <= x.after);
        return;
      case 'saveFailed':
        this.feed.checkpointFailed(msg.step, msg.message);
        return;
      case 'health':
        this.feed.health({ step: msg.step, tensors: msg.tensors });
        return;
      case 'ringProbe': {
        const { generation, worldSize, latencyMs, busbwMBps, probeBytes, segmentBytes, transport, hosts, why, tuning, tunedBefore, bucketBytes } = msg;
        this.feed.ringProbe({ generation, worldSize, latencyMs, busbwMBps, probeBytes, segmentBytes, transport, ...(hosts ? { hosts } : {}), ...(tuning ? { tuning } : {}), ...(bucketBytes ? { bucketBytes } : {}) });
        const tuned = tuning ? ` chosen from ${tuning.map((t) => `${t.segmentBytes >> 10} KiB ${t.ms.toFixed(2)} ms`).join(', ')}` : tunedBefore ? ' (as an earlier ring of this run chose)' : '';
        const overlap = bucketBytes ? `, gradients all-reduced in ranges of ≥ ${bucketBytes >> 10} KiB during the backward pass` : '';
        const tcp = `segments of ${segmentBytes >> 10} KiB${tuned}${overlap}`;
        const over =
          transport === 'shared memory'
            ? 'through shared memory (all ranks on one host)'
            : transport === 'hosts'
              ? `across ${hosts} hosts, through shared memory inside each and over TCP between them, ${tcp}`
              : `over TCP, ${tcp}${why ? ` (not shared memory: ${why})` : ''}`;
        this.log.info({ ring: { worldSize, latencyMs, busbwMBps, segmentBytes, transport } }, `ring of ${worldSize} ${over}: all-reduce latency ${latencyMs.toFixed(2)} ms, bus bandwidth ${busbwMBps.toFixed(0)} MB/s (${((busbwMBps * 8) / 1000).toFixed(2)} Gbit/s)`);
        return;
      }
      case 'nonFinite': {
        const where = describeNonFinite(msg);
        const then = msg.action === 'skip' ? 'the step is skipped on every rank' : 'the run stops';
        this.feed.warning({ code: 'WARN_NON_FINITE', message: `rank ${rank}: ${where} is ${msg.value} at step ${msg.step}; ${then}`, rank: rank, step: msg.step, ...(msg.tensor ? { tensor: msg.tensor } : {}) });
        return;
      }
      case 'failed':
        this.feed.setRankState(rank, 'failed', msg.message);
        return;
      case 'aborted':
        this.log.warn({ rank: rank, step: msg.step, code: msg.code }, `rank ${rank} paused after step ${msg.step}: ${msg.message}`);
        return;
    }
  }
}

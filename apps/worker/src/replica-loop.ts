import { setTimeout as sleep, setImmediate as yieldToEventLoop } from 'node:timers/promises';
import type { Communicator } from '@ringtrain/allreduce';
import { type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { gradientCompressionOf, type JobConfig, type Trainer } from '@ringtrain/trainer';
import type { Logger } from 'pino';
import type { CheckpointWriter } from './checkpointing.js';
import type { ControlChannel } from './control-channel.js';
import { WorkerError } from './errors.js';
import type { Faults } from './faults.js';
import { bucketBytesFor, type RingMeasurement } from './ring-probe.js';

/** The longest a replica loop computes before it lets the event loop run (heartbeats go every 250 ms). */
const TURN_EVERY_MS = 50;

export interface ReplicaLoopOptions {
  assign: MessageOf<'assign'>;
  trainer: Trainer;
  comm: Communicator;
  channel: ControlChannel;
  /** Rank 0's checkpoint writer (null on other ranks or without a checkpoint policy). */
  writer: CheckpointWriter | null;
  faults: Faults;
  log: Logger;
  /** The step to stop at (the run's last, or --max-steps). */
  totalSteps: number;
  /** True once this worker should leave at the next step boundary (SIGTERM). */
  leaving: () => boolean;
  /** The last epoch whose evaluation this worker saw every rank take; kept across generations. */
  evaluated: { evaluatedThrough: number };
  /** The overlap's range size (see `overlapBucketBytes`), 0 for none. */
  bucketBytes: number;
}

/** How a generation's steps ended: all taken, or at a step boundary to regroup or to leave. */
export type LoopEnd = 'done' | 'regroup' | 'leave';

/** Every rank's evaluation share added up, so each rank (rank 0 for its checkpoints) knows the totals. */
async function globalMetrics(comm: Communicator, share: { lossSum: number; correct: number; samples: number }): Promise<Record<string, number>> {
  const parts = await comm.allgather(new Uint8Array(Float64Array.of(share.lossSum, share.correct, share.samples).buffer));
  const sum = [0, 0, 0];
  for (const p of parts) new Float64Array(Uint8Array.from(p).buffer).forEach((v, i) => (sum[i] += v));
  return sum[2] ? { test_loss: sum[0] / sum[2], test_accuracy: sum[1] / sum[2] } : {};
}

/**
 * All ranks compare SHA-256 of their weights; a difference is a bug or corruption, never noise. The
 * ranks outside the most common hash (rank 0's on a tie) are named as the ones that diverged.
 */
export async function verifyReplicas(comm: Communicator, trainer: Trainer, when: string): Promise<string> {
  const hash = trainer.model.params.valuesHash();
  const all = (await comm.allgather(Buffer.from(hash, 'hex'))).map((b) => Buffer.from(b).toString('hex'));
  const count = (h: string): number => all.filter((x) => x === h).length;
  const agreed = all.reduce((best, h) => (count(h) > count(best) ? h : best), all[0]);
  const differing = all.map((h, r) => [r, h] as const).filter(([, h]) => h !== agreed);
  if (differing.length) {
    const agreeing = all.map((h, r) => (h === agreed ? r : -1)).filter((r) => r >= 0);
    throw new WorkerError('ERR_REPLICA_DIVERGED', `replicas differ at ${when}: ${differing.map(([r, h]) => `rank ${r} has ${h.slice(0, 16)}…`).join(', ')}; rank${agreeing.length > 1 ? 's' : ''} ${agreeing.join(', ')} ${agreed.slice(0, 16)}…`);
  }
  return hash;
}

/** Flips the lowest bit of the last weight: the smallest possible divergence (the drill's fault). */
export function flipLastBit(values: Float32Array): void {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  bits[bits.length - 1] ^= 1;
}

/**
 * The overlap's range size for this ring, 0 for none: the job's, else the one its measurement
 * picks (bucketBytesFor). Where any TCP is left: through shared memory alone a range is summed
 * only once every rank has arrived with it, so ranges sent early would only add rounds of waiting.
 */
export function overlapBucketBytes(config: Pick<JobConfig, 'bucketBytes'>, comm: Communicator, worldSize: number, ring: RingMeasurement): number {
  return worldSize === 1 || comm.sharedMemory ? 0 : (config.bucketBytes ?? bucketBytesFor(ring));
}

const emptyReport = () => ({ loss: 0, samples: 0, correct: 0, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, steps: 0, skipped: 0 });

/**
 * The replica loop of one generation: step after step (the trainer's step: gradients, the
 * non-finite rule, the all-reduce, the update), with the reports, replica checks, evaluations and
 * checkpoints around it. Between steps it looks for a newer generation (a join or a fault
 * elsewhere) and for a request to leave; a collective that fails rejects, and the weights are those
 * of the last complete step.
 */
export async function runReplicaLoop(o: ReplicaLoopOptions): Promise<{ end: LoopEnd; replicaChecks: number }> {
  const { assign, trainer, comm, channel: ch, writer, faults, log, totalSteps } = o;
  const { progressEvery, verifyEvery, checkpoint, healthEvery } = assign;
  const config = trainer.config;
  const params = trainer.model.params;
  const layoutHash = params.layoutHash();
  const delayMs = faults.delayMs(assign.rank);
  const ids = { v: PROTOCOL_VERSION, generation: assign.generation, rank: assign.rank } as const;
  const alone = assign.worldSize === 1;
  // Error feedback's residual is this rank's alone: it starts at zero in each generation.
  const { wire, errorFeedback } = gradientCompressionOf(config);
  const residual = errorFeedback ? new Float32Array(params.grads.length) : undefined;
  let replicaChecks = 0;
  let metrics: Record<string, number> = {};
  let writeError: Error | null = null;
  let report = emptyReport();
  let saveDue = false;
  let verifyDue = false;
  /**
   * Each rank's share of an evaluation to the coordinator (at an epoch's end, or every `evalEvery`
   * steps within it); the global figures for checkpoints.
   */
  const evaluate = async (epoch: number, atEpochEnd = true): Promise<void> => {
    if (atEpochEnd) faults.exitInEvaluation(assign.rank, epoch, assign.generation);
    const ev = await trainer.evaluateYielding('test');
    const share = { lossSum: ev.loss * ev.samples, correct: Math.round(ev.accuracy * ev.samples), samples: ev.samples };
    ch.send({ type: 'evaluated', ...ids, epoch, step: trainer.globalStep, atEpochEnd, ...share });
    metrics = await globalMetrics(comm, share);
    // Every rank had sent its share before this all-gather could complete.
    if (atEpochEnd) o.evaluated.evaluatedThrough = Math.max(o.evaluated.evaluatedThrough, epoch);
  };
  // A fault during an epoch's evaluation left it untaken: the generation after it (at that epoch's
  // end still: nothing trains before the evaluation) takes it first, unless some rank saw it taken
  // (then every share had been sent). A resumed run starts at generation 1 and does not redo it.
  if (assign.generation > 1 && trainer.cursor === 0 && trainer.epoch > 0) {
    const seen = await comm.allgather(new Uint8Array(Int32Array.of(o.evaluated.evaluatedThrough).buffer));
    const through = Math.max(...seen.map((b) => new Int32Array(Uint8Array.from(b).buffer)[0]));
    o.evaluated.evaluatedThrough = through;
    if (through < trainer.epoch - 1) {
      log.warn(`epoch ${trainer.epoch}'s evaluation was interrupted by a fault: taking it now`);
      await evaluate(trainer.epoch - 1);
    }
  }
  let lastTurn = performance.now();
  while (trainer.globalStep < totalSteps) {
    // Inside a DiLoCo round the replicas differ: leave or regroup at its end (a broken ring
    // rewinds the round instead; see the worker).
    if (trainer.atSyncPoint) {
      if (o.leaving()) return { end: 'leave', replicaChecks };
      if (ch.has('assign')) return { end: 'regroup', replicaChecks };
    }
    const step = trainer.globalStep;
    const epoch = trainer.epoch;
    const cursor = trainer.cursor;
    const r = await trainer.step(
      // Alone there is nothing to sum: the gradient is this rank's own, checked before.
      async (grads, offset, sum) => (alone ? true : (await comm.allreduce(grads, { step, layoutHash, wire, ...(sum ? { average: false } : {}), residual: residual?.subarray(offset, offset + grads.length) })).finite),
      {
        bucketBytes: o.bucketBytes,
        afterGradients: async () => {
          faults.exitAt(assign.rank, step, assign.generation);
          if (delayMs) await sleep(delayMs);
          if (faults.nanAt(assign.rank, step)) params.grads[0] = Number.NaN;
          if (faults.overflowAt(step)) params.grads[1] = 3e38; // in the range reduced last, after this hook
        },
        onNonFinite: (bad) => {
          // This rank's own value is reported by it; an overflowed sum (the same on every rank) by rank 0.
          if (bad.what !== 'gradientSum' || assign.rank === 0) {
            ch.send({ type: 'nonFinite', ...ids, step, what: bad.what, ...(bad.tensor ? { tensor: bad.tensor } : {}), value: bad.value, action: config.nonFinite });
          }
        },
        health: assign.rank === 0 && healthEvery > 0 && step % healthEvery === 0,
        lastStep: step + 1 === totalSteps,
      },
    );
    if (faults.divergeAt(assign.rank, step)) flipLastBit(params.values);
    faults.logStep({ ring: assign.ringId, generation: assign.generation, rank: assign.rank, step, epoch, cursor, ...trainer.batchSlice });
    if (r.tensors) ch.send({ type: 'health', ...ids, step: trainer.globalStep, tensors: r.tensors });
    if (!r.skipped) {
      report.loss += r.loss;
      report.correct += r.correct;
    }
    report.samples += trainer.localBatch;
    report.dataMs += r.dataMs;
    report.computeMs += r.computeMs;
    report.allreduceMs += r.allreduceMs;
    report.optimizerMs += r.optimizerMs;
    report.skipped += r.skipped ? 1 : 0;
    report.steps++;
    const epochEnds = r.epochEnded || trainer.globalStep === totalSteps;
    if (report.steps >= progressEvery || epochEnds) {
      const counted = report.steps - report.skipped;
      ch.send({ type: 'progress', ...ids, epoch, step: trainer.globalStep, ...report, loss: counted ? report.loss / counted : 0, lr: trainer.learningRate });
      report = emptyReport();
    }
    // A collective need not yield to the event loop: alone, or through shared memory when the peers
    // arrived first, every await resolves at once. Steps chained that way starve the timers, and a
    // rank whose heartbeats stop for 1.5 s is dropped by its peers (a 2-worker GPT, 120 ms steps,
    // lost one every 20–400 steps).
    if (performance.now() - lastTurn >= TURN_EVERY_MS) {
      await yieldToEventLoop();
      lastTurn = performance.now();
    }
    if (ch.error) throw ch.error;
    const synced = trainer.atSyncPoint;
    // Inside a DiLoCo round the replicas differ by design: a check due there waits for its end.
    verifyDue ||= (verifyEvery > 0 && trainer.globalStep % verifyEvery === 0) || epochEnds;
    if (synced && verifyDue) {
      verifyDue = false;
      await verifyReplicas(comm, trainer, `step ${trainer.globalStep}`);
      replicaChecks++;
    }
    // One taken within an epoch and lost to a fault is not taken again: the next one comes.
    if (epochEnds) await evaluate(epoch);
    else if (config.evalEvery && trainer.globalStep % config.evalEvery === 0) await evaluate(epoch, false);
    const asked = writer !== null && ch.take('checkpointNow') !== null;
    // A save that falls inside a DiLoCo round waits for its end (a checkpoint is a sync point).
    // The run's last step counts as an epoch's end: a run counted in steps (a language model's, or
    // --max-steps) ends mid-epoch, and its final state must not be lost.
    saveDue ||= Boolean(checkpoint && (asked || (checkpoint.everySteps > 0 && trainer.globalStep % checkpoint.everySteps === 0) || (checkpoint.atEpochEnd && epochEnds)));
    const saveNow = checkpoint && saveDue && synced;
    if (saveNow) saveDue = false;
    if (saveNow && writer) {
      const { stallMs, written } = await writer.save(metrics);
      const saved = trainer.globalStep;
      written.then(
        ({ path, writeMs }) => ch.send({ type: 'saved', ...ids, step: saved, path, stallMs, writeMs }),
        (err: Error) => {
          if (checkpoint.onError === 'warn') {
            log.warn(`checkpoint at step ${saved} not saved, training goes on: ${err.message}`);
            ch.send({ type: 'saveFailed', ...ids, step: saved, message: err.message.slice(0, 4000) });
          } else writeError ??= err;
        },
      );
    }
    if (writeError) throw writeError;
  }
  await writer?.flush();
  if (writeError) throw writeError;
  return { end: 'done', replicaChecks };
}


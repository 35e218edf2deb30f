import { hostname } from 'node:os';
import { setTimeout as sleep, setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { CollectiveError, Communicator, WebSocketTransport } from '@ringtrain/allreduce';
import { writeSafetensors } from '@ringtrain/checkpoint';
import { type JobConfig, jobConfigHash, type NonFinite, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { PROTOCOL_VERSION } from '@ringtrain/protocol';
import type { RngState } from '@ringtrain/core';
import type { Logger } from 'pino';
import { CheckpointWriter, restoreTensors } from './checkpointing.js';
import { ChannelError, ControlChannel } from './control-channel.js';
import { WorkerError } from './errors.js';
import { faultsFromEnv } from './faults.js';

export { WorkerError };

export interface WorkerOptions {
  /** ws://host:port of the coordinator. */
  coordinator: string;
  /** Shared token for the coordinator and the ring. */
  token?: string;
  /** The config this worker was started with, if any: the coordinator refuses a different one. */
  config?: JobConfig;
  /** Where the ring endpoint listens (default 127.0.0.1, any port) and the address peers dial. */
  ringHost?: string;
  ringPort?: number;
  advertise?: string;
  logger: Logger;
  /** A ring neighbour silent this long is lost (default 2.5 s, or RINGTRAIN_PEER_TIMEOUT_MS). */
  peerTimeoutMs?: number;
  /** How long to wait for the coordinator to assign a place and say start (default 120 s). */
  joinTimeoutMs?: number;
}

export interface WorkerResult {
  rank: number;
  worldSize: number;
  steps: number;
  weightsHash: string;
}


/**
 * The agent: join the coordinator → take a rank and form the ring → receive rank 0's initial weights
 * and check them → train (local gradients, ring all-reduce of the flat gradient buffer, the same
 * optimizer step on every replica) → report → finish. Any failure is reported to the coordinator
 * and thrown.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerResult> {
  let log = options.logger;
  const transport = await WebSocketTransport.listen({
    host: options.ringHost ?? '127.0.0.1',
    port: options.ringPort ?? 0,
    advertise: options.advertise,
    token: options.token,
    peerTimeoutMs: options.peerTimeoutMs ?? (Number(process.env.RINGTRAIN_PEER_TIMEOUT_MS) || 2500),
    logger: log,
  });
  let channel: ControlChannel | null = null;
  let comm: Communicator | null = null;
  let rank: number | undefined;
  let generation: number | undefined;
  try {
    channel = await ControlChannel.connect(options.coordinator, { token: options.token });
    const ch = channel;
    ch.send({
      type: 'hello',
      v: PROTOCOL_VERSION,
      workerId: `${hostname()}:${process.pid}`,
      ringAddress: transport.address,
      configHash: options.config ? jobConfigHash(options.config) : null,
      host: hostname(),
      pid: process.pid,
    });
    const joinTimeout = options.joinTimeoutMs ?? 120_000;
    const reply = await ch.next(['assign', 'reject'], joinTimeout, 'rank assignment');
    if (reply.type === 'reject') throw new WorkerError(reply.code, `the coordinator refused this worker: ${reply.reason}`);
    const assign = reply;
    ({ rank, generation } = assign);
    log = log.child({ rank });
    const config = parseJobConfig(assign.config);
    if (jobConfigHash(config) !== assign.configHash) throw new WorkerError('ERR_CONFIG_MISMATCH', `the job config from the coordinator does not match its hash ${assign.configHash}`);
    const trainer = new Trainer(config, { rank: assign.rank, worldSize: assign.worldSize });
    if (trainer.backendHint) log.warn(trainer.backendHint);
    log.info({ backend: trainer.backend.description, generation }, `rank ${rank} of ${assign.worldSize}: backend ${trainer.backend.description}`);

    await transport.join({ rank: assign.rank, worldSize: assign.worldSize, ringId: assign.ringId, prevAddress: assign.prevAddress });
    comm = new Communicator(transport, { logger: log, timeoutMs: 60_000, segmentBytes: process.env.RINGTRAIN_SEGMENT_BYTES ? Number(process.env.RINGTRAIN_SEGMENT_BYTES) : undefined });
    const c = comm;
    // A stop from the coordinator ends the ring at once: collectives in flight reject.
    ch.onStop = () => void c.close();
    const params = trainer.model.params;
    const layoutHash = params.layoutHash();
    if (assign.resume) {
      await restoreTensors(c, trainer, assign.resume.path, false);
      trainer.restore({ ...assign.resume.state, dropoutRng: assign.resume.state.dropoutRng as RngState });
      log.info(`resumed from ${assign.resume.path} at step ${trainer.globalStep} (epoch ${trainer.epoch}, sample ${trainer.cursor})`);
    } else if (assign.initFrom) {
      await restoreTensors(c, trainer, assign.initFrom, true);
      log.info(`weights initialised from ${assign.initFrom}`);
    } else {
      await c.broadcast(params.values, { root: 0, layoutHash });
    }
    const initialHash = await verifyReplicas(c, trainer, 'initial weights');
    const { progressEvery, verifyEvery, maxSteps, checkpoint, healthEvery } = assign;
    const remaining = (config.epochs - trainer.epoch) * trainer.stepsPerEpoch - Math.floor(trainer.cursor / trainer.globalBatch);
    const totalSteps = Math.max(0, maxSteps > 0 ? Math.min(maxSteps, trainer.globalStep + remaining) : trainer.globalStep + remaining);
    ch.send({
      type: 'ready',
      v: PROTOCOL_VERSION,
      generation: assign.generation,
      rank: assign.rank,
      weightsHash: initialHash,
      backend: trainer.backend.description,
      totalSteps,
      parameters: params.length,
    });
    await ch.next(['start'], joinTimeout, 'start');

    const faults = faultsFromEnv();
    const delayMs = faults.delayMs(assign.rank);
    const ids = { v: PROTOCOL_VERSION, generation: assign.generation, rank: assign.rank } as const;
    let replicaChecks = 1;
    let metrics: Record<string, number> = {};
    const writer = checkpoint && assign.rank === 0 ? new CheckpointWriter(trainer, checkpoint, assign.worldSize) : null;
    let writeError: Error | null = null;
    const emptyReport = () => ({ loss: 0, samples: 0, correct: 0, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, steps: 0, skipped: 0 });
    let report = emptyReport();
    while (trainer.globalStep < totalSteps) {
      const step = trainer.globalStep;
      const epoch = trainer.epoch;
      const t0 = performance.now();
      const r = trainer.computeGradients();
      if (delayMs) await sleep(delayMs);
      if (faults.nanAt(assign.rank, step)) params.grads[0] = Number.NaN;
      if (faults.overflowAt(step)) params.grads[params.grads.length - 1] = 3e38;
      // Checked before the ring so the report names this rank; a NaN left in the gradient reaches
      // every rank through the all-reduce, so that under "skip" all of them skip the same step.
      const bad = trainer.checkFinite(r.loss);
      if (bad) {
        ch.send({ type: 'nonFinite', ...ids, step, what: bad.what, ...(bad.tensor ? { tensor: bad.tensor } : {}), value: bad.value, action: config.nonFinite });
        if (config.nonFinite === 'stop') throw trainer.nonFiniteError(bad, step);
        // Poison the first element: NaN + x = NaN, so after the all-reduce it is NaN on every rank.
        params.grads[0] = Number.NaN;
      }
      const t1 = performance.now();
      // Alone there is nothing to sum: the gradient is this rank's own, checked above.
      const finite = assign.worldSize === 1 ? bad === null : (await c.allreduce(params.grads, { step, layoutHash })).finite;
      const t2 = performance.now();
      // The all-reduce tells every rank alike whether the result is finite. Not finite with no
      // poison in element 0: every rank's own gradient was finite, but their sum overflowed.
      const skip = !finite;
      if (skip && Number.isFinite(params.grads[0])) {
        const overflow: NonFinite = { what: 'gradientSum', value: params.grads.find((x) => !Number.isFinite(x)) ?? Number.NaN };
        if (assign.rank === 0) ch.send({ type: 'nonFinite', ...ids, step, what: overflow.what, value: overflow.value, action: config.nonFinite });
        if (config.nonFinite === 'stop') throw trainer.nonFiniteError(overflow, step);
      }
      let epochEnded: boolean;
      if (skip) {
        epochEnded = trainer.skipUpdate();
        report.skipped++;
      } else if (assign.rank === 0 && healthEvery > 0 && step % healthEvery === 0) {
        const measured = trainer.applyUpdateWithHealth();
        epochEnded = measured.epochEnded;
        ch.send({ type: 'health', ...ids, step: trainer.globalStep, tensors: measured.tensors });
      } else {
        epochEnded = trainer.applyUpdate();
      }
      const t3 = performance.now();
      if (!skip) {
        report.loss += r.loss;
        report.correct += r.correct;
      }
      report.samples += config.batchSize;
      report.dataMs += r.dataMs;
      report.computeMs += t1 - t0 - r.dataMs;
      report.allreduceMs += t2 - t1;
      report.optimizerMs += t3 - t2;
      report.steps++;
      const epochEnds = epochEnded || trainer.globalStep === totalSteps;
      if (report.steps >= progressEvery || epochEnds) {
        const counted = report.steps - report.skipped;
        ch.send({ type: 'progress', ...ids, epoch, step: trainer.globalStep, ...report, loss: counted ? report.loss / counted : 0, lr: trainer.learningRate });
        report = emptyReport();
        if (assign.worldSize === 1) await yieldToEventLoop(); // alone, no collective yields to the event loop
      }
      if (ch.error) throw ch.error;
      if ((verifyEvery > 0 && trainer.globalStep % verifyEvery === 0) || epochEnds) {
        await verifyReplicas(c, trainer, `step ${trainer.globalStep}`);
        replicaChecks++;
      }
      if (epochEnds) {
        const ev = trainer.evaluate('test');
        const share = { lossSum: ev.loss * ev.samples, correct: Math.round(ev.accuracy * ev.samples), samples: ev.samples };
        ch.send({ type: 'evaluated', ...ids, epoch, ...share });
        metrics = await globalMetrics(c, share);
      }
      const asked = writer !== null && ch.take('checkpointNow') !== null;
      const saveNow = checkpoint && (asked || (checkpoint.everySteps > 0 && trainer.globalStep % checkpoint.everySteps === 0) || (checkpoint.atEpochEnd && epochEnded));
      if (saveNow && writer) {
        const { stallMs, written } = await writer.save(metrics);
        const step = trainer.globalStep;
        written.then(
          ({ path, writeMs }) => ch.send({ type: 'saved', ...ids, step, path, stallMs, writeMs }),
          (err: Error) => {
            if (checkpoint.onError === 'warn') {
              log.warn(`checkpoint at step ${step} not saved, training goes on: ${err.message}`);
              ch.send({ type: 'saveFailed', ...ids, step, message: err.message.slice(0, 4000) });
            } else writeError ??= err;
          },
        );
      }
      if (writeError) throw writeError;
    }
    await writer?.flush();
    if (writeError) throw writeError;
    const finalHash = await verifyReplicas(c, trainer, 'final weights');
    replicaChecks++;
    if (assign.rank === 0 && assign.saveFinal) {
      writeSafetensors(
        assign.saveFinal,
        params.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.value(t.name) })),
        { format: 'ringtrain-weights/1', step: String(trainer.globalStep), worldSize: String(assign.worldSize), configHash: assign.configHash, config: JSON.stringify(config) },
      );
      log.info(`final weights written to ${assign.saveFinal}`);
    }
    ch.send({ type: 'done', v: PROTOCOL_VERSION, generation: assign.generation, rank: assign.rank, steps: trainer.globalStep, weightsHash: finalHash, replicaChecks });
    ch.onStop = null;
    // Hold the ring open until the coordinator has heard from every rank (it then says DONE).
    await ch.next([], 30_000, 'end of the run').catch((err: ChannelError) => {
      if (err.code !== 'DONE') log.warn(`after finishing: ${err.message}`);
    });
    return { rank: assign.rank, worldSize: assign.worldSize, steps: trainer.globalStep, weightsHash: finalHash };
  } catch (err) {
    // A stop or lost coordinator is the root cause of the collective errors it provokes.
    const e = channel?.error && channel.error.code !== 'DONE' && (err instanceof CollectiveError || err instanceof ChannelError) ? channel.error : (err as Error & { code?: string });
    const code = e.code ?? 'ERR_WORKER';
    if (!(e instanceof ChannelError)) {
      channel?.send({ type: 'failed', v: PROTOCOL_VERSION, generation, rank, code, message: e.message.slice(0, 4000) });
    }
    throw e instanceof WorkerError || e instanceof ChannelError || e instanceof CollectiveError ? e : new WorkerError(code, e.message, { cause: e });
  } finally {
    await comm?.close();
    await transport.close();
    await channel?.close();
  }
}

/** Every rank's evaluation share added up, so each rank (rank 0 for its checkpoints) knows the totals. */
async function globalMetrics(comm: Communicator, share: { lossSum: number; correct: number; samples: number }): Promise<Record<string, number>> {
  const parts = await comm.allgather(new Uint8Array(Float64Array.of(share.lossSum, share.correct, share.samples).buffer));
  const sum = [0, 0, 0];
  for (const p of parts) new Float64Array(Uint8Array.from(p).buffer).forEach((v, i) => (sum[i] += v));
  return sum[2] ? { test_loss: sum[0] / sum[2], test_accuracy: sum[1] / sum[2] } : {};
}

/** All ranks compare SHA-256 of their weights; a difference is a bug or corruption, never noise. */
async function verifyReplicas(comm: Communicator, trainer: Trainer, when: string): Promise<string> {
  const hash = trainer.model.params.valuesHash();
  const all = (await comm.allgather(Buffer.from(hash, 'hex'))).map((b) => Buffer.from(b).toString('hex'));
  const differing = all.map((h, r) => [r, h] as const).filter(([, h]) => h !== all[0]);
  if (differing.length) {
    throw new WorkerError('ERR_REPLICA_DIVERGED', `replicas differ at ${when}: rank 0 has ${all[0].slice(0, 16)}…, ${differing.map(([r, h]) => `rank ${r} has ${h.slice(0, 16)}…`).join(', ')}`);
  }
  return hash;
}

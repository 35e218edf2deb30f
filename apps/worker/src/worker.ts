import { hostname } from 'node:os';
import { CollectiveError, Communicator, WebSocketTransport } from '@ringtrain/allreduce';
import { writeSafetensors } from '@ringtrain/checkpoint';
import { type JobConfig, jobConfigHash, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import type { RngState } from '@ringtrain/core';
import type { Logger } from 'pino';
import { CheckpointWriter, restoreTensors } from './checkpointing.js';
import { ChannelError, ControlChannel } from './control-channel.js';
import { WorkerError } from './errors.js';
import { faultsFromEnv } from './faults.js';
import { runReplicaLoop, verifyReplicas } from './replica-loop.js';
import { syncState } from './state-sync.js';

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
  /** A ring neighbour silent this long is lost (default 2.5 s). */
  peerTimeoutMs?: number;
  /** How long to wait for the coordinator to assign a place and say start (default 120 s). */
  joinTimeoutMs?: number;
  /** Bytes per pipelined all-reduce segment (the communicator's default when unset). */
  segmentBytes?: number;
  /** Aborted: leave the run cleanly at the next step boundary (SIGTERM, preemption). */
  leave?: AbortSignal;
}

export interface WorkerResult {
  rank: number;
  worldSize: number;
  steps: number;
  weightsHash: string;
  /** True when the worker left before the end (asked to), not because the run finished. */
  left: boolean;
}

/** A generation's ring failed under this worker: it waits for the next one. */
class GenerationLost extends Error {}

/**
 * The agent: join the coordinator, then take part in generation after generation of the ring
 * until the run ends. Each generation: form the ring → share the training state (the most
 * advanced replica's, or rank 0's fresh weights at the start) → ready → the replica loop. A lost
 * peer, a newer generation or a regroup ends a generation, not the worker: it reports `aborted`,
 * leaves that ring and waits for its next place. A fatal error (a stop, a lost coordinator, a
 * non-finite value under "stop", a failed checkpoint) is reported to the coordinator and thrown.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerResult> {
  let log = options.logger;
  const transport = await WebSocketTransport.listen({
    host: options.ringHost ?? '127.0.0.1',
    port: options.ringPort ?? 0,
    advertise: options.advertise,
    token: options.token,
    peerTimeoutMs: options.peerTimeoutMs ?? 2500,
    logger: log,
  });
  let channel: ControlChannel | null = null;
  let comm: Communicator | null = null;
  let assign: MessageOf<'assign'> | null = null;
  let trainer: Trainer | null = null;
  let writer: CheckpointWriter | null = null;
  const faults = faultsFromEnv();
  const joinTimeout = options.joinTimeoutMs ?? 120_000;
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
    // Outside the replica loop a newer generation interrupts at once (a join or a sync waiting
    // on peers that have moved on); inside it, at the next step boundary.
    let interruptible = true;
    const abandon = (): void => {
      comm?.detach();
      void transport.leave();
    };
    ch.onArrival = (msg) => {
      if (msg.type === 'assign' && interruptible) abandon();
    };
    ch.onStop = () => abandon();
    const reply = await ch.next(['assign', 'reject'], joinTimeout, 'rank assignment');
    if (reply.type === 'reject') throw new WorkerError(reply.code, `the coordinator refused this worker: ${reply.reason}`);
    assign = reply;
    // Whether this replica holds the run's training state (from a completed state sync).
    const state = { held: false };
    for (;;) {
      const a: MessageOf<'assign'> = assign;
      log = options.logger.child({ rank: a.rank, generation: a.generation });
      if (!trainer) {
        const config = parseJobConfig(a.config);
        if (jobConfigHash(config) !== a.configHash) throw new WorkerError('ERR_CONFIG_MISMATCH', `the job config from the coordinator does not match its hash ${a.configHash}`);
        trainer = new Trainer(config, { rank: a.rank, worldSize: a.worldSize, globalBatch: a.globalBatch });
        if (trainer.backendHint) log.warn(trainer.backendHint);
        log.info({ backend: trainer.backend.description }, `rank ${a.rank} of ${a.worldSize}: backend ${trainer.backend.description}`);
      }
      const t = trainer;
      t.place(a.rank, a.worldSize);
      interruptible = true;
      let outcome: Awaited<ReturnType<typeof runGeneration>>;
      try {
        await transport.join({ rank: a.rank, worldSize: a.worldSize, ringId: a.ringId, prevAddress: a.prevAddress });
        comm = new Communicator(transport, { logger: log, timeoutMs: 60_000, segmentBytes: options.segmentBytes });
        if (ch.has('assign')) throw new GenerationLost('a newer generation formed while this one was joining');
        const c = comm;
        if (a.rank === 0 && a.checkpoint) writer ??= new CheckpointWriter(t, a.checkpoint);
        outcome = await runGeneration(a, t, c, ch, a.rank === 0 ? writer : null, state, () => (interruptible = false), log, options.leave, faults);
      } catch (err) {
        if (ch.error) throw err;
        if (!(err instanceof CollectiveError || err instanceof GenerationLost)) throw err;
        // This generation's ring broke (or was replaced): the weights are those of the last complete step.
        log.warn({ code: (err as { code?: string }).code, step: t.globalStep }, `generation ${a.generation} ended under rank ${a.rank}: ${err.message}; waiting for the next`);
        if (!ch.has('assign')) {
          const peer = err instanceof CollectiveError && err.peer !== undefined ? { peer: err.peer } : {};
          ch.send({ type: 'aborted', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step: t.globalStep, code: (err as { code?: string }).code ?? 'ERR_ABORTED', message: err.message.slice(0, 4000), ...peer });
        }
        outcome = { end: 'regroup' };
      }
      if (outcome.end === 'done') {
        ch.onStop = null;
        ch.onArrival = null;
        // Hold on until the coordinator has heard from every rank (it then says DONE); a fault
        // elsewhere before that forms one more generation, which has no steps left to take.
        const next = await ch.next(['assign'], 30_000, 'end of the run').catch((err: ChannelError) => {
          if (err.code !== 'DONE') log.warn(`after finishing: ${err.message}`);
          return null;
        });
        comm?.detach();
        comm = null;
        await transport.leave();
        if (!next) return { rank: a.rank, worldSize: a.worldSize, steps: t.globalStep, weightsHash: outcome.weightsHash, left: false };
        ch.onStop = () => abandon();
        ch.onArrival = (msg) => {
          if (msg.type === 'assign' && interruptible) abandon();
        };
        assign = newest(ch, next);
        continue;
      }
      const leaving = outcome.end === 'leave' || (outcome.end === 'regroup' && options.leave?.aborted);
      // The coordinator hears of a leave before the ring closes, so that the neighbours' broken
      // links are not taken for a fault.
      if (leaving) ch.send({ type: 'leave', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step: t.globalStep, reason: 'asked to leave (SIGTERM)' });
      comm?.detach();
      comm = null;
      await transport.leave();
      if (leaving) {
        log.warn(`left the run after step ${t.globalStep}`);
        await writer?.flush();
        return { rank: a.rank, worldSize: a.worldSize, steps: t.globalStep, weightsHash: t.model.params.valuesHash(), left: true };
      }
      // Regroup: the next place, while the coordinator forms it (a stop or a lost coordinator ends
      // the wait; below the minimum size the coordinator may wait up to its rejoin timeout).
      const next = await nextPlace(ch, Math.max(joinTimeout, 600_000), options.leave);
      if (!next) {
        ch.send({ type: 'leave', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step: t.globalStep, reason: 'asked to leave (SIGTERM)' });
        log.warn(`left the run after step ${t.globalStep}`);
        return { rank: a.rank, worldSize: a.worldSize, steps: t.globalStep, weightsHash: t.model.params.valuesHash(), left: true };
      }
      assign = newest(ch, next);
    }
  } catch (err) {
    // A stop or lost coordinator is the root cause of the collective errors it provokes.
    const e = channel?.error && channel.error.code !== 'DONE' && (err instanceof CollectiveError || err instanceof ChannelError || err instanceof GenerationLost) ? channel.error : (err as Error & { code?: string });
    const code = e.code ?? 'ERR_WORKER';
    if (!(e instanceof ChannelError)) {
      channel?.send({ type: 'failed', v: PROTOCOL_VERSION, generation: assign?.generation, rank: assign?.rank, code, message: e.message.slice(0, 4000) });
    }
    throw e instanceof WorkerError || e instanceof ChannelError || e instanceof CollectiveError ? e : new WorkerError(code, e.message, { cause: e });
  } finally {
    comm?.detach();
    await writer?.flush();
    await transport.close();
    await channel?.close();
  }
}

/** The next assignment, or null when asked to leave meanwhile. */
async function nextPlace(ch: ControlChannel, timeoutMs: number, leave: AbortSignal | undefined): Promise<MessageOf<'assign'> | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (leave?.aborted) return null;
    const left = deadline - Date.now();
    try {
      return await ch.next(['assign'], Math.min(500, Math.max(1, left)), 'the next generation');
    } catch (err) {
      if ((err as ChannelError).code !== 'ERR_TIMEOUT' || left <= 500) throw err;
    }
  }
}

/** The newest of the queued assignments (older ones were replaced before they were used). */
function newest(ch: ControlChannel, first: MessageOf<'assign'>): MessageOf<'assign'> {
  let latest = first;
  for (let m = ch.take('assign'); m; m = ch.take('assign')) if (m.generation > latest.generation) latest = m;
  return latest;
}

type GenerationEnd = { end: 'done'; weightsHash: string } | { end: 'regroup' } | { end: 'leave' };

/** One generation on a formed ring: share the state, say ready, train until done, regroup or leave. */
async function runGeneration(
  a: MessageOf<'assign'>,
  trainer: Trainer,
  comm: Communicator,
  ch: ControlChannel,
  writer: CheckpointWriter | null,
  state: { held: boolean },
  training: () => void,
  log: Logger,
  leave: AbortSignal | undefined,
  faults: ReturnType<typeof faultsFromEnv>,
): Promise<GenerationEnd> {
  const params = trainer.model.params;
  const synced = await syncState(comm, trainer, state.held, async () => {
    if (a.resume) {
      await restoreTensors(comm, trainer, a.resume.path, false);
      trainer.restore({ ...a.resume.state, dropoutRng: a.resume.state.dropoutRng as RngState });
      log.info(`resumed from ${a.resume.path} at step ${trainer.globalStep} (epoch ${trainer.epoch}, sample ${trainer.cursor})`);
    } else if (a.initFrom) {
      await restoreTensors(comm, trainer, a.initFrom, true);
      log.info(`weights initialised from ${a.initFrom}`);
    } else {
      await comm.broadcast(params.values, { root: 0, layoutHash: params.layoutHash() });
    }
  });
  state.held = true;
  if (synced.source >= 0 && a.generation > 1) log.info(`generation ${a.generation}: state of step ${synced.step} received from rank ${synced.source} and verified (${synced.stateHash.slice(0, 12)}…)`);
  const config = trainer.config;
  const remaining = (config.epochs - trainer.epoch) * trainer.stepsPerEpoch - Math.floor(trainer.cursor / trainer.globalBatch);
  const totalSteps = Math.max(0, a.maxSteps > 0 ? Math.min(a.maxSteps, trainer.globalStep + remaining) : trainer.globalStep + remaining);
  ch.send({
    type: 'ready',
    v: PROTOCOL_VERSION,
    generation: a.generation,
    rank: a.rank,
    weightsHash: params.valuesHash(),
    step: trainer.globalStep,
    backend: trainer.backend.description,
    totalSteps,
    parameters: params.length,
  });
  let go = await ch.next(['start', 'assign'], 120_000, 'start');
  while (go.type === 'start' && go.generation < a.generation) go = await ch.next(['start', 'assign'], 120_000, 'start'); // a late one
  if (go.type === 'assign' || go.generation !== a.generation) {
    if (go.type === 'assign') ch.putBack(go);
    throw new GenerationLost('a newer generation formed before this one started');
  }
  training();
  const loop = await runReplicaLoop({ assign: a, trainer, comm, channel: ch, writer, faults, log, totalSteps, leaving: () => leave?.aborted ?? false });
  if (loop.end !== 'done') return { end: loop.end };
  const finalHash = await verifyReplicas(comm, trainer, 'final weights');
  if (a.rank === 0 && a.saveFinal) {
    writeSafetensors(
      a.saveFinal,
      params.tensors.map((t) => ({ name: t.name, shape: t.shape, data: params.value(t.name) })),
      { format: 'ringtrain-weights/1', step: String(trainer.globalStep), worldSize: String(a.worldSize), configHash: a.configHash, config: JSON.stringify(config) },
    );
    log.info(`final weights written to ${a.saveFinal}`);
  }
  ch.send({ type: 'done', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, steps: trainer.globalStep, weightsHash: finalHash, replicaChecks: loop.replicaChecks + 2 });
  return { end: 'done', weightsHash: finalHash };
}

import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { CollectiveError, Communicator, hostKey, type TlsFiles, WebSocketTransport } from '@ringtrain/allreduce';
import { configDifferences, type JobConfig, jobConfigHash, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import type { RngState } from '@ringtrain/core';
import type { Logger } from 'pino';
import { CheckpointWriter, restoreTensors, writeFinalWeights } from './checkpointing.js';
import { ChannelError, ControlChannel } from './control-channel.js';
import { WorkerError } from './errors.js';
import { faultsFromEnv } from './faults.js';
import { setUpRing } from './ring-probe.js';
import { overlapBucketBytes, runReplicaLoop, verifyReplicas } from './replica-loop.js';
import { syncState } from './state-sync.js';

/** Which machine this is, for shared memory (boot, namespaces, user), hashed: the coordinator only compares it. */
const hostId = ((key) => (key ? createHash('sha256').update(key).digest('hex').slice(0, 16) : undefined))(hostKey());

export { WorkerError };

export interface WorkerOptions {
  /** ws://host:port of the coordinator. */
  coordinator: string;
  /** Shared token for the coordinator and the ring. */
  token?: string;
  /** TLS (PEM contents): `ca` checks the coordinator's and the neighbours' certificates; with `cert` and `key` the ring endpoint listens for wss://. */
  tls?: TlsFiles;
  /** The config this worker was started with, if any: the coordinator refuses a different one. */
  config?: JobConfig;
  /** Where the ring endpoint listens (default 127.0.0.1, any port) and the address peers dial. */
  ringHost?: string;
  ringPort?: number;
  advertise?: string;
  /** Listening on all interfaces: the host name or address peers dial (default: this host's name). */
  advertiseHost?: string;
  logger: Logger;
  /** A ring neighbour silent this long is lost (default 2.5 s). */
  peerTimeoutMs?: number;
  /** How long to wait for the coordinator to assign a place and say start (default 120 s). */
  joinTimeoutMs?: number;
  /** Bytes per pipelined all-reduce segment (the communicator's default when unset). */
  segmentBytes?: number;
  /** Aborted: leave the run cleanly at the next step boundary (SIGTERM, preemption). */
  leave?: AbortSignal;
  /** How long to dial a lost coordinator again before giving up (default 120 s; 0: give up at once). */
  coordinatorTimeoutMs?: number;
  /** Hears where the worker stands (for readiness probes). */
  onPhase?: (phase: WorkerPhase) => void;
}

/** Joining the job; training in the current generation's ring; between generations (or without its coordinator); over. */
export type WorkerPhase = 'joining' | 'training' | 'regrouping' | 'finished';

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

type Result = WorkerResult;

/**
 * The agent: join the coordinator, then take part in generation after generation of the ring
 * until the run ends. Each generation: form the ring → share the training state (the most
 * advanced replica's, or rank 0's fresh weights at the start) → ready → the replica loop. A lost
 * peer, a newer generation or a regroup ends a generation, not the worker: it reports `aborted`,
 * leaves that ring and waits for its next place. A lost coordinator does not end it either: it
 * finishes its step, leaves the ring, and dials the coordinator again for up to
 * `coordinatorTimeoutMs`, offering the state it holds; a restarted coordinator re-adopts the run.
 * A fatal error (a stop, a non-finite value under "stop", a failed checkpoint) is reported to the
 * coordinator and thrown.
 */
export async function runWorker(options: WorkerOptions): Promise<WorkerResult> {
  const transport = await WebSocketTransport.listen({
    host: options.ringHost ?? '127.0.0.1',
    port: options.ringPort ?? 0,
    advertise: options.advertise,
    advertiseHost: options.advertiseHost,
    token: options.token,
    tls: options.tls,
    peerTimeoutMs: options.peerTimeoutMs ?? 1500,
    logger: options.logger,
  });
  const agent = new Agent(options, transport);
  try {
    return await agent.run();
  } finally {
    await agent.close();
  }
}

class Agent {
  private ch: ControlChannel | null = null;
  private comm: Communicator | null = null;
  private trainer: Trainer | null = null;
  private writer: CheckpointWriter | null = null;
  private last: MessageOf<'assign'> | null = null;
  /**
   * Whether this replica holds the run's training state (from a completed state sync), and the
   * last epoch whose evaluation this worker saw every rank take (-1: none yet).
   */
  private readonly state = { held: false, evaluatedThrough: -1 };
  /** Outside the replica loop a newer generation or a lost coordinator interrupts at once; inside it, at the next step boundary. */
  private interruptible = true;
  private log: Logger;
  private readonly faults = faultsFromEnv();
  private readonly joinTimeout: number;

  constructor(
    private readonly options: WorkerOptions,
    private readonly transport: WebSocketTransport,
  ) {
    this.log = options.logger;
    this.joinTimeout = options.joinTimeoutMs ?? 120_000;
  }

  async run(): Promise<Result> {
    try {
      let assign = await this.join(await ControlChannel.connect(this.options.coordinator, { token: this.options.token, ca: this.options.tls?.ca }));
      for (;;) {
        try {
          const next = await this.generation(assign);
          if (!('generation' in next)) return next;
          assign = next;
        } catch (err) {
          if (!this.coordinatorLost() || (this.options.coordinatorTimeoutMs ?? 120_000) <= 0) throw err;
          this.options.onPhase?.('regrouping');
          assign = await this.reconnect();
        }
      }
    } catch (err) {
      const ch = this.ch;
      // A stop or lost coordinator is the root cause of the collective errors it provokes.
      const e = ch?.error && ch.error.code !== 'DONE' && (err instanceof CollectiveError || err instanceof ChannelError || err instanceof GenerationLost) ? ch.error : (err as Error & { code?: string });
      const code = e.code ?? 'ERR_WORKER';
      if (!(e instanceof ChannelError)) ch?.send({ type: 'failed', v: PROTOCOL_VERSION, generation: this.last?.generation, rank: this.last?.rank, code, message: e.message.slice(0, 4000) });
      throw e instanceof WorkerError || e instanceof ChannelError || e instanceof CollectiveError ? e : new WorkerError(code, e.message, { cause: e });
    }
  }

  async close(): Promise<void> {
    this.comm?.detach();
    await this.writer?.flush();
    await this.transport.close();
    await this.ch?.close();
  }

  private coordinatorLost(): boolean {
    return this.ch?.error?.code === 'ERR_COORDINATOR_LOST';
  }

  /** Says hello on a new control connection (with the state it holds) and waits for a place. */
  private async join(ch: ControlChannel): Promise<MessageOf<'assign'>> {
    this.ch = ch;
    const t = this.trainer;
    const a = this.last;
    ch.send({
      type: 'hello',
      v: PROTOCOL_VERSION,
      workerId: `${hostname()}:${process.pid}`,
      ringAddress: this.transport.address,
      configHash: this.options.config ? jobConfigHash(this.options.config) : null,
      host: hostname(),
      ...(hostId ? { hostId } : {}),
      pid: process.pid,
      ...(this.state.held && t && a ? { held: { runId: a.runId, generation: a.generation, step: t.globalStep, weightsHash: t.model.params.valuesHash() } } : {}),
    });
    ch.onArrival = (msg) => {
      if (msg.type === 'assign' && this.interruptible) this.abandon();
    };
    // A stop ends the ring at once; a lost coordinator only outside the replica loop (inside it,
    // the step in flight finishes first).
    ch.onStop = (e) => {
      if (e.code !== 'ERR_COORDINATOR_LOST' || this.interruptible) this.abandon();
    };
    const job = await ch.next(['job', 'reject'], this.joinTimeout, 'the job');
    if (job.type === 'reject') throw new WorkerError(job.code, `the coordinator refused this worker: ${job.reason}${this.differences(job.config)}`);
    // Data and replica first: the ring never waits for a newcomer to load.
    this.prepare(job.config, job.configHash, job.globalBatch);
    ch.send({ type: 'prepared', v: PROTOCOL_VERSION });
    const reply = await ch.next(['assign', 'reject'], this.joinTimeout, 'rank assignment');
    if (reply.type === 'reject') throw new WorkerError(reply.code, `the coordinator refused this worker: ${reply.reason}`);
    return reply;
  }

  /** Builds the replica for the job (once): its data, model and optimizer. */
  /** With the coordinator's job at hand, the fields in which this worker's differs (at most 10). */
  private differences(theirs: unknown): string {
    if (theirs === undefined || !this.options.config) return '';
    const diff = configDifferences(this.options.config, theirs);
    return diff.length ? `; it differs in ${diff.slice(0, 10).join('; ')}${diff.length > 10 ? `; and ${diff.length - 10} more` : ''} (here: this worker, there: the coordinator)` : '';
  }

  private prepare(raw: unknown, configHash: string, globalBatch: number): Trainer {
    if (this.trainer) {
      if (this.trainer.globalBatch !== globalBatch || jobConfigHash(this.trainer.config) !== configHash) {
        throw new WorkerError('ERR_CONFIG_MISMATCH', `the coordinator's job (config ${configHash}, global batch ${globalBatch}) differs from the one this worker holds (${jobConfigHash(this.trainer.config)}, ${this.trainer.globalBatch})`);
      }
      return this.trainer;
    }
    const config = parseJobConfig(raw);
    if (jobConfigHash(config) !== configHash) throw new WorkerError('ERR_CONFIG_MISMATCH', `the job config from the coordinator does not match its hash ${configHash}`);
    this.trainer = new Trainer(config, { globalBatch });
    if (this.trainer.backendHint) this.log.warn(this.trainer.backendHint);
    this.log.info({ backend: this.trainer.backend.description }, `replica built: backend ${this.trainer.backend.description}`);
    return this.trainer;
  }

  private abandon(): void {
    this.comm?.detach();
    void this.transport.leave();
  }

  private async leaveRing(): Promise<void> {
    this.comm?.detach();
    this.comm = null;
    await this.transport.leave();
  }

  /** The coordinator is gone: dial it again until it is back (re-adopting the run) or the timeout passes. */
  private async reconnect(): Promise<MessageOf<'assign'>> {
    await this.leaveRing();
    const timeoutMs = this.options.coordinatorTimeoutMs ?? 120_000;
    const step = this.trainer?.globalStep ?? 0;
    this.log.warn(`lost the coordinator at step ${step}; dialling ${this.options.coordinator} again for up to ${timeoutMs / 1000} s`);
    let ch: ControlChannel;
    try {
      ch = await ControlChannel.connect(this.options.coordinator, { token: this.options.token, ca: this.options.tls?.ca, timeoutMs, signal: this.options.leave });
    } catch (err) {
      await this.finalCheckpoint();
      if (this.options.leave?.aborted) throw new WorkerError('ERR_LEFT', `asked to leave while the coordinator was away (at step ${step})`);
      throw new WorkerError('ERR_COORDINATOR_LOST', `the coordinator at ${this.options.coordinator} did not come back within ${timeoutMs / 1000} s (this worker holds step ${step}): ${(err as Error).message}`, { cause: err });
    }
    if (this.ch) this.ch.onStop = null;
    const assign = await this.join(ch);
    this.log.warn(`back with the coordinator: generation ${assign.generation}, rank ${assign.rank} of ${assign.worldSize}`);
    return assign;
  }

  /** Paused below the minimum size, the coordinator asks one survivor to write what it holds. */
  private async saveWhilePaused(ch: ControlChannel): Promise<void> {
    const a = this.last;
    if (!ch.take('checkpointNow') || !a?.checkpoint || !this.state.held || !this.trainer) return;
    this.writer ??= new CheckpointWriter(this.trainer, a.checkpoint, a.runId);
    const step = this.trainer.globalStep;
    try {
      const { stallMs, written } = await this.writer.save({});
      const { path, writeMs } = await written;
      ch.send({ type: 'saved', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step, path, stallMs, writeMs });
    } catch (err) {
      ch.send({ type: 'saveFailed', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step, message: (err as Error).message.slice(0, 4000) });
    }
  }

  /** Before giving up on the coordinator, the last rank 0 writes what it holds (when checkpoints are configured). */
  private async finalCheckpoint(): Promise<void> {
    if (!this.writer || !this.state.held || this.last?.rank !== 0) return;
    try {
      const { written } = await this.writer.save({});
      const { path } = await written;
      this.log.warn(`final checkpoint at step ${this.trainer!.globalStep}: ${path}`);
    } catch (err) {
      this.log.error(`final checkpoint not written: ${(err as Error).message}`);
    }
  }

  /** One generation; resolves with the next assignment, or the result when the run is over for this worker. */
  private async generation(a: MessageOf<'assign'>): Promise<MessageOf<'assign'> | Result> {
    const ch = this.ch!;
    this.last = a;
    this.log = this.options.logger.child({ rank: a.rank, generation: a.generation });
    const log = this.log;
    const t = this.prepare(a.config, a.configHash, a.globalBatch);
    t.place(a.rank, a.worldSize);
    log.info(`rank ${a.rank} of ${a.worldSize} in generation ${a.generation}`);
    this.interruptible = true;
    const result = (left: boolean, weightsHash = t.model.params.valuesHash()): Result => ({ rank: a.rank, worldSize: a.worldSize, steps: t.globalStep, weightsHash, left });
    let outcome: GenerationEnd;
    try {
      // A newer place may have arrived while this one was on its way: joining a ring that its
      // peers have already left would wait for them until the deadline.
      if (ch.has('assign')) throw new GenerationLost('a newer generation formed before this one was joined');
      await this.transport.join({ rank: a.rank, worldSize: a.worldSize, ringId: a.ringId, prevAddress: a.prevAddress });
      this.options.onPhase?.('training');
      this.comm = new Communicator(this.transport, { logger: log, timeoutMs: 60_000, segmentBytes: this.options.segmentBytes });
      if (ch.has('assign')) throw new GenerationLost('a newer generation formed while this one was joining');
      if (a.rank === 0 && a.checkpoint) this.writer ??= new CheckpointWriter(t, a.checkpoint, a.runId);
      outcome = await runGeneration(a, t, this.comm, ch, a.rank === 0 ? this.writer : null, this.state, () => (this.interruptible = false), log, this.options.leave, this.faults);
    } catch (err) {
      if (ch.error) throw err;
      if (!(err instanceof CollectiveError || err instanceof GenerationLost)) throw err;
      // This generation's ring broke (or was replaced): the weights are those of the last complete
      // step, or (DiLoCo) every replica goes back to the start of the round in progress.
      t.rewindRound();
      log.warn({ code: (err as { code?: string }).code, step: t.globalStep }, `generation ${a.generation} ended under rank ${a.rank}: ${err.message}; waiting for the next`);
      if (!ch.has('assign')) {
        const peer = err instanceof CollectiveError && err.peer !== undefined ? { peer: err.peer } : {};
        ch.send({ type: 'aborted', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step: t.globalStep, code: (err as { code?: string }).code ?? 'ERR_ABORTED', message: err.message.slice(0, 4000), ...peer });
      }
      outcome = { end: 'regroup' };
    }
    this.options.onPhase?.(outcome.end === 'regroup' ? 'regrouping' : 'finished');
    this.interruptible = true;
    if (outcome.end === 'done') {
      // Hold on until the coordinator has heard from every rank (it then says DONE); a fault
      // elsewhere before that forms one more generation, which has no steps left to take.
      const next = await ch.next(['assign'], 30_000, 'end of the run').catch((err: ChannelError) => {
        if (err.code !== 'DONE') log.warn(`after finishing: ${err.message}`);
        return null;
      });
      await this.leaveRing();
      return next ? newest(ch, next) : result(false, outcome.weightsHash);
    }
    const leaving = outcome.end === 'leave' || this.options.leave?.aborted;
    // The coordinator hears of a leave before the ring closes, so that the neighbours' broken
    // links are not taken for a fault.
    const leave = (): Result => {
      ch.send({ type: 'leave', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, step: t.globalStep, reason: 'asked to leave (SIGTERM)' });
      log.warn(`left the run after step ${t.globalStep}`);
      return result(true);
    };
    const left = leaving ? leave() : null;
    await this.leaveRing();
    if (left) return left;
    if (ch.error) throw ch.error;
    // Regroup: the next place, while the coordinator forms it (a stop or a lost coordinator ends
    // the wait; below the minimum size the coordinator may wait up to its rejoin timeout).
    const next = await nextPlace(ch, Math.max(this.joinTimeout, 600_000), this.options.leave, () => this.saveWhilePaused(ch));
    return next ? newest(ch, next) : leave();
  }
}

/** The next assignment, or null when asked to leave meanwhile. */
async function nextPlace(ch: ControlChannel, timeoutMs: number, leave: AbortSignal | undefined, meanwhile: () => Promise<void>): Promise<MessageOf<'assign'> | null> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (leave?.aborted) return null;
    await meanwhile();
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
  state: { held: boolean; evaluatedThrough: number },
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
  // Decided once the ring knows whether it shares memory; the probe reports it.
  let bucketBytes = 0;
  if (a.worldSize > 1) {
    // A deterministic step sends its fixed-point sums as two halves: twice the parameters.
    const ring = await setUpRing(comm, (trainer.config.deterministic ? 2 : 1) * params.length, a.tunedSegment);
    bucketBytes = overlapBucketBytes(trainer.config, comm, a.worldSize, ring);
    if (a.rank === 0) ch.send({ type: 'ringProbe', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, worldSize: a.worldSize, ...ring, ...(bucketBytes ? { bucketBytes } : {}) });
  }
  const loop = await runReplicaLoop({ assign: a, trainer, comm, channel: ch, writer, faults, log, totalSteps, leaving: () => leave?.aborted ?? false, evaluated: state, bucketBytes });
  if (loop.end !== 'done') return { end: loop.end };
  const finalHash = await verifyReplicas(comm, trainer, 'final weights');
  if (a.rank === 0 && a.saveFinal) {
    writeFinalWeights(trainer, a.saveFinal);
    log.info(`final weights written to ${a.saveFinal}`);
  }
  ch.send({ type: 'done', v: PROTOCOL_VERSION, generation: a.generation, rank: a.rank, steps: trainer.globalStep, weightsHash: finalHash, replicaChecks: loop.replicaChecks + 2 });
  return { end: 'done', weightsHash: finalHash };
}

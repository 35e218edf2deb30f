import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { checkpointName, readCheckpointMeta } from '@ringtrain/checkpoint';
import { type ConfigSummary, type ControlMessage, type GenerationChange, type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { guardedServer } from '@ringtrain/allreduce';
import { describeModel, parameterCount, positionsOf } from '@ringtrain/core';
import { charsPerTokenOf, type JobConfig, jobConfigHash } from '@ringtrain/trainer';
import type { Logger } from 'pino';
import type { HealthThresholds } from './health-watch.js';
import { type Conn, type Effect, type Fault, type GenerationRecord, type Member, Membership, type MembershipState, type Timer } from './membership.js';
import { PrometheusMetrics } from './prometheus.js';
import { RunJournal } from './run-journal.js';
import { RunRecord } from './run-record.js';
import { RunStats } from './run-stats.js';
import { StatusFeed } from './status-feed.js';
import { type CommandOutcome, type Health, MAX_STATUS_CLIENTS, StatusServer } from './status-server.js';
import { networkAdvice } from './network-bound.js';
import type { StragglerOptions } from './stragglers.js';
import { WorkerLinks } from './worker-links.js';

export interface CoordinatorOptions {
  config: JobConfig;
  /** Workers that form the ring: at most `workers`, at least `minWorkers` (default: `workers`). */
  workers: number;
  minWorkers?: number;
  /** Membership changes caused by faults that the run survives (default 3); joins and leaves are free. */
  maxRestarts?: number;
  /** Below minWorkers the run waits this long for workers to join, then fails (default 300 s). */
  rejoinTimeoutMs?: number;
  /** With fewer than `workers` joined (but at least minWorkers), the first generation forms after this quiet time (default 2 s). */
  lastCallMs?: number;
  /** After a fault, how long members have to answer before the next generation forms without them (default 1 s). */
  quorumMs?: number;
  host?: string;
  port?: number;
  /**
   * A port bound before the coordinator was made (`launch` binds it and starts its workers before
   * the coordinator's modules load): listen() takes it over instead of binding host and port.
   */
  listener?: { handOver(server: Server): Promise<void> };
  /** Shared token: workers without it are refused during the upgrade. */
  token?: string;
  /** TLS certificate and key (PEM contents): the workers' port, status socket and dashboard then speak wss:// and https://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  logger: Logger;
  /** Deadline for all workers to join (default 60 s) and to report ready (default 60 s). */
  joinTimeoutMs?: number;
  readyTimeoutMs?: number;
  /** Ping period and the silence after which a running worker counts as lost (defaults 500 ms and 3 s). */
  heartbeatMs?: number;
  peerTimeoutMs?: number;
  /** Steps between progress reports (default 10); replica hash checks every N steps (0: each epoch). */
  progressEvery?: number;
  verifyEvery?: number;
  /** Stop after this many steps (0: all epochs). */
  maxSteps?: number;
  /** Rank 0 writes the final weights here (safetensors). */
  saveFinal?: string;
  /** Periodic checkpoints by rank 0; resume from one, or take only its weights. */
  checkpoint?: MessageOf<'assign'>['checkpoint'];
  resume?: MessageOf<'assign'>['resume'];
  initFrom?: string;
  /** Read access to the status socket, dashboard data and /metrics (open when unset). */
  statusToken?: string;
  /** Control actions over the status socket (stop, checkpoint now); disabled when unset. */
  adminToken?: string;
  /** At most one metrics event per this many ms (default 250). */
  statusIntervalMs?: number;
  /** Rank 0 measures per-tensor norms every this many steps (default 100; 0: never). */
  healthEvery?: number;
  health?: HealthThresholds;
  stragglers?: StragglerOptions;
  /** Deadline for a connection's request or upgrade to arrive whole (default HANDSHAKE_TIMEOUT_MS). */
  handshakeTimeoutMs?: number;
  /** How a worker process ended and its last stderr lines, where the caller owns the process (launch). */
  describeExit?: (pid: number) => { exit?: string; stderr?: string[] } | undefined;
  /** A worker process was dropped from the ring (lost, silent, or not answering): its owner may end it and start another. */
  onDropped?: (pid: number, host: string) => void;
}

export type CoordinatorState = MembershipState;

export class CoordinatorError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly rank?: number,
  ) {
    super(message);
    this.name = 'CoordinatorError';
  }
}

/**
 * The coordinator: it owns the listener, the deadlines and the run record; its workers'
 * connections (worker-links.ts) feed everything a worker says to the membership machine
 * (membership.ts), which decides, and this class carries out what it decided. It never touches
 * gradients.
 */
export class Coordinator {
  private readonly membership: Membership;
  private readonly links: WorkerLinks;
  private readonly timers = new Map<Timer, NodeJS.Timeout>();
  private readonly http: Server;
  private readonly configHash: string;
  private readonly log: Logger;
  private settle: { resolve: (s: RunStats) => void; reject: (e: CoordinatorError) => void } | null = null;
  private started = false;
  /** The generation that formed last and when its membership change began, until it trains. */
  private forming: { record: GenerationRecord; since: number } | null = null;
  private changeSince: number | null = null;
  readonly stats: RunStats;
  private readonly record: RunRecord;
  private readonly journal: RunJournal | null;
  readonly feed: StatusFeed;
  readonly metrics: PrometheusMetrics;
  private readonly status: StatusServer;
  /** Called after every progress report and every completed evaluation. */
  onProgress: ((stats: RunStats) => void) | null = null;
  onEpoch: ((epoch: number, stats: RunStats) => void) | null = null;
  /** Called when a new generation trains (after a fault, a join or a leave; not at the start). */
  onGeneration: ((change: GenerationChange) => void) | null = null;

  constructor(private readonly options: CoordinatorOptions) {
    const max = options.workers;
    const min = options.minWorkers ?? max;
    if (!Number.isInteger(max) || max < 1 || max > 1024 || !Number.isInteger(min) || min < 1 || min > max) {
      throw new CoordinatorError('ERR_CONFIG', `workers must be MIN:MAX with 1 ≤ MIN ≤ MAX ≤ 1024, got ${min}:${max}`);
    }
    this.configHash = jobConfigHash(options.config);
    this.log = options.logger;
    const runId = randomUUID();
    const globalBatch = options.config.globalBatchSize ?? options.config.batchSize * max;
    this.membership = new Membership({
      runId,
      incarnation: randomUUID().slice(0, 8),
      configHash: this.configHash,
      min,
      max,
      maxRestarts: options.maxRestarts ?? 3,
      joinTimeoutMs: options.joinTimeoutMs ?? 60_000,
      readyTimeoutMs: options.readyTimeoutMs ?? 60_000,
      lastCallMs: options.lastCallMs ?? 2000,
      quorumMs: options.quorumMs ?? 1000,
      rejoinTimeoutMs: options.rejoinTimeoutMs ?? 300_000,
      assign: {
        config: options.config,
        configHash: this.configHash,
        globalBatch,
        progressEvery: options.progressEvery ?? 10,
        verifyEvery: options.verifyEvery ?? 0,
        maxSteps: options.maxSteps ?? 0,
        healthEvery: options.healthEvery ?? 100,
        ...(options.saveFinal ? { saveFinal: options.saveFinal } : {}),
        ...(options.checkpoint ? { checkpoint: options.checkpoint } : {}),
        ...(options.resume ? { resume: options.resume } : {}),
        ...(options.initFrom ? { initFrom: options.initFrom } : {}),
      },
    });
    this.stats = new RunStats(max, options.config.epochs);
    this.feed = new StatusFeed({
      runId,
      workers: max,
      config: summarizeConfig(options.config, this.configHash),
      intervalMs: options.statusIntervalMs,
      health: options.health,
      stragglers: options.stragglers,
      networkAdvice: networkAdvice(options.config),
    });
    this.metrics = new PrometheusMetrics();
    this.feed.subscribe((event) => this.metrics.observe(event));
    // Warnings reach the log too, not only the status socket, the dashboard and /metrics.
    this.feed.subscribe((event) => {
      if (event.type === 'warning') this.log.warn({ code: event.warning.code, rank: event.warning.rank, step: event.warning.step }, event.warning.message);
    });
    // With checkpoints, the status history is kept beside them for a restarted coordinator.
    this.journal = options.checkpoint ? RunJournal.attach(options.checkpoint.dir, this.feed, this.stats, this.log) : null;
    this.record = new RunRecord(this.stats, this.feed, this.log, options.config.epochs, positionsOf(options.config.model), charsPerTokenOf(options.config.dataset), {
      progress: (stats) => this.onProgress?.(stats),
      epoch: (epoch, stats) => this.onEpoch?.(epoch, stats),
    });
    this.status = new StatusServer({
      feed: this.feed,
      metrics: this.metrics,
      statusToken: options.statusToken,
      adminToken: options.adminToken,
      onCommand: (action) => this.command(action),
      logger: options.logger,
      health: () => this.health(),
    });
    // Connections capped at the workers (and as many again reconnecting), the status clients, and some spare.
    this.http = guardedServer((req, res) => this.status.handleRequest(req, res), {
      handshakeMs: options.handshakeTimeoutMs,
      maxConnections: 2 * max + MAX_STATUS_CLIENTS + 64,
      ...(options.tls ? { tls: options.tls } : {}),
    });
    this.links = new WorkerLinks({
      token: options.token,
      heartbeatMs: options.heartbeatMs,
      peerTimeoutMs: options.peerTimeoutMs,
      logger: options.logger,
      onEvent: (event) => this.apply(this.membership.handle(event)),
      watched: (conn) => {
        const m = this.membership.memberOf(conn);
        const state = this.membership.state;
        return !!m && m.rank >= 0 && m.generation === this.membership.generation && !m.done && (state === 'running' || state === 'forming');
      },
      member: (conn) => !!this.membership.memberOf(conn),
    });
    this.http.on('upgrade', (req, socket, head) => {
      if (new URL(req.url ?? '/', 'http://x').pathname === '/status') this.status.handleUpgrade(req, socket, head);
      else this.links.handleUpgrade(req, socket, head);
    });
  }

  /** For the probes: ready while the run takes workers or trains; not once it is over. */
  health(): Health {
    const state = this.membership.state;
    return { ready: state !== 'finished' && state !== 'failed' && state !== 'stopped', state };
  }

  /** Where the dashboard is served (set by `listen`). */
  dashboardUrl = '';

  get currentState(): CoordinatorState {
    return this.membership.state;
  }

  get generation(): number {
    return this.membership.generation;
  }

  /** The run's id (kept across coordinator restarts: a restarted coordinator adopts its workers' run). */
  get runId(): string {
    return this.membership.runId;
  }

  /** Starts listening; returns the address workers dial. */
  async listen(): Promise<string> {
    if (this.options.listener) await this.options.listener.handOver(this.http);
    else {
      await new Promise<void>((resolve, reject) => {
        this.http.once('error', reject);
        this.http.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve());
      });
    }
    const a = this.http.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    const secure = this.options.tls !== undefined;
    const address = `${secure ? 'wss' : 'ws'}://${host}:${a.port}`;
    this.dashboardUrl = `${secure ? 'https' : 'http'}://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${a.port}/`;
    const { min, max } = this.membership.options;
    const size = min === max ? `${max}` : `${min} to ${max}`;
    this.log.info({ address, workers: max, minWorkers: min, configHash: this.configHash }, `coordinator listening on ${address}, waiting for ${size} workers`);
    return address;
  }

  /** Resolves with the run's figures when every worker finished; rejects with the root cause otherwise. */
  run(): Promise<RunStats> {
    const result = new Promise<RunStats>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.apply(this.membership.start());
    this.links.startHeartbeat();
    return result;
  }

  /**
   * Stops the run, after a checkpoint when the run writes them and is training: rank 0 saves after
   * its current step, and the stop follows once the file is on disk (or after `timeoutMs`).
   */
  async checkpointThenStop(reason: string, timeoutMs: number): Promise<void> {
    const state = this.membership.state;
    if (this.options.checkpoint && (state === 'running' || state === 'regrouping')) {
      // The checkpoint asked for now, not an earlier one whose write is still finishing.
      const saved = this.record.nextSave(this.stats.step, timeoutMs);
      const outcome = this.command('checkpoint');
      if (outcome.ok) {
        this.log.warn(`${reason}: checkpointing before the stop`);
        if (!(await saved)) this.log.error(`no checkpoint within ${timeoutMs} ms; stopping without one`);
      }
    }
    this.stop(reason);
  }

  /** Fails the run: the launch that started every worker has none left and will start no more. */
  workersGone(why: string): void {
    this.apply(this.membership.handle({ type: 'workersGone', why }));
  }

  /** Stops the run (the user asked): every worker is told to stop. */
  stop(reason = 'stopped by the user'): void {
    this.apply(this.membership.handle({ type: 'stop', code: 'ERR_INTERRUPTED', reason }));
  }

  async close(): Promise<void> {
    await this.journal?.flush();
    for (const t of this.timers.values()) clearTimeout(t);
    this.feed.close();
    await this.status.close();
    this.links.closeAll();
    this.http.closeAllConnections?.();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }

  /** Carries out what the membership machine decided. */
  private apply(effects: Effect[]): void {
    for (const e of effects) {
      switch (e.type) {
        case 'send':
          this.links.send(e.conn, e.msg);
          break;
        case 'close':
          this.links.close(e.conn, e.code, e.reason);
          break;
        case 'arm': {
          clearTimeout(this.timers.get(e.timer));
          const t = setTimeout(() => this.apply(this.membership.handle({ type: 'timer', name: e.timer })), e.ms);
          this.timers.set(e.timer, t);
          break;
        }
        case 'cancel':
          clearTimeout(this.timers.get(e.timer));
          this.timers.delete(e.timer);
          break;
        case 'ping':
          this.links.askAlive(e.suspect);
          break;
        case 'joined': {
          const m = e.member;
          this.feed.workerJoined({ workerId: m.workerId, host: m.host, pid: m.pid, address: m.ringAddress });
          const { min, max } = this.membership.options;
          this.log.info({ workerId: m.workerId, ringAddress: m.ringAddress }, `worker ${m.workerId} joined (${this.membership.all.length}/${min === max ? max : `${min}:${max}`})`);
          break;
        }
        case 'left':
          this.onLeft(e.member, e.reason);
          break;
        case 'refused':
          this.log.warn({ code: e.code, conn: e.conn }, `message refused: ${e.reason}`);
          break;
        case 'unprepared':
          this.log.error({ code: e.fault.code, conn: e.conn }, e.fault.message);
          break;
        case 'stateLost':
          if (e.resume) this.log.warn({ generation: e.generation, path: e.resume.path, step: e.resume.state.globalStep }, `no worker holds the run's state any more (all were lost at once): generation ${e.generation} goes on from ${e.resume.path}, step ${e.resume.state.globalStep}${this.stats.step > e.resume.state.globalStep ? `; steps ${e.resume.state.globalStep + 1}–${this.stats.step} are taken again` : ''}`);
          else this.log.error({ generation: e.generation }, `no worker holds the run's state any more (all were lost at once) and there is no checkpoint to go on from: generation ${e.generation} starts again from step 0, and the progress to step ${this.stats.step} is lost${this.options.checkpoint ? '' : ' (--checkpoint-dir keeps it next time)'}`);
          break;
        case 'report':
          this.onReport(e.member, e.msg);
          break;
        case 'generation':
          this.onFormed(e.record);
          break;
        case 'state':
          this.onState(e.state, e.error);
          break;
        case 'running':
          this.onRunning(e.generation, e.ready);
          break;
        case 'adopted': {
          if (this.journal) this.journal.adopt(e.runId);
          else this.feed.adoptRun(e.runId);
          this.log.warn({ runId: e.runId, generation: e.generation, step: e.step }, `re-adopting run ${e.runId}: its workers hold its state (generation ${e.generation}, step ${e.step})`);
          break;
        }
        case 'finished': {
          const d = e.done;
          this.stats.finish(d[0].weightsHash, d[0].steps, Math.min(...d.map((x) => x.replicaChecks)));
          break;
        }
        default: {
          // Every effect is carried out: a new kind that is not fails to compile here.
          const unhandled: never = e;
          throw new Error(`unhandled membership effect ${JSON.stringify(unhandled)}`);
        }
      }
    }
  }

  private onLeft(m: Member, reason: string): void {
    if (m.rank < 0 || this.membership.state === 'gathering') {
      this.feed.workerLeft(m.workerId);
      this.log.warn(`worker ${m.workerId} left before it trained: ${reason}`);
      return;
    }
    this.changeSince ??= Date.now();
    this.feed.setRankState(m.rank, 'lost', reason);
    if (!reason.startsWith('left cleanly')) this.options.onDropped?.(m.pid, m.host);
    this.log.warn({ rank: m.rank, workerId: m.workerId }, `rank ${m.rank} (${m.workerId}) ${reason}`);
  }

  private onFormed(record: GenerationRecord): void {
    this.forming = { record, since: this.changeSince ?? Date.now() };
    this.record.generationSize(record.generation, record.worldSize);
    this.feed.ranksAssigned(record.ranks);
    const why = record.cause === 'start' ? '' : ` after a ${record.cause}${record.fault ? ` (${record.fault.message})` : ''}`;
    this.log.info({ generation: record.generation, ring: record.ranks, restarts: record.restarts }, `generation ${record.generation}: ring of ${record.worldSize} formed${why}, ranks assigned`);
  }

  private onState(state: MembershipState, fault: Fault | null): void {
    const generation = this.membership.generation;
    if (state === 'regrouping' || state === 'waiting') this.changeSince ??= Date.now();
    if (state === 'waiting') {
      this.log.warn(`fewer than ${this.membership.options.min} workers: the run waits up to ${this.membership.options.rejoinTimeoutMs} ms for workers to join`);
    }
    const error = fault ? new CoordinatorError(fault.code, fault.message, fault.rank) : null;
    this.feed.setState(state, generation, error ? { code: error.code, message: error.message, ...(error.rank !== undefined ? { rank: error.rank } : {}) } : null);
    if (state !== 'finished' && state !== 'failed' && state !== 'stopped') return;
    const last = this.stats.epochs.at(-1);
    this.feed.end({ steps: this.stats.step, seconds: this.stats.seconds, samplesPerSecond: this.stats.samplesPerSecond, testAccuracy: last ? last.testAccuracy : null });
    for (const t of this.timers.values()) clearTimeout(t);
    this.links.stopHeartbeat();
    if (error) {
      this.log.error({ code: error.code, rank: error.rank }, error.message);
      this.settle?.reject(error);
    } else if (state === 'finished') {
      this.settle?.resolve(this.stats);
    } else {
      this.settle?.reject(new CoordinatorError('ERR_INTERRUPTED', 'stopped'));
    }
  }

  private onRunning(generation: number, ready: MessageOf<'ready'>[]): void {
    const first = ready[0];
    if (!this.started) {
      this.started = true;
      this.stats.start(first.totalSteps);
      this.feed.started(first.totalSteps, first.step, first.parameters);
      this.metrics.started(first.step);
      this.log.info(`all ${ready.length} ranks ready with identical weights (${first.weightsHash.slice(0, 12)}…) on ${first.backend}; training`);
    } else {
      this.feed.resumed();
    }
    const f = this.forming;
    this.forming = null;
    this.changeSince = null;
    if (!f || f.record.generation !== generation) return;
    const { record } = f;
    const exit = record.fault?.pid !== undefined ? this.options.describeExit?.(record.fault.pid) : undefined;
    const change: GenerationChange = {
      generation,
      cause: record.cause,
      worldSize: record.worldSize,
      ranks: record.ranks,
      restarts: record.restarts,
      step: first.step,
      recoveryMs: Date.now() - f.since,
      fault: record.fault ? { ...record.fault, ...(exit?.exit ? { exit: exit.exit } : {}), ...(exit?.stderr?.length ? { stderr: exit.stderr } : {}) } : null,
    };
    this.feed.generationChanged(change);
    if (record.cause !== 'start') {
      this.log.warn(
        { generation, cause: record.cause, worldSize: record.worldSize, step: first.step, recoveryMs: change.recoveryMs, restarts: record.restarts, fault: change.fault },
        `generation ${generation} trains from step ${first.step} with ${record.worldSize} workers, ${change.recoveryMs} ms after the ${record.cause}` +
          (change.fault ? `; first failure: ${change.fault.message}${change.fault.exit ? ` (${change.fault.exit})` : ''}` : ''),
      );
      this.onGeneration?.(change);
    }
  }

  /** A worker's report, already checked by the membership machine: the run record takes it. */
  private onReport(m: Member, msg: ControlMessage): void {
    if (msg.type === 'aborted' || msg.type === 'leave') this.changeSince ??= Date.now();
    this.record.report(m.rank, msg, this.membership.ring.length);
    if (msg.type === 'saved') this.noteCheckpoint(msg.step);
  }

  /**
   * Reads the header of the checkpoint of `step` back from this coordinator's own folder (the name
   * made here, never a peer's path): the point a ring with no state would resume from. Its data is
   * verified by the rank that loads it.
   */
  private noteCheckpoint(step: number): void {
    const policy = this.options.checkpoint;
    if (!policy) return;
    const path = join(policy.dir, checkpointName(step));
    try {
      const m = readCheckpointMeta(path);
      if (m.lineage !== (policy.lineage ?? this.membership.runId)) return;
      this.apply(this.membership.handle({ type: 'checkpointed', resume: { path, state: { globalStep: m.step, epoch: m.epoch, cursor: m.cursor, optimizerStep: m.optimizer.step, dropoutRng: m.rng.dropout } } }));
    } catch (err) {
      this.log.warn(`checkpoint ${path} could not be read back (${(err as Error).message}); a ring that loses every worker goes on from an older one`);
    }
  }

  /** A control action from an admin on the status socket. */
  private command(action: 'stop' | 'checkpoint'): CommandOutcome {
    const state = this.membership.state;
    if (state === 'finished' || state === 'failed' || state === 'stopped') return { ok: false, code: 'ERR_STATE', message: `the run is already ${state}` };
    if (action === 'stop') {
      this.stop('stopped by an admin over the status socket');
      return { ok: true, message: 'stopping the run' };
    }
    if (!this.options.checkpoint) return { ok: false, code: 'ERR_NO_CHECKPOINT_DIR', message: 'this run writes no checkpoints: start it with --checkpoint-dir' };
    if (state !== 'running') return { ok: false, code: 'ERR_STATE', message: `checkpoints are taken while running, not while ${state}` };
    const rank0 = this.membership.ring[0];
    if (rank0) this.links.send(rank0.conn, { type: 'checkpointNow', v: PROTOCOL_VERSION });
    return { ok: true, message: 'rank 0 writes a checkpoint after its current step' };
  }
}

/** The few facts of a job a person watching it wants to see first. */
function summarizeConfig(config: JobConfig, configHash: string): ConfigSummary {
  const o = config.optimizer as { type: string; momentum?: number };
  return {
    model: describeModel(config.model),
    positions: positionsOf(config.model),
    parameters: parameterCount(config.model),
    optimizer: o.momentum ? `${o.type} (momentum ${o.momentum})` : o.type,
    lr: config.optimizer.lr,
    batchSize: config.batchSize,
    epochs: config.epochs,
    dataset: describeDataset(config.dataset as { source: string; kind?: string; path?: string }),
    configHash,
    ...(config.globalBatchSize ? { globalBatch: config.globalBatchSize } : {}),
    ...(config.deterministic ? { deterministic: true } : {}),
  };
}

function describeDataset(d: { source: string; kind?: string; path?: string }): string {
  if (d.kind) return `${d.source} (${d.kind})`;
  return d.path ? `${d.source} ${d.path}` : d.source;
}

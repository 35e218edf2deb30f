import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type ConfigSummary, type ControlMessage, decodeControl, encodeControl, type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';
import { describeModel, parameterCount } from '@ringtrain/core';
import { describeNonFinite, type JobConfig, jobConfigHash } from '@ringtrain/trainer';
import type { Logger } from 'pino';
import WebSocket, { WebSocketServer } from 'ws';
import type { HealthThresholds } from './health-watch.js';
import { PrometheusMetrics } from './prometheus.js';
import { RunStats } from './run-stats.js';
import { StatusFeed } from './status-feed.js';
import { type CommandOutcome, StatusServer } from './status-server.js';
import type { StragglerOptions } from './stragglers.js';

export interface CoordinatorOptions {
  config: JobConfig;
  /** Workers that form the ring. */
  workers: number;
  host?: string;
  port?: number;
  /** Shared token: workers without it are refused during the upgrade. */
  token?: string;
  logger: Logger;
  /** Deadline for all workers to join (default 60 s) and to report ready (default 60 s). */
  joinTimeoutMs?: number;
  readyTimeoutMs?: number;
  /** Ping period and the silence after which a worker counts as lost (defaults 1 s and 3 s). */
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
}

export type CoordinatorState = 'gathering' | 'forming' | 'running' | 'finished' | 'failed' | 'stopped';

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

interface Member {
  ws: WebSocket;
  workerId: string;
  ringAddress: string;
  pid: number;
  host: string;
  rank: number;
  lastSeen: number;
  ready?: MessageOf<'ready'>;
  done?: MessageOf<'done'>;
}

/**
 * Owns membership, the data plan and run control; never touches gradients. A state machine over
 * generations (one set of ranks and one ring each):
 *
 *   gathering ──all N joined──▶ forming ──all ready, hashes agree──▶ running ──all done──▶ finished
 *       │                          │                                    │
 *       └──── join/ready deadline, a lost or failed worker ─────────────┴──▶ failed  (stop: stopped)
 *
 * A later version restarts a failed generation with the survivors (generation + 1) instead of
 * ending; the ring id carries the generation so that stale peers are refused.
 */
export class Coordinator {
  private state: CoordinatorState = 'gathering';
  private generation = 0;
  private readonly members: Member[] = [];
  private readonly http: Server;
  private readonly wss: WebSocketServer;
  private readonly configHash: string;
  private readonly log: Logger;
  private settle: { resolve: (s: RunStats) => void; reject: (e: CoordinatorError) => void } | null = null;
  private deadline: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastTick = Date.now();
  readonly stats: RunStats;
  readonly feed: StatusFeed;
  readonly metrics: PrometheusMetrics;
  private readonly status: StatusServer;
  /** Called after every progress report and every completed evaluation. */
  onProgress: ((stats: RunStats) => void) | null = null;
  onEpoch: ((epoch: number, stats: RunStats) => void) | null = null;

  constructor(private readonly options: CoordinatorOptions) {
    if (!Number.isInteger(options.workers) || options.workers < 1 || options.workers > 1024) {
      throw new CoordinatorError('ERR_CONFIG', `workers must be an integer in 1..1024, got ${options.workers}`);
    }
    this.configHash = jobConfigHash(options.config);
    this.log = options.logger;
    this.stats = new RunStats(options.workers, options.config.epochs);
    this.feed = new StatusFeed({
      runId: randomUUID(),
      workers: options.workers,
      config: summarizeConfig(options.config, this.configHash),
      intervalMs: options.statusIntervalMs,
      health: options.health,
      stragglers: options.stragglers,
    });
    this.metrics = new PrometheusMetrics();
    this.feed.subscribe((event) => this.metrics.observe(event));
    this.status = new StatusServer({
      feed: this.feed,
      metrics: this.metrics,
      statusToken: options.statusToken,
      adminToken: options.adminToken,
      onCommand: (action) => this.command(action),
      logger: options.logger,
    });
    this.http = createServer((req, res) => this.status.handleRequest(req, res));
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1024 * 1024 });
    this.http.on('upgrade', (req, socket, head) => {
      if (new URL(req.url ?? '/', 'http://x').pathname === '/status') this.status.handleUpgrade(req, socket, head);
      else this.onUpgrade(req, socket, head);
    });
  }

  /** Where the dashboard is served (set by `listen`). */
  dashboardUrl = '';

  get currentState(): CoordinatorState {
    return this.state;
  }

  /** Starts listening; returns the address workers dial. */
  async listen(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(this.options.port ?? 0, this.options.host ?? '127.0.0.1', () => resolve());
    });
    const a = this.http.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    const address = `ws://${host}:${a.port}`;
    this.dashboardUrl = `http://${host === '0.0.0.0' || host === '[::]' ? '127.0.0.1' : host}:${a.port}/`;
    this.log.info({ address, workers: this.options.workers, configHash: this.configHash }, `coordinator listening on ${address}, waiting for ${this.options.workers} workers`);
    return address;
  }

  /** Resolves with the run's figures when every worker finished; rejects with the root cause otherwise. */
  run(): Promise<RunStats> {
    this.armDeadline(this.options.joinTimeoutMs ?? 60_000, () => `only ${this.members.length} of ${this.options.workers} workers joined within ${this.options.joinTimeoutMs ?? 60_000} ms`);
    this.startHeartbeat();
    return new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
  }

  /** Stops the run (the user asked): every worker is told to stop. */
  stop(reason = 'stopped by the user'): void {
    this.finish('stopped', new CoordinatorError('ERR_INTERRUPTED', reason));
  }

  async close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (this.deadline) clearTimeout(this.deadline);
    this.feed.close();
    await this.status.close();
    for (const m of this.members) m.ws.close(1000, 'coordinator closing');
    this.wss.close();
    this.http.closeAllConnections?.();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const token = this.options.token;
    const given = String(req.headers['x-ringtrain-token'] ?? '');
    if (token !== undefined && !(given.length === token.length && timingSafeEqual(Buffer.from(given), Buffer.from(token)))) {
      this.log.warn({ remote: req.socket.remoteAddress }, 'worker refused: wrong or missing token');
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: 27\r\n\r\nwrong or missing job token\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws));
  }

  private onConnection(ws: WebSocket): void {
    let member: Member | null = null;
    const helloTimer = setTimeout(() => ws.close(1008, 'no hello'), 10_000);
    ws.on('message', (data: Buffer) => {
      let msg: ControlMessage;
      try {
        msg = decodeControl(data);
      } catch (err) {
        const code = (err as { code?: string }).code ?? 'ERR_PROTOCOL';
        ws.close(1002, code);
        const who = member ? `rank ${member.rank} (${member.workerId})` : 'a worker';
        if (member && this.state !== 'gathering') this.fail(new CoordinatorError('ERR_PROTOCOL', `${who} sent a bad message: ${(err as Error).message}`, member.rank));
        else this.log.warn({ code }, `${who} sent a bad message, connection closed: ${(err as Error).message}`);
        return;
      }
      if (member) member.lastSeen = Date.now();
      if (!member) {
        if (msg.type !== 'hello') return void ws.close(1002, 'expected hello');
        clearTimeout(helloTimer);
        member = this.onHello(ws, msg);
      } else {
        this.onMessage(member, msg);
      }
    });
    ws.on('pong', () => member && (member.lastSeen = Date.now()));
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (member) this.onDisconnect(member);
    });
    ws.on('error', () => {});
  }

  private onHello(ws: WebSocket, hello: MessageOf<'hello'>): Member | null {
    const reject = (code: string, reason: string): null => {
      this.log.warn({ workerId: hello.workerId, code }, `worker ${hello.workerId} refused: ${reason}`);
      ws.send(encodeControl({ type: 'reject', v: PROTOCOL_VERSION, code, reason }));
      ws.close(1008, code);
      return null;
    };
    if (this.state !== 'gathering') return reject('ERR_FULL', `the job already has its ${this.options.workers} workers (state ${this.state})`);
    if (hello.configHash !== null && hello.configHash !== this.configHash) {
      return reject('ERR_CONFIG_MISMATCH', `the worker's job config hash ${hello.configHash} differs from the coordinator's ${this.configHash}; start both with the same config`);
    }
    const member: Member = { ws, workerId: hello.workerId, ringAddress: hello.ringAddress, pid: hello.pid, host: hello.host, rank: -1, lastSeen: Date.now() };
    this.members.push(member);
    this.feed.workerJoined({ workerId: hello.workerId, host: hello.host, pid: hello.pid, address: hello.ringAddress });
    this.log.info({ workerId: hello.workerId, ringAddress: hello.ringAddress }, `worker ${hello.workerId} joined (${this.members.length}/${this.options.workers})`);
    if (this.members.length === this.options.workers) this.form();
    return member;
  }

  /** All workers are here: ranks in joining order, the ring in rank order, one generation. */
  private form(): void {
    this.generation++;
    const n = this.members.length;
    this.members.forEach((m, r) => (m.rank = r));
    this.feed.ranksAssigned(this.members.map((m) => m.workerId));
    this.setState('forming');
    const ringId = `${this.configHash}/gen-${this.generation}`;
    for (const m of this.members) {
      this.send(m, {
        type: 'assign',
        v: PROTOCOL_VERSION,
        generation: this.generation,
        rank: m.rank,
        worldSize: n,
        prevAddress: this.members[(m.rank - 1 + n) % n].ringAddress,
        ringId,
        config: this.options.config,
        configHash: this.configHash,
        progressEvery: this.options.progressEvery ?? 10,
        verifyEvery: this.options.verifyEvery ?? 0,
        maxSteps: this.options.maxSteps ?? 0,
        healthEvery: this.options.healthEvery ?? 100,
        ...(this.options.saveFinal ? { saveFinal: this.options.saveFinal } : {}),
        ...(this.options.checkpoint ? { checkpoint: this.options.checkpoint } : {}),
        ...(this.options.resume ? { resume: this.options.resume } : {}),
        ...(this.options.initFrom ? { initFrom: this.options.initFrom } : {}),
      });
    }
    this.log.info({ generation: this.generation, ring: this.members.map((m) => m.workerId) }, `generation ${this.generation}: ring of ${n} formed, ranks assigned`);
    this.armDeadline(this.options.readyTimeoutMs ?? 60_000, () => `only ${this.members.filter((m) => m.ready).length} of ${n} workers were ready within ${this.options.readyTimeoutMs ?? 60_000} ms`);
  }

  private onMessage(m: Member, msg: ControlMessage): void {
    switch (msg.type) {
      case 'ready': {
        m.ready = msg;
        this.feed.setRankState(m.rank, 'ready');
        if (this.members.every((x) => x.ready)) this.begin();
        return;
      }
      case 'progress':
        this.stats.addProgress(msg);
        this.feed.progress(msg);
        this.onProgress?.(this.stats);
        return;
      case 'evaluated': {
        const complete = this.stats.addEvaluation(msg);
        if (complete) {
          const e = this.stats.epochs[msg.epoch];
          this.feed.evaluation({ epoch: msg.epoch, step: this.stats.step, trainLoss: Number.isFinite(e.trainLoss) ? e.trainLoss : null, testLoss: e.testLoss, testAccuracy: e.testAccuracy, samples: e.testSamples });
          this.log.info(
            { epoch: msg.epoch, testLoss: e.testLoss, testAccuracy: e.testAccuracy, trainLoss: e.trainLoss, samplesPerSecond: this.stats.samplesPerSecond },
            `epoch ${msg.epoch + 1}/${this.options.config.epochs}: loss ${e.trainLoss.toFixed(4)}, test ${(100 * e.testAccuracy).toFixed(2)}% on ${e.testSamples} samples, ${Math.round(this.stats.samplesPerSecond)} samples/s`,
          );
          this.onEpoch?.(msg.epoch, this.stats);
        }
        return;
      }
      case 'done': {
        m.done = msg;
        this.feed.setRankState(m.rank, 'done');
        if (this.members.every((x) => x.done)) {
          const hashes = new Set(this.members.map((x) => x.done!.weightsHash));
          if (hashes.size !== 1) return this.fail(new CoordinatorError('ERR_REPLICA_DIVERGED', `final weights differ across ranks: ${this.members.map((x) => `rank ${x.rank} ${x.done!.weightsHash.slice(0, 12)}`).join(', ')}`));
          this.stats.finish(msg.weightsHash, msg.steps, Math.min(...this.members.map((x) => x.done!.replicaChecks)));
          this.finish('finished');
        }
        return;
      }
      case 'saved':
        this.stats.checkpoints.push({ step: msg.step, path: msg.path, stallMs: msg.stallMs, writeMs: msg.writeMs });
        this.feed.checkpointSaved({ step: msg.step, path: msg.path, stallMs: msg.stallMs, writeMs: msg.writeMs });
        this.log.info({ step: msg.step, path: msg.path, stallMs: msg.stallMs, writeMs: msg.writeMs }, `checkpoint at step ${msg.step}: ${msg.path} (training paused ${msg.stallMs.toFixed(1)} ms to copy, written in ${msg.writeMs.toFixed(0)} ms)`);
        return;
      case 'saveFailed':
        this.feed.checkpointFailed(msg.step, msg.message);
        return;
      case 'health':
        this.feed.health({ step: msg.step, tensors: msg.tensors });
        return;
      case 'nonFinite': {
        const where = describeNonFinite(msg);
        const then = msg.action === 'skip' ? 'the step is skipped on every rank' : 'the run stops';
        this.feed.warning({ code: 'WARN_NON_FINITE', message: `rank ${m.rank}: ${where} is ${msg.value} at step ${msg.step}; ${then}`, rank: m.rank, step: msg.step, ...(msg.tensor ? { tensor: msg.tensor } : {}) });
        return;
      }
      case 'failed':
        this.feed.setRankState(m.rank, 'failed', msg.message);
        return this.fail(new CoordinatorError(msg.code, `rank ${m.rank} (${m.workerId}) failed: ${msg.message}`, m.rank));
      default:
        this.log.warn({ type: msg.type, rank: m.rank }, `unexpected ${msg.type} from rank ${m.rank}`);
    }
  }

  private begin(): void {
    const hashes = new Set(this.members.map((m) => m.ready!.weightsHash));
    if (hashes.size !== 1) return this.fail(new CoordinatorError('ERR_REPLICA_DIVERGED', 'initial weights differ across ranks after the broadcast'));
    const backends = new Set(this.members.map((m) => m.ready!.backend));
    if (backends.size !== 1) {
      return this.fail(new CoordinatorError('ERR_BACKEND_MISMATCH', `workers resolved different backends, so replicas would drift apart: ${this.members.map((m) => `rank ${m.rank}: ${m.ready!.backend}`).join('; ')}; set "backend" in the job config`));
    }
    if (this.deadline) clearTimeout(this.deadline);
    this.stats.start(this.members[0].ready!.totalSteps);
    this.feed.started(this.members[0].ready!.totalSteps, this.options.resume?.state.globalStep ?? 0, this.members[0].ready!.parameters);
    this.metrics.started(this.options.resume?.state.globalStep ?? 0);
    this.setState('running');
    for (const m of this.members) this.send(m, { type: 'start', v: PROTOCOL_VERSION, generation: this.generation });
    this.log.info(`all ${this.members.length} ranks ready with identical weights (${[...hashes][0].slice(0, 12)}…) on ${[...backends][0]}; training`);
  }

  private onDisconnect(m: Member): void {
    if (this.state === 'gathering') {
      this.members.splice(this.members.indexOf(m), 1);
      this.feed.workerLeft(m.workerId);
      this.log.warn(`worker ${m.workerId} left before the run started (${this.members.length}/${this.options.workers})`);
      return;
    }
    if (m.done || this.state === 'finished' || this.state === 'failed' || this.state === 'stopped') return;
    this.feed.setRankState(m.rank, 'lost', 'disconnected');
    this.fail(new CoordinatorError('ERR_PEER_LOST', `rank ${m.rank} (${m.workerId}, pid ${m.pid} on ${m.host}) disconnected`, m.rank));
  }

  private fail(error: CoordinatorError): void {
    this.finish('failed', error);
  }

  /** The end of the run: the first cause wins; every worker still connected is told to stop. */
  private finish(state: 'finished' | 'failed' | 'stopped', error?: CoordinatorError): void {
    if (this.state === 'finished' || this.state === 'failed' || this.state === 'stopped') return;
    this.setState(state, error);
    const last = this.stats.epochs.at(-1);
    this.feed.end({ steps: this.stats.step, seconds: this.stats.seconds, samplesPerSecond: this.stats.samplesPerSecond, testAccuracy: last ? last.testAccuracy : null });
    if (this.deadline) clearTimeout(this.deadline);
    if (this.heartbeat) clearInterval(this.heartbeat);
    if (error) {
      this.log.error({ code: error.code, rank: error.rank }, error.message);
      for (const m of this.members) if (!m.done) this.send(m, { type: 'stop', v: PROTOCOL_VERSION, code: error.code, reason: error.message.slice(0, 4000) });
      this.settle?.reject(error);
    } else {
      // Workers keep their ring open until every rank is done: an early close would fail a
      // neighbour still finishing its last collective.
      for (const m of this.members) this.send(m, { type: 'stop', v: PROTOCOL_VERSION, code: 'DONE', reason: 'all ranks finished' });
      this.settle?.resolve(this.stats);
    }
  }

  private setState(state: CoordinatorState, error?: CoordinatorError): void {
    this.state = state;
    this.feed.setState(state, this.generation, error ? { code: error.code, message: error.message, ...(error.rank !== undefined ? { rank: error.rank } : {}) } : null);
  }

  /** A control action from an admin on the status socket. */
  private command(action: 'stop' | 'checkpoint'): CommandOutcome {
    if (this.state === 'finished' || this.state === 'failed' || this.state === 'stopped') return { ok: false, code: 'ERR_STATE', message: `the run is already ${this.state}` };
    if (action === 'stop') {
      this.stop('stopped by an admin over the status socket');
      return { ok: true, message: 'stopping the run' };
    }
    if (!this.options.checkpoint) return { ok: false, code: 'ERR_NO_CHECKPOINT_DIR', message: 'this run writes no checkpoints: start it with --checkpoint-dir' };
    if (this.state !== 'running') return { ok: false, code: 'ERR_STATE', message: `checkpoints are taken while running, not while ${this.state}` };
    this.send(this.members[0], { type: 'checkpointNow', v: PROTOCOL_VERSION });
    return { ok: true, message: 'rank 0 writes a checkpoint after its current step' };
  }

  private send(m: Member, msg: ControlMessage): void {
    if (m.ws.readyState === WebSocket.OPEN) m.ws.send(encodeControl(msg));
  }

  private armDeadline(ms: number, why: () => string): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = setTimeout(() => this.fail(new CoordinatorError('ERR_RENDEZVOUS', why())), ms);
  }

  /** A worker silent for peerTimeoutMs is lost; a late tick means this process was busy, not the worker. */
  private startHeartbeat(): void {
    const period = this.options.heartbeatMs ?? 1000;
    const timeout = this.options.peerTimeoutMs ?? 3000;
    this.heartbeat = setInterval(() => {
      const now = Date.now();
      const late = now - this.lastTick > 2 * period;
      this.lastTick = now;
      for (const m of this.members) {
        if (m.ws.readyState !== WebSocket.OPEN || m.done) continue;
        if (late) m.lastSeen = now;
        // Only while running: before that a worker may be busy loading its data for a while (the
        // ready deadline covers it), and in running every step yields to answer pings.
        else if (this.state === 'running' && now - m.lastSeen > timeout) {
          m.ws.terminate();
          this.feed.setRankState(m.rank, 'lost', `silent for ${now - m.lastSeen} ms`);
          return this.fail(new CoordinatorError('ERR_PEER_LOST', `rank ${m.rank} (${m.workerId}) silent for ${now - m.lastSeen} ms`, m.rank));
        }
        m.ws.ping();
      }
    }, period);
    this.heartbeat.unref();
  }
}

/** The few facts of a job a person watching it wants to see first. */
function summarizeConfig(config: JobConfig, configHash: string): ConfigSummary {
  const o = config.optimizer as { type: string; momentum?: number };
  return {
    model: describeModel(config.model),
    parameters: parameterCount(config.model),
    optimizer: o.momentum ? `${o.type} (momentum ${o.momentum})` : o.type,
    lr: config.optimizer.lr,
    batchSize: config.batchSize,
    epochs: config.epochs,
    dataset: describeDataset(config.dataset as { source: string; kind?: string; path?: string }),
    configHash,
  };
}

function describeDataset(d: { source: string; kind?: string; path?: string }): string {
  if (d.kind) return `${d.source} (${d.kind})`;
  return d.path ? `${d.source} ${d.path}` : d.source;
}

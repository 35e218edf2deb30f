import { type ControlMessage, type MessageOf, PROTOCOL_VERSION } from '@ringtrain/protocol';

/**
 * Membership as a pure state machine: events in (a hello, a message, a lost connection, a deadline),
 * effects out (messages to send, connections to close, deadlines to arm, reports for the run record).
 * No sockets and no clocks: the coordinator's network side feeds it and carries out what it says,
 * and the property tests drive it with random event sequences.
 *
 *   gathering ──MAX joined, or ≥ MIN and the last call passed──▶ forming ──all ready──▶ running ──all done──▶ finished
 *                                                                 ▲   │                    │
 *                  quorum answered (or its deadline) ─ regrouping ◀───┴── a fault, a join, a leave
 *                                                          │
 *                                   fewer than MIN ──▶ waiting ──a join──▶ forming  (rejoin deadline: failed)
 *
 * A generation is one set of ranks and one ring. A fault (a lost, silent or failing ring member)
 * does not end the run: the members that still answer form the next generation at the same step,
 * and the workers recover the training state from the most advanced replica. Faults are counted
 * against `maxRestarts`; joins and clean leaves are not.
 */

/** An opaque handle of one worker connection, given by the network side. */
export type Conn = number;

export type MembershipState = 'gathering' | 'forming' | 'running' | 'regrouping' | 'waiting' | 'finished' | 'failed' | 'stopped';
export type Timer = 'join' | 'lastCall' | 'ready' | 'quorum' | 'rejoin';
export type Cause = 'start' | 'fault' | 'join' | 'leave';

/** The per-worker fields of `assign` are filled in here; the rest of it comes from the job. */
export type AssignTemplate = Omit<MessageOf<'assign'>, 'type' | 'v' | 'generation' | 'rank' | 'worldSize' | 'prevAddress' | 'ringId' | 'runId'>;

export interface MembershipOptions {
  runId: string;
  /** This coordinator process: ring ids of a restarted coordinator never repeat an earlier one's. */
  incarnation: string;
  configHash: string;
  /** Ring size bounds: below `min` the run pauses; a plain N is N:N. */
  min: number;
  max: number;
  /** Membership changes caused by faults that the run survives (default 3). */
  maxRestarts: number;
  assign: AssignTemplate;
  /** Ms; the machine only names them in its timer effects. */
  joinTimeoutMs: number;
  readyTimeoutMs: number;
  lastCallMs: number;
  quorumMs: number;
  rejoinTimeoutMs: number;
}

export interface WorkerInfo {
  workerId: string;
  host: string;
  /** Which machine it is on (hashed), where it said so. */
  hostId?: string;
  pid: number;
  ringAddress: string;
}

export interface Member extends WorkerInfo {
  conn: Conn;
  /** Its rank in `generation`, or -1 while waiting to be admitted. */
  rank: number;
  generation: number;
  /** Its replica is built (it said `prepared`): only then can it take a place. */
  prepared: boolean;
  ready: MessageOf<'ready'> | null;
  done: MessageOf<'done'> | null;
  /** Answered since the current regroup began (a message or a pong): it is alive. */
  answered: boolean;
  /** It said it holds training state of this run (a restarted coordinator's worker). */
  holdsState: boolean;
}

/** Why a generation ended: the first fault of it, for the root-cause record. */
export interface Fault {
  code: string;
  message: string;
  rank?: number;
  workerId?: string;
  host?: string;
  pid?: number;
}

export interface GenerationRecord {
  generation: number;
  cause: Cause;
  worldSize: number;
  ranks: string[];
  restarts: number;
  fault: Fault | null;
}

export type MembershipEvent =
  | { type: 'hello'; conn: Conn; hello: MessageOf<'hello'> }
  | { type: 'message'; conn: Conn; msg: ControlMessage }
  | { type: 'disconnect'; conn: Conn }
  | { type: 'silent'; conn: Conn; ms: number }
  | { type: 'alive'; conn: Conn }
  | { type: 'timer'; name: Timer }
  | { type: 'stop'; code: string; reason: string }
  /** Every worker this coordinator's launch started has ended, and none will be started again. */
  | { type: 'workersGone'; why: string }
  /** A checkpoint of this run is on disk, verified: where a ring with no state would resume. */
  | { type: 'checkpointed'; resume: Resume };

export type Resume = NonNullable<MessageOf<'assign'>['resume']>;

export type Effect =
  | { type: 'send'; conn: Conn; msg: ControlMessage }
  | { type: 'close'; conn: Conn; code: number; reason: string }
  | { type: 'arm'; timer: Timer; ms: number }
  | { type: 'cancel'; timer: Timer }
  /** Ask every member whether it is alive; `suspect` is the ring member a fault was blamed on. */
  | { type: 'ping'; suspect?: Conn }
  | { type: 'joined'; member: Member }
  | { type: 'left'; member: Member; reason: string }
  /** A worker's message, checked against its connection, rank, generation and the run's state. */
  | { type: 'report'; member: Member; msg: ControlMessage }
  | { type: 'refused'; conn: Conn; code: string; reason: string }
  /** No worker of the new ring holds the run's state: it starts from `resume`, or from scratch. */
  | { type: 'stateLost'; generation: number; resume: Resume | null }
  /** A worker could not prepare the job (load the data, build the model): it takes no place. */
  | { type: 'unprepared'; conn: Conn; fault: Fault }
  | { type: 'generation'; record: GenerationRecord }
  | { type: 'state'; state: MembershipState; generation: number; error: Fault | null }
  /** A restarted coordinator took over the run its workers hold (its id and generations). */
  | { type: 'adopted'; runId: string; generation: number; step: number }
  | { type: 'running'; generation: number; ready: MessageOf<'ready'>[] }
  | { type: 'finished'; done: MessageOf<'done'>[] };

const TERMINAL: ReadonlySet<MembershipState> = new Set(['finished', 'failed', 'stopped']);
/** Reports only rank 0 makes: it measures the ring and the tensors' health, and writes the checkpoints (but for a survivor asked to save). */
const RANK_ZERO_REPORTS: ReadonlySet<ControlMessage['type']> = new Set(['health', 'ringProbe', 'saved', 'saveFailed']);
/** The segment sizes a ring's tuning picks from (ring-probe.ts: 64 KiB to 16 MiB). */
const TUNED_SEGMENT_BYTES = { min: 64 << 10, max: 16 << 20 } as const;
/** Messages a worker may send, once it said hello. */
const REPORTS: ReadonlySet<ControlMessage['type']> = new Set(['progress', 'evaluated', 'saved', 'saveFailed', 'health', 'ringProbe', 'nonFinite']);

export class Membership {
  private current: MembershipState = 'gathering';
  private gen = 0;
  /** The newest checkpoint of this run, for a ring in which no worker holds the state. */
  private resumePoint: Resume | null = null;
  /** The first report of a worker that could not prepare the job. */
  private unprepared: Fault | null = null;
  private run: string;
  /** True once this run's identity is settled: a generation formed, or held state was adopted. */
  private settled = false;
  private restartCount = 0;
  /** The segment size the last ring that timed them picked (sent to later rings, which then need not). */
  private tuned: MessageOf<'assign'>['tunedSegment'] = undefined;
  private readonly members = new Map<Conn, Member>();
  /** The survivor asked to save what it holds (paused below MIN): its checkpoint report is not rank 0's. */
  private askedToSave: Conn | null = null;
  /** The fault that ended the current generation, until the next one forms. */
  private pendingFault: Fault | null = null;
  private pendingCause: Cause = 'start';
  private out: Effect[] = [];

  constructor(readonly options: MembershipOptions) {
    this.run = options.runId;
    if (!Number.isInteger(options.min) || !Number.isInteger(options.max) || options.min < 1 || options.max < options.min || options.max > 1024) {
      throw new RangeError(`workers must be MIN:MAX with 1 ≤ MIN ≤ MAX ≤ 1024, got ${options.min}:${options.max}`);
    }
  }

  get state(): MembershipState {
    return this.current;
  }

  get generation(): number {
    return this.gen;
  }

  /** The run's id: this coordinator's own, or the one it re-adopted from its workers. */
  get runId(): string {
    return this.run;
  }

  get restarts(): number {
    return this.restartCount;
  }

  /** Members of the current generation, in rank order. */
  get ring(): Member[] {
    return [...this.members.values()].filter((m) => m.rank >= 0 && m.generation === this.gen).sort((a, b) => a.rank - b.rank);
  }

  get all(): Member[] {
    return [...this.members.values()];
  }

  memberOf(conn: Conn): Member | undefined {
    return this.members.get(conn);
  }

  /** Arms the first deadline: all effects of starting the run. */
  start(): Effect[] {
    this.out = [{ type: 'arm', timer: 'join', ms: this.options.joinTimeoutMs }];
    return this.flush();
  }

  handle(event: MembershipEvent): Effect[] {
    this.out = [];
    if (TERMINAL.has(this.current)) {
      if (event.type === 'hello') this.reject(event.conn, 'ERR_FINISHED', `the run is already ${this.current}`);
      return this.flush();
    }
    switch (event.type) {
      case 'hello':
        this.onHello(event.conn, event.hello);
        break;
      case 'message':
        this.onMessage(event.conn, event.msg);
        break;
      case 'disconnect':
        this.onLost(event.conn, 'ERR_PEER_LOST', 'disconnected', false);
        break;
      case 'silent':
        this.onLost(event.conn, 'ERR_PEER_LOST', `silent for ${event.ms} ms`, true);
        break;
      case 'alive': {
        const m = this.members.get(event.conn);
        if (m) this.answer(m);
        break;
      }
      case 'timer':
        this.onTimer(event.name);
        break;
      case 'stop':
        this.end('stopped', { code: event.code, message: event.reason });
        break;
      case 'checkpointed':
        this.resumePoint = event.resume;
        break;
      case 'workersGone':
        // The cause the workers reported, where one could not prepare the job, is the root cause.
        this.end('failed', this.unprepared ?? { code: 'ERR_WORKERS_GONE', message: `every worker ended and none is left to start: ${event.why}` });
        break;
    }
    return this.flush();
  }

  private flush(): Effect[] {
    const out = this.out;
    this.out = [];
    return out;
  }

  private emit(e: Effect): void {
    this.out.push(e);
  }

  private reject(conn: Conn, code: string, reason: string, config?: unknown): void {
    this.emit({ type: 'send', conn, msg: { type: 'reject', v: PROTOCOL_VERSION, code, reason, ...(config !== undefined ? { config } : {}) } });
    this.emit({ type: 'close', conn, code: 1008, reason: code });
  }

  /**
   * A worker that could not load the data or build the model for the job (a dataset smaller than
   * one global batch, a missing file). One token holder cannot end the run this way; the cause is
   * kept, and it is what the run fails with when the rendezvous deadline passes, or when `launch`
   * has no worker left to start (`workersGone`): the user sees why, not only that none joined.
   */
  private failedToPrepare(conn: Conn, m: Member, msg: MessageOf<'failed'>): void {
    const fault = { code: msg.code, message: `${m.workerId} could not prepare the job: ${msg.message}`, workerId: m.workerId, host: m.host, pid: m.pid };
    this.unprepared ??= fault;
    this.emit({ type: 'unprepared', conn, fault });
  }

  private refuse(conn: Conn, code: string, reason: string): void {
    this.emit({ type: 'refused', conn, code, reason });
  }

  private onHello(conn: Conn, hello: MessageOf<'hello'>): void {
    if (this.members.has(conn)) return this.refuse(conn, 'ERR_OUT_OF_PLACE', 'a second hello on the same connection');
    if (hello.configHash !== null && hello.configHash !== this.options.configHash) {
      return this.reject(conn, 'ERR_CONFIG_MISMATCH', `the worker's job config hash ${hello.configHash} differs from the coordinator's ${this.options.configHash}; start both with the same config`, this.options.assign.config);
    }
    if (this.members.size >= this.options.max) return this.reject(conn, 'ERR_FULL', `the job already has its ${this.options.max} workers (state ${this.current})`);
    if (hello.held) {
      // A worker that holds a run's training state: a restarted coordinator takes that run over
      // (its id, and generations numbered after the last one); another run's worker is refused.
      if (!this.settled && this.current === 'gathering') {
        if (this.run !== hello.held.runId) this.emit({ type: 'adopted', runId: hello.held.runId, generation: hello.held.generation, step: hello.held.step });
        this.run = hello.held.runId;
        this.gen = Math.max(this.gen, hello.held.generation);
      } else if (hello.held.runId !== this.run) {
        return this.reject(conn, 'ERR_OTHER_RUN', `the worker holds the state of run ${hello.held.runId}, this coordinator runs ${this.run}`);
      }
    }
    const member: Member = { conn, workerId: hello.workerId, host: hello.host, hostId: hello.hostId, pid: hello.pid, ringAddress: hello.ringAddress, rank: -1, generation: 0, prepared: false, ready: null, done: null, answered: true, holdsState: hello.held !== undefined };
    this.members.set(conn, member);
    this.emit({ type: 'joined', member: { ...member } });
    const { config, configHash, globalBatch } = this.options.assign;
    this.emit({ type: 'send', conn, msg: { type: 'job', v: PROTOCOL_VERSION, config, configHash, globalBatch } });
  }

  private get preparedCount(): number {
    return [...this.members.values()].filter((m) => m.prepared).length;
  }

  /** A newcomer is ready to take a place: it joins the next generation that forms. */
  private onPrepared(): void {
    const n = this.preparedCount;
    switch (this.current) {
      case 'gathering':
        if (n >= this.options.max) this.form('start');
        else if (n >= this.options.min) this.emit({ type: 'arm', timer: 'lastCall', ms: this.options.lastCallMs });
        return;
      case 'waiting':
        if (n >= this.options.min) this.form(this.pendingCause);
        return;
      case 'forming':
        // Nobody has trained in this generation yet: forming again with the newcomer is cheap.
        return this.form('join');
      case 'running':
        return this.regroup('join', null);
      case 'regrouping':
        return this.maybeQuorum(); // it joins the generation that the quorum forms
    }
  }

  private onMessage(conn: Conn, msg: ControlMessage): void {
    const m = this.members.get(conn);
    if (!m) return this.refuse(conn, 'ERR_OUT_OF_PLACE', `${msg.type} before hello`);
    this.answer(m);
    if (msg.type === 'failed' && msg.rank === undefined && m.rank < 0) return this.failedToPrepare(conn, m, msg);
    const ranked = 'rank' in msg && 'generation' in msg;
    if (ranked) {
      // Reports of an older generation of this same worker are late, not hostile: dropped quietly.
      if (msg.generation !== undefined && msg.generation < m.generation && msg.rank === m.rank) return;
      if (m.rank < 0 || msg.generation !== m.generation || msg.rank !== m.rank || m.generation !== this.gen) {
        return this.refuse(conn, 'ERR_OUT_OF_PLACE', `${msg.type} naming rank ${msg.rank} of generation ${msg.generation} from ${m.workerId}, which is ${m.rank < 0 ? 'not in the ring' : `rank ${m.rank} of generation ${m.generation}`}`);
      }
    }
    switch (msg.type) {
      case 'prepared':
        if (m.prepared) return this.refuse(conn, 'ERR_OUT_OF_PLACE', `a second prepared from ${m.workerId}`);
        m.prepared = true;
        return this.onPrepared();
      case 'ready':
        if (this.current !== 'forming' || m.ready) return this.refuse(conn, 'ERR_OUT_OF_PLACE', `ready from rank ${m.rank} while ${this.current}`);
        m.ready = msg;
        this.emit({ type: 'report', member: { ...m }, msg });
        if (this.ring.every((x) => x.ready)) this.begin();
        return;
      case 'done': {
        if (this.current !== 'running' || m.done) return this.refuse(conn, 'ERR_OUT_OF_PLACE', `done from rank ${m.rank} while ${this.current}`);
        m.done = msg;
        this.emit({ type: 'report', member: { ...m }, msg });
        const ring = this.ring;
        if (!ring.every((x) => x.done)) return;
        const hashes = new Set(ring.map((x) => x.done!.weightsHash));
        if (hashes.size !== 1) {
          return this.end('failed', { code: 'ERR_REPLICA_DIVERGED', message: `final weights differ across ranks: ${ring.map((x) => `rank ${x.rank} ${x.done!.weightsHash.slice(0, 12)}`).join(', ')}` });
        }
        this.emit({ type: 'finished', done: ring.map((x) => x.done!) });
        return this.end('finished', null);
      }
      case 'failed':
        if (m.rank < 0) return this.refuse(conn, 'ERR_OUT_OF_PLACE', 'failed from a worker outside the ring');
        this.emit({ type: 'report', member: { ...m }, msg });
        return this.end('failed', { code: msg.code, message: `rank ${m.rank} (${m.workerId}) failed: ${msg.message}`, rank: m.rank, workerId: m.workerId, host: m.host, pid: m.pid });
      case 'aborted':
        if (this.current === 'waiting') return; // the ring it reports is already over
        if (this.current !== 'running' && this.current !== 'forming' && this.current !== 'regrouping') return this.refuse(conn, 'ERR_OUT_OF_PLACE', `aborted while ${this.current}`);
        this.emit({ type: 'report', member: { ...m }, msg });
        if (this.current === 'regrouping') return this.maybeQuorum();
        this.regroup('fault', this.blame(msg, m));
        if ((this.current as MembershipState) === 'regrouping') this.answer(m); // the reporter is alive: it just spoke
        return;
      case 'leave':
        this.emit({ type: 'report', member: { ...m }, msg });
        this.remove(m, `left cleanly after step ${msg.step}: ${msg.reason}`);
        this.emit({ type: 'close', conn, code: 1000, reason: 'left' });
        return this.afterDeparture('leave', null);
      default:
        if (REPORTS.has(msg.type)) {
          if (this.current !== 'running' && this.current !== 'regrouping' && this.current !== 'waiting') return this.refuse(conn, 'ERR_OUT_OF_PLACE', `${msg.type} from rank ${m.rank} while ${this.current}`);
          const keeper = (msg.type === 'saved' || msg.type === 'saveFailed') && conn === this.askedToSave;
          if (RANK_ZERO_REPORTS.has(msg.type) && m.rank !== 0 && !keeper) return this.refuse(conn, 'ERR_OUT_OF_PLACE', `${msg.type} from rank ${m.rank}: only rank 0 ${msg.type === 'saved' || msg.type === 'saveFailed' ? 'writes checkpoints' : 'measures it'}`);
          // A tuned segment size is kept for later rings only when it is one the tuning tried, in the range it tries.
          if (msg.type === 'ringProbe' && msg.tuning && msg.transport !== 'shared memory' && msg.tuning.some((t) => t.segmentBytes === msg.segmentBytes) && msg.segmentBytes >= TUNED_SEGMENT_BYTES.min && msg.segmentBytes <= TUNED_SEGMENT_BYTES.max) {
            this.tuned = { bytes: msg.segmentBytes, transport: msg.transport, ...(msg.hosts ? { hosts: msg.hosts } : {}) };
          }
          return this.emit({ type: 'report', member: { ...m }, msg });
        }
        return this.refuse(conn, 'ERR_OUT_OF_PLACE', `a worker may not send ${msg.type}`);
    }
  }

  /** The peer a worker's ring lost is the likelier culprit than the worker that reports it. */
  private blame(msg: MessageOf<'aborted'>, reporter: Member): Fault {
    const peer = msg.peer !== undefined ? this.ring.find((x) => x.rank === msg.peer) : undefined;
    const who = peer ?? reporter;
    const message = peer ? `rank ${peer.rank} (${peer.workerId}, pid ${peer.pid} on ${peer.host}) lost: rank ${reporter.rank} reports ${msg.message}` : `rank ${reporter.rank}: ${msg.message}`;
    return { code: msg.code, message, rank: who.rank, workerId: who.workerId, host: who.host, pid: who.pid };
  }

  private answer(m: Member): void {
    if (m.answered) return;
    m.answered = true;
    if (this.current === 'regrouping') this.maybeQuorum();
  }

  private onLost(conn: Conn, code: string, why: string, terminate: boolean): void {
    const m = this.members.get(conn);
    if (!m) return;
    if (terminate) this.emit({ type: 'close', conn, code: 1001, reason: why });
    const wasRanked = m.rank >= 0 && m.generation === this.gen;
    this.remove(m, why);
    if (!wasRanked || this.current === 'gathering' || this.current === 'waiting') {
      if (this.current === 'regrouping') this.maybeQuorum();
      return;
    }
    if (this.current === 'running' && m.done && this.ring.every((x) => x.done)) return;
    const fault: Fault = { code, message: `rank ${m.rank} (${m.workerId}, pid ${m.pid} on ${m.host}) ${why}`, rank: m.rank, workerId: m.workerId, host: m.host, pid: m.pid };
    this.afterDeparture('fault', fault);
  }

  private remove(m: Member, reason: string): void {
    this.members.delete(m.conn);
    this.emit({ type: 'left', member: { ...m }, reason });
  }

  /** A ring member is gone: the rest regroup (or, already regrouping, the quorum may be complete). */
  private afterDeparture(cause: Cause, fault: Fault | null): void {
    if (this.current === 'regrouping') {
      // Part of the membership change already under way: the budget counts changes, not departures.
      if (cause === 'fault' && this.pendingCause !== 'fault') {
        this.pendingCause = 'fault';
        if (!this.count(fault)) return;
      }
      this.pendingFault ??= fault;
      return this.maybeQuorum();
    }
    this.regroup(cause, fault);
  }

  private count(fault: Fault | null): boolean {
    this.restartCount++;
    if (this.restartCount <= this.options.maxRestarts) return true;
    const why = fault ? `${fault.message} (${fault.code})` : 'a fault';
    this.end('failed', { ...(fault ?? { code: 'ERR_RESTART_BUDGET', message: '' }), code: 'ERR_RESTART_BUDGET', message: `${this.restartCount} membership changes caused by faults, more than --max-restarts ${this.options.maxRestarts}; the last: ${why}` });
    return false;
  }

  /**
   * The current generation is over. Everyone still here is asked whether it is alive (a ping; any
   * message counts); when all have answered, or the quorum deadline passes, the next one forms.
   */
  private regroup(cause: Cause, fault: Fault | null): void {
    if (cause === 'fault' && !this.count(fault)) return;
    this.pendingCause = cause;
    this.pendingFault = fault;
    this.emit({ type: 'cancel', timer: 'ready' });
    this.setState('regrouping', null);
    for (const m of this.members.values()) m.answered = m.rank < 0; // newcomers just spoke
    const suspect = fault?.rank !== undefined ? this.ring.find((x) => x.rank === fault.rank)?.conn : undefined;
    this.emit({ type: 'ping', suspect });
    this.emit({ type: 'arm', timer: 'quorum', ms: this.options.quorumMs });
  }

  private maybeQuorum(): void {
    if ([...this.members.values()].every((m) => m.answered)) this.form(this.pendingCause);
  }

  /**
   * The next generation: members in rank order, then newcomers in joining order, each host's
   * workers then moved next to the first of them (so that they sum in shared memory); ranks 0..n−1.
   */
  private form(cause: Cause): void {
    this.emit({ type: 'cancel', timer: 'quorum' });
    this.emit({ type: 'cancel', timer: 'lastCall' });
    this.emit({ type: 'cancel', timer: 'join' });
    const order = [...this.members.values()].filter((m) => m.prepared).sort((a, b) => (a.rank < 0 ? 1 : 0) - (b.rank < 0 ? 1 : 0) || (a.rank >= 0 && b.rank >= 0 ? a.rank - b.rank : 0));
    if (order.length < this.options.min) {
      if (this.current !== 'waiting') {
        this.pendingCause = cause;
        this.setState('waiting', null);
        this.emit({ type: 'arm', timer: 'rejoin', ms: this.options.rejoinTimeoutMs });
        // Paused below MIN: the state the survivors hold goes to disk first, where checkpoints are kept.
        const keeper = order.find((m) => m.rank >= 0);
        if (keeper && this.options.assign.checkpoint) {
          this.askedToSave = keeper.conn;
          this.emit({ type: 'send', conn: keeper.conn, msg: { type: 'checkpointNow', v: PROTOCOL_VERSION } });
        }
      }
      return;
    }
    this.emit({ type: 'cancel', timer: 'rejoin' });
    const ring = byHost(order.slice(0, this.options.max));
    // Every worker that held the run's state is gone (all killed at once): as torchrun's restart
    // does, the ring goes on from the newest checkpoint, and says so; without one, progress is lost.
    const stateless = this.gen > 0 && ring.every((m) => m.generation === 0 && !m.holdsState);
    const resume = stateless ? (this.resumePoint ?? this.options.assign.resume ?? null) : this.options.assign.resume ?? null;
    this.settled = true;
    this.gen++;
    if (stateless) this.emit({ type: 'stateLost', generation: this.gen, resume });
    const n = ring.length;
    ring.forEach((m, r) => {
      m.rank = r;
      m.generation = this.gen;
      m.ready = null;
      m.done = null;
    });
    const fault = cause === 'start' ? null : this.pendingFault;
    this.pendingFault = null;
    this.emit({ type: 'generation', record: { generation: this.gen, cause, worldSize: n, ranks: ring.map((m) => m.workerId), restarts: this.restartCount, fault } });
    this.setState('forming', null);
    const ringId = `${this.run.slice(0, 8)}.${this.options.configHash}/${this.options.incarnation}.${this.gen}`;
    for (const m of ring) {
      this.emit({
        type: 'send',
        conn: m.conn,
        msg: { ...this.options.assign, ...(resume ? { resume } : {}), ...(this.tuned ? { tunedSegment: this.tuned } : {}), type: 'assign', v: PROTOCOL_VERSION, generation: this.gen, rank: m.rank, worldSize: n, prevAddress: ring[(m.rank - 1 + n) % n].ringAddress, ringId, runId: this.run },
      });
    }
    this.emit({ type: 'arm', timer: 'ready', ms: this.options.readyTimeoutMs });
  }

  private begin(): void {
    const ring = this.ring;
    const hashes = new Set(ring.map((m) => m.ready!.weightsHash));
    if (hashes.size !== 1) return this.end('failed', { code: 'ERR_REPLICA_DIVERGED', message: `weights differ across ranks after the state was shared: ${ring.map((m) => `rank ${m.rank} ${m.ready!.weightsHash.slice(0, 12)}`).join(', ')}` });
    const backends = new Set(ring.map((m) => m.ready!.backend));
    if (backends.size !== 1) {
      return this.end('failed', { code: 'ERR_BACKEND_MISMATCH', message: `workers resolved different backends, so replicas would drift apart: ${ring.map((m) => `rank ${m.rank}: ${m.ready!.backend}`).join('; ')}; set "backend" in the job config` });
    }
    this.emit({ type: 'cancel', timer: 'ready' });
    this.setState('running', null);
    this.emit({ type: 'running', generation: this.gen, ready: ring.map((m) => m.ready!) });
    for (const m of ring) this.emit({ type: 'send', conn: m.conn, msg: { type: 'start', v: PROTOCOL_VERSION, generation: this.gen } });
  }

  private onTimer(name: Timer): void {
    switch (name) {
      case 'join':
        if (this.current !== 'gathering') return;
        if (this.preparedCount >= this.options.min) return this.form('start');
        return this.end('failed', { code: 'ERR_RENDEZVOUS', message: `only ${this.preparedCount} of ${this.options.min} workers joined within ${this.options.joinTimeoutMs} ms${this.unprepared ? `; ${this.unprepared.code}: ${this.unprepared.message}` : ''}` });
      case 'lastCall':
        if (this.current === 'gathering' && this.preparedCount >= this.options.min) this.form('start');
        return;
      case 'ready': {
        if (this.current !== 'forming') return;
        const late = this.ring.filter((m) => !m.ready);
        const fault: Fault = { code: 'ERR_RENDEZVOUS', message: `${late.map((m) => `rank ${m.rank} (${m.workerId})`).join(', ')} not ready within ${this.options.readyTimeoutMs} ms`, rank: late[0]?.rank, workerId: late[0]?.workerId, host: late[0]?.host, pid: late[0]?.pid };
        if (this.gen === 1 && this.restartCount === 0 && late.length === this.ring.length) return this.end('failed', fault);
        for (const m of late) {
          this.emit({ type: 'close', conn: m.conn, code: 1001, reason: 'not ready in time' });
          this.remove(m, 'not ready in time');
        }
        return this.regroup('fault', fault);
      }
      case 'quorum': {
        if (this.current !== 'regrouping') return;
        const silent = [...this.members.values()].filter((m) => !m.answered);
        for (const m of silent) {
          this.emit({ type: 'close', conn: m.conn, code: 1001, reason: 'did not answer the regroup' });
          this.remove(m, `did not answer within ${this.options.quorumMs} ms`);
          this.pendingFault ??= { code: 'ERR_PEER_LOST', message: `rank ${m.rank} (${m.workerId}) did not answer within ${this.options.quorumMs} ms`, rank: m.rank, workerId: m.workerId, host: m.host, pid: m.pid };
        }
        // A member lost in a regroup begun for a join or a leave makes it a fault (counted once).
        if (silent.length && this.pendingCause !== 'fault') {
          this.pendingCause = 'fault';
          if (!this.count(this.pendingFault)) return;
        }
        return this.form(this.pendingCause);
      }
      case 'rejoin':
        if (this.current !== 'waiting') return;
        return this.end('failed', {
          ...(this.pendingFault ?? {}),
          code: 'ERR_TOO_FEW_WORKERS',
          message: `only ${this.preparedCount} of at least ${this.options.min} workers within the rejoin timeout of ${this.options.rejoinTimeoutMs} ms`,
        });
    }
  }

  private setState(state: MembershipState, error: Fault | null): void {
    this.current = state;
    this.emit({ type: 'state', state, generation: this.gen, error });
  }

  /** The end: the first cause wins; every member still connected is told to stop. */
  private end(state: 'finished' | 'failed' | 'stopped', error: Fault | null): void {
    if (TERMINAL.has(this.current)) return;
    for (const t of ['join', 'lastCall', 'ready', 'quorum', 'rejoin'] as const) this.emit({ type: 'cancel', timer: t });
    this.setState(state, error);
    for (const m of this.members.values()) {
      if (error) {
        if (!m.done) this.emit({ type: 'send', conn: m.conn, msg: { type: 'stop', v: PROTOCOL_VERSION, code: error.code, reason: error.message.slice(0, 4000) } });
      } else {
        // Workers keep their ring open until every rank is done: an early close would fail a
        // neighbour still finishing its last collective.
        this.emit({ type: 'send', conn: m.conn, msg: { type: 'stop', v: PROTOCOL_VERSION, code: 'DONE', reason: 'all ranks finished' } });
      }
    }
  }
}

/** Each host's members moved next to the first of them, in order otherwise (hosts named by hostId, else by host name). */
export function byHost<M extends WorkerInfo>(order: M[]): M[] {
  const hosts = new Map<string, M[]>();
  for (const m of order) {
    const key = m.hostId ?? m.host;
    const list = hosts.get(key);
    if (list) list.push(m);
    else hosts.set(key, [m]);
  }
  return [...hosts.values()].flat();
}

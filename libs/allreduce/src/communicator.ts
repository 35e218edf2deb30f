import type { ControlMessage, FrameHeader } from '@ringtrain/protocol';
import { MAX_EARLY_FRAMES, opName, PROTOCOL_VERSION } from '@ringtrain/protocol';
import type { Logger } from 'pino';
import { CollectiveError } from './errors.js';
import { Payload } from './payload.js';
import { allFiniteFloat32 } from './reduce-kernel.js';
import {
  AllGatherOp,
  AllReduceOp,
  BroadcastOp,
  BufferPool,
  type CollectiveKind,
  describeFingerprint,
  type Fingerprint,
  kindOfFrame,
  type Operation,
  type OperationHost,
} from './operations.js';
import { HostRing } from './host-ring.js';
import { type HostBlocks, SharedMemoryGroup, type SharedMemoryOptions } from './shared-memory.js';
import { nextRank, prevRank, type Transport } from './transport.js';
import { type WireFormat, wireCodec } from './wire-codec.js';

export interface CommunicatorOptions {
  logger?: Logger;
  /** Bytes per pipelined segment (default 1 MiB: fewer, larger messages measured faster than 256 KiB at 1–16 MiB and equal at 64 MiB). */
  segmentBytes?: number;
  /** Deadline of each operation, from its call (default 30 s). */
  timeoutMs?: number;
  /** Frames sent but not yet handed to the wire, at most (backpressure; default 8). */
  sendWindow?: number;
  /** Bytes a peer may send for operations this rank has not started yet (default 256 MiB). */
  maxEarlyBytes?: number;
  /** …and at most this many frames (default MAX_EARLY_FRAMES): empty frames have no bytes to count. */
  maxEarlyFrames?: number;
}

export interface CollectiveOptions {
  /** Training step: part of the fingerprint, so ranks at different steps fail instead of mixing. */
  step?: number;
  /** 16 hex digits naming the tensor layout (e.g. the parameter layout hash). */
  layoutHash?: string;
  /** Overrides the communicator's deadline for this call. */
  timeoutMs?: number;
}

export interface AllReduceOptions {
  /** Average (the default) or sum. */
  average?: boolean;
  /**
   * How the floats travel: float32 (exact), or compressed as fp16, bf16 or int8 (a scale per
   * segment). Every rank must pass the same; the result is bit-identical on every rank either way.
   */
  wire?: WireFormat;
  /**
   * Error feedback for a compressed wire: this rank's residual, one float per element, zeros at
   * first. What each encoding loses is added back into this rank's next encoding of that range.
   */
  residual?: Float32Array;
}

export interface AllReduceResult {
  /** False when any element of the result is ±Inf or NaN: a rank's own, or a sum that overflowed. */
  finite: boolean;
}

interface Pending {
  op: Operation;
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface QueuedSend {
  op: Operation;
  header: FrameHeader;
  payload: Uint8Array;
}

const DEFAULT_HASH = '0000000000000000';

const fingerprint = (kind: CollectiveKind, seq: number, length: number, options: CollectiveOptions): Fingerprint => ({ kind, seq, step: options.step ?? 0, length, layoutHash: options.layoutHash ?? DEFAULT_HASH });

/**
 * The collectives of one ring: all-reduce, broadcast, all-gather and barrier over a Transport.
 * Every rank must call the same collectives in the same order; each call takes the next sequence
 * number, and every frame carries its operation's fingerprint. Several calls may be in flight.
 *
 * Failure is final: a lost peer, a timeout, a fingerprint mismatch or a protocol error rejects
 * every operation in flight, is sent to both neighbours (who pass it on, so the whole ring fails
 * within a round trip), and every later call rejects with the same root cause.
 */
export class Communicator {
  readonly rank: number;
  readonly worldSize: number;
  private seq = 0;
  private readonly ops = new Map<number, Pending>();
  private readonly early = new Map<number, { from: number; header: FrameHeader; payload: Payload }[]>();
  private earlyBytes = 0;
  private earlyFrames = 0;
  private readonly queue: QueuedSend[] = [];
  private inflight = 0;
  private failure: CollectiveError | null = null;
  private segmentElems: number;
  /** Whether the segment size was given (and should not be tuned). */
  readonly segmentBytesGiven: boolean;
  private readonly timeoutMs: number;
  private readonly window: number;
  private readonly maxEarlyBytes: number;
  private readonly maxEarlyFrames: number;
  private readonly log?: Logger;
  private readonly host: OperationHost;
  private readonly pool = new BufferPool();
  private shared: SharedMemoryGroup | null = null;
  private hostRing: HostRing | null = null;
  /** Sequence numbers of host-ring all-reduces whose operation has not started yet: their frames wait for it. */
  private readonly reserved = new Set<number>();
  /** Shared-memory all-reduces run one at a time, in call order (each is two barriers). */
  private sharedQueue: Promise<unknown> = Promise.resolve();
  private sharedInFlight = 0;

  constructor(
    private readonly transport: Transport,
    options: CommunicatorOptions = {},
  ) {
    this.rank = transport.rank;
    this.worldSize = transport.worldSize;
    this.segmentElems = Math.max(1, Math.floor((options.segmentBytes ?? 1024 * 1024) / 4));
    this.segmentBytesGiven = options.segmentBytes !== undefined;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.window = options.sendWindow ?? 8;
    this.maxEarlyBytes = options.maxEarlyBytes ?? 256 * 1024 * 1024;
    this.maxEarlyFrames = options.maxEarlyFrames ?? MAX_EARLY_FRAMES;
    this.log = options.logger;
    this.host = { rank: this.rank, world: this.worldSize, send: (op, header, payload) => this.enqueue(op, header, payload) };
    transport.setHandler({
      frame: (from, header, payload) => this.onFrame(from, header, payload),
      control: (from, message) => this.onControl(from, message),
      peerLost: (peer, error) => this.fail(error, peer),
    });
  }

  /** Bytes of float32 per pipelined segment. */
  get segmentBytes(): number {
    return this.segmentElems * 4;
  }

  /**
   * Changes the segment size of the operations started from now on. Every rank must make the same
   * change between the same two collectives (the frames of a segment must match the receiver's layout).
   */
  setSegmentBytes(bytes: number): void {
    this.segmentElems = Math.max(1, Math.floor(bytes / 4));
  }

  /** The root cause once the ring has failed, else null. */
  get error(): CollectiveError | null {
    return this.failure;
  }

  /** Whether all-reduces go through shared memory, every rank being on one host (see shareMemory). */
  get sharedMemory(): boolean {
    return this.shared !== null;
  }

  /** Where the ring spans hosts and all-reduces go through shared memory inside each: where this rank sits; else null. */
  get hostBlocks(): HostBlocks | null {
    return this.hostRing?.blocks ?? null;
  }

  /**
   * Where every rank of this ring is on one host, all-reduces of up to `capacity` elements go
   * through shared memory from now on (same bits as the ring; compression is then not needed and
   * not applied). Where the ring spans hosts, each host's ranks next to each other and some host
   * holding two or more, float32 all-reduces sum in shared memory inside each host and over TCP
   * between hosts (see HostRing; compressed between hosts as asked). A collective: every rank calls
   * it, at the same point. Resolves with null when in use, else with why not (the same on every
   * rank); the ring works either way.
   */
  async shareMemory(options: SharedMemoryOptions): Promise<string | null> {
    if (this.worldSize === 1) return 'a ring of one rank';
    const group = await SharedMemoryGroup.establish({ rank: this.rank, worldSize: this.worldSize, allgather: (b) => this.allgather(b) }, options);
    if (!(group instanceof SharedMemoryGroup)) return group.reason;
    if (!group.blocks) {
      this.shared = group;
      return null;
    }
    this.hostRing = new HostRing(group, {
      rank: this.rank,
      world: this.worldSize,
      segmentElems: () => this.segmentElems,
      launch: (op, timeoutMs) => this.launch(op, timeoutMs),
      settle: (op) => this.settleIfComplete(op.fingerprint.seq),
      send: (op, header, payload) => this.enqueue(op, header, payload),
    });
    return null;
  }

  /**
   * Sums `data` over all ranks in place (or averages, by default), bit-identical on every rank.
   * Tells whether every element of the result is finite; every rank gets the same answer.
   */
  async allreduce(data: Float32Array, options: CollectiveOptions & AllReduceOptions = {}): Promise<AllReduceResult> {
    const average = options.average ?? true;
    const codec = wireCodec(options.wire ?? 'float32');
    const residual = options.residual ?? null;
    const { shared, hostRing } = this;
    if (shared && data.length <= shared.capacity) return this.allreduceShared(data.length, options, false, (fp, deadline, failure) => shared.allreduce(data, average, fp, deadline, failure));
    if (hostRing?.fits(data.length, codec)) return this.allreduceShared(data.length, options, true, (fp, deadline, failure) => hostRing.allreduce(data, average, fp, deadline, failure, codec, residual));
    let op: AllReduceOp | null = null;
    await this.run('allreduce', data.length, options, (fp) => (op = new AllReduceOp(this.host, fp, data, average, this.segmentElems, codec, residual, this.pool)));
    return { finite: op ? (op as AllReduceOp).finite : allFiniteFloat32(data) };
  }

  /**
   * An all-reduce through shared memory (`reduce`: the one-host group's or the host ring's), one at
   * a time in call order. `reserve`: frames may come for its sequence number before its operation
   * starts (the host ring's, from the previous host), and wait for it.
   */
  private async allreduceShared(length: number, options: CollectiveOptions, reserve: boolean, reduce: (fp: Fingerprint, deadline: number, failure: () => CollectiveError | null) => Promise<boolean>): Promise<AllReduceResult> {
    const seq = this.seq++;
    if (this.failure) throw this.failure;
    if (reserve) this.reserved.add(seq);
    const fp = fingerprint('allreduce', seq, length, options);
    const deadline = performance.now() + (options.timeoutMs ?? this.timeoutMs);
    // Alone in the queue, it arrives before this call returns: the caller's work until it awaits
    // (the next batch's preparation) overlaps the others' arrival instead of delaying ours.
    const start = (): Promise<boolean> => (this.failure ? Promise.reject(this.failure) : reduce(fp, deadline, () => this.failure));
    const run = this.sharedInFlight++ === 0 ? start() : this.sharedQueue.then(start);
    this.sharedQueue = run.catch(() => undefined);
    try {
      return { finite: await run };
    } catch (err) {
      const error = err instanceof CollectiveError ? err : new CollectiveError('ERR_PROTOCOL', `rank ${this.rank}: shared-memory all-reduce failed: ${(err as Error).message}`, { rank: this.rank, seq }, { cause: err });
      this.fail(error);
      throw this.failure ?? error;
    } finally {
      this.sharedInFlight--;
      this.reserved.delete(seq);
      this.takeEarly(seq); // frames that no operation took (none are due) are dropped
    }
  }

  /** Copies rank `root`'s `data` into every rank's `data`. */
  broadcast(data: Float32Array, options: CollectiveOptions & { root?: number } = {}): Promise<void> {
    const root = options.root ?? 0;
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      return Promise.reject(new CollectiveError('ERR_PROTOCOL', `broadcast root ${root} is outside 0..${this.worldSize - 1}`, { rank: this.rank }));
    }
    return this.run('broadcast', data.length, options, (fp) => new BroadcastOp(this.host, fp, data, root, this.segmentElems));
  }

  /** Every rank's bytes, indexed by rank. */
  async allgather(bytes: Uint8Array, options: CollectiveOptions = {}): Promise<Uint8Array[]> {
    let op: AllGatherOp | null = null;
    await this.run('allgather', 0, options, (fp) => (op = new AllGatherOp(this.host, fp, bytes)));
    return op ? (op as AllGatherOp).parts : [Uint8Array.from(bytes)];
  }

  /** Resolves once every rank has called it. */
  async barrier(options: CollectiveOptions = {}): Promise<void> {
    await this.allgather(new Uint8Array(0), options);
  }

  /**
   * Rejects what is in flight with ERR_CLOSED and refuses later calls, but leaves the transport
   * open: its owner leaves this ring and joins the next generation's.
   */
  detach(): void {
    if (!this.failure) this.failure = new CollectiveError('ERR_CLOSED', `rank ${this.rank}: communicator closed`, { rank: this.rank });
    this.rejectAll(this.failure);
  }

  /** Rejects what is in flight with ERR_CLOSED and closes the transport. */
  async close(): Promise<void> {
    this.detach();
    await this.transport.close();
  }

  private run(kind: CollectiveKind, length: number, options: CollectiveOptions, create: (fp: Fingerprint) => Operation): Promise<void> {
    const seq = this.seq++;
    if (this.failure) return Promise.reject(this.failure);
    const fp = fingerprint(kind, seq, length, options);
    if (this.worldSize === 1) return Promise.resolve(); // alone: the sum, mean and broadcast are the data itself
    return this.launch(create(fp), options.timeoutMs ?? this.timeoutMs);
  }

  /** Starts `op` under its sequence number, with the frames that came for it early; settles when it completes or the ring fails. */
  private launch(op: Operation, timeoutMs: number): Promise<void> {
    const fp = op.fingerprint;
    const { seq, kind } = fp;
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const left = prevRank(this.rank, this.worldSize);
        this.fail(
          new CollectiveError('ERR_COLLECTIVE_TIMEOUT', `rank ${this.rank}: ${describeFingerprint(fp)} timed out after ${timeoutMs} ms waiting on rank ${left} (${op.progress})`, {
            rank: this.rank,
            peer: left,
            op: kind,
            seq,
            step: fp.step,
          }),
        );
      }, timeoutMs);
      this.ops.set(seq, { op, resolve, reject, timer });
      op.start();
      for (const f of this.takeEarly(seq)) this.onFrame(f.from, f.header, f.payload);
      this.settleIfComplete(seq);
    });
  }

  /** The frames kept for `seq` until its operation started, no longer counted against the limits. */
  private takeEarly(seq: number): { from: number; header: FrameHeader; payload: Payload }[] {
    const frames = this.early.get(seq) ?? [];
    for (const f of frames) {
      this.earlyBytes -= f.payload.byteLength;
      this.earlyFrames--;
    }
    this.early.delete(seq);
    return frames;
  }

  private onFrame(from: number, header: FrameHeader, payload: Payload): void {
    if (this.failure) return;
    const pending = this.ops.get(header.seq);
    if (!pending) {
      if (header.seq < this.seq && !this.reserved.has(header.seq)) {
        this.fail(this.mismatch(from, header, `a finished or unknown operation (this rank is at seq ${this.seq})`));
        return;
      }
      // The left neighbour started an operation this rank has not reached yet: keep it, bounded.
      this.earlyBytes += payload.byteLength;
      if (this.earlyBytes > this.maxEarlyBytes || ++this.earlyFrames > this.maxEarlyFrames) {
        const ahead = this.earlyBytes > this.maxEarlyBytes ? `${this.maxEarlyBytes} bytes` : `${this.maxEarlyFrames} frames`;
        this.fail(new CollectiveError('ERR_EARLY_LIMIT', `rank ${this.rank}: rank ${from} is more than ${ahead} ahead (seq ${header.seq}, this rank at ${this.seq})`, { rank: this.rank, peer: from, seq: header.seq }));
        return;
      }
      const list = this.early.get(header.seq) ?? [];
      // Kept past this call, so copied: the transport reuses the payload's memory.
      list.push({ from, header, payload: Payload.of(payload.bytes()) });
      this.early.set(header.seq, list);
      return;
    }
    const fp = pending.op.fingerprint;
    if (kindOfFrame(header.op) !== fp.kind || header.step !== (fp.step >>> 0) || header.layoutHash !== fp.layoutHash || (fp.kind !== 'allgather' && header.tensorLength !== fp.length)) {
      this.fail(this.mismatch(from, header, describeFingerprint(fp)));
      return;
    }
    const refused = pending.op.refuse(header);
    if (refused === null) {
      try {
        pending.op.handle(header, payload);
      } catch (err) {
        // Nothing a peer sends may end this process: a frame that still fails fails the collective.
        this.fail(new CollectiveError('ERR_PROTOCOL', `rank ${this.rank}: a ${opName(header.op)} frame from rank ${from} could not be taken: ${(err as Error).message}`, { rank: this.rank, peer: from, seq: header.seq }, { cause: err }));
        return;
      }
    } else {
      this.fail(new CollectiveError('ERR_PROTOCOL', `rank ${this.rank}: a ${opName(header.op)} frame from rank ${from} (seq ${header.seq}) does not fit its operation: ${refused}`, { rank: this.rank, peer: from, seq: header.seq }));
      return;
    }
    this.settleIfComplete(header.seq);
  }

  private mismatch(from: number, h: FrameHeader, ours: string): CollectiveError {
    const theirs = `${kindOfFrame(h.op)} (${opName(h.op)} frame) seq ${h.seq} step ${h.step} length ${h.tensorLength} layout ${h.layoutHash}`;
    return new CollectiveError('ERR_FINGERPRINT_MISMATCH', `ranks disagree: rank ${from} sent ${theirs}; rank ${this.rank} is at ${ours}`, {
      rank: this.rank,
      peer: from,
      seq: h.seq,
      step: h.step,
      op: kindOfFrame(h.op),
    });
  }

  private enqueue(op: Operation, header: FrameHeader, payload: Uint8Array): void {
    op.pendingSends++;
    this.queue.push({ op, header, payload });
    this.pump();
  }

  /** Hands queued frames to the transport, at most `window` unacknowledged at a time. */
  private pump(): void {
    while (this.inflight < this.window && this.queue.length && !this.failure) {
      const { op, header, payload } = this.queue.shift()!;
      this.inflight++;
      const to = nextRank(this.rank, this.worldSize);
      this.transport.sendFrame(to, header, payload).then(
        () => {
          this.inflight--;
          op.pendingSends--;
          this.settleIfComplete(header.seq);
          this.pump();
        },
        (err: Error) => {
          this.inflight--;
          this.fail(err instanceof CollectiveError ? err : new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: send to peer rank ${to} failed: ${err.message}`, { rank: this.rank, peer: to }, { cause: err }), to);
        },
      );
    }
  }

  private settleIfComplete(seq: number): void {
    const pending = this.ops.get(seq);
    if (!pending || !pending.op.complete) return;
    clearTimeout(pending.timer);
    this.ops.delete(seq);
    pending.op.release();
    pending.resolve();
  }

  private onControl(from: number, message: ControlMessage): void {
    if (message.type !== 'abort' || this.failure) return;
    const error = new CollectiveError(message.code as CollectiveError['code'], message.origin === this.rank ? message.message : `${message.message} (reported by rank ${message.origin} via rank ${from})`, {
      rank: message.origin,
      peer: message.peer,
      seq: message.seq,
    });
    this.fail(error, from);
  }

  /**
   * The first failure wins: reject everything, tell both neighbours (except the one it came from or
   * that is gone), and refuse all later calls with the same error.
   */
  private fail(error: CollectiveError, skipPeer?: number): void {
    if (this.failure) return;
    this.failure = error;
    // With nothing in flight this is news only for the next call, which will reject with it.
    this.log?.[this.ops.size || this.sharedInFlight ? 'error' : 'debug']({ code: error.code, rank: this.rank, peer: error.peer, seq: error.seq }, error.message);
    const abort: ControlMessage = {
      type: 'abort',
      v: PROTOCOL_VERSION,
      origin: error.rank ?? this.rank,
      code: error.code,
      message: error.message.slice(0, 4000),
      ...(error.peer !== undefined ? { peer: error.peer } : {}),
      ...(error.seq !== undefined ? { seq: error.seq } : {}),
    };
    for (const peer of new Set([nextRank(this.rank, this.worldSize), prevRank(this.rank, this.worldSize)])) {
      if (peer !== skipPeer && peer !== this.rank) this.transport.sendControl(peer, abort);
    }
    this.rejectAll(error);
  }

  private rejectAll(error: Error): void {
    for (const [seq, p] of this.ops) {
      clearTimeout(p.timer);
      this.ops.delete(seq);
      p.reject(error);
    }
    this.queue.length = 0;
    this.early.clear();
    this.earlyBytes = 0;
    this.earlyFrames = 0;
  }
}

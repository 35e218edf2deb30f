import { Dtype, type FrameHeader, FrameOp, opName } from '@ringtrain/protocol';
import type { Payload } from './payload.js';
import { addFloat32, addFloat32Js, allFiniteFloat32 } from './reduce-kernel.js';
import { RingLayout } from './ring-layout.js';
import { type WireCodec, wireCodec } from './wire-codec.js';

export type CollectiveKind = 'allreduce' | 'broadcast' | 'allgather';

/** What every frame of an operation carries, so that ranks out of step are caught. */
export interface Fingerprint {
  kind: CollectiveKind;
  seq: number;
  step: number;
  /** Elements (allreduce, broadcast); not compared for allgather, whose parts differ in size. */
  length: number;
  layoutHash: string;
}

export function kindOfFrame(op: number): CollectiveKind {
  return op === FrameOp.broadcast ? 'broadcast' : op === FrameOp.gatherValues ? 'allgather' : 'allreduce';
}

export function describeFingerprint(f: Fingerprint): string {
  return `${f.kind} seq ${f.seq} step ${f.step} length ${f.length} layout ${f.layoutHash}`;
}

/** The operation's view of the communicator: who it is and how to send to the next rank. */
export interface OperationHost {
  readonly rank: number;
  readonly world: number;
  send(op: Operation, header: FrameHeader, payload: Uint8Array): void;
}

/**
 * One collective in flight. It knows how many frames it must receive; it is complete when all
 * have arrived and all its own sends have left (so the caller may reuse the buffer).
 */
export abstract class Operation {
  abstract readonly kind: CollectiveKind;
  protected expected = 0;
  received = 0;
  pendingSends = 0;

  constructor(
    protected readonly host: OperationHost,
    readonly fingerprint: Fingerprint,
  ) {}

  /** Sends what this rank can send before hearing from anyone. */
  abstract start(): void;
  /** Takes a frame that `refuse` passed. */
  abstract handle(header: FrameHeader, payload: Payload): void;
  /**
   * Why a frame with this operation's fingerprint is still not one it can take (another dtype, a
   * chunk, segment or range that its layout does not have, a segment already received), or null.
   * Checked before `handle`, which then trusts every field.
   */
  abstract refuse(header: FrameHeader): string | null;
  private readonly seen = new Set<string>();

  /** The first arrival of (op, chunk, segment) passes; a repeat is refused. */
  protected firstOf(h: FrameHeader): string | null {
    const key = `${h.op}/${h.chunk}/${h.segment}`;
    if (this.seen.has(key)) return `a second frame for chunk ${h.chunk} segment ${h.segment}`;
    this.seen.add(key);
    return null;
  }

  get complete(): boolean {
    return this.received >= this.expected && this.pendingSends === 0;
  }

  /** Called once the operation completed (nothing of it is still being sent): buffers may be reused. */
  release(): void {}

  get progress(): string {
    return `${this.received}/${this.expected} frames received, ${this.pendingSends} sends pending`;
  }

  protected header(op: FrameOp, dtype: Dtype, chunk: number, segment: number, offset: number, count: number): FrameHeader {
    const f = this.fingerprint;
    return { op, dtype, seq: f.seq, step: f.step, from: this.host.rank, chunk, segment, offset, count, tensorLength: f.length, layoutHash: f.layoutHash };
  }
}

/**
 * Where a compressed all-reduce keeps the bytes of segment number `index` (counted over all chunks)
 * that starts at element `offset`: its elements before it, and a prefix (int8's scale) per segment before it.
 */
export function encodedStart(codec: WireCodec, index: number, offset: number): number {
  const prefix = codec.bytes(0);
  return codec.bytes(offset) - prefix + index * prefix;
}

/** Bytes a compressed all-reduce of `length` floats in `segments` segments keeps (see encodedStart). */
export const encodedBytes = (codec: WireCodec, length: number, segments: number): number => codec.bytes(length) + Math.max(0, segments - 1) * codec.bytes(0);

const bytesOf = (x: Float32Array, offset: number, count: number): Uint8Array => new Uint8Array(x.buffer, x.byteOffset + offset * 4, count * 4);

/**
 * Ring all-reduce in place: reduce-scatter, then all-gather, pipelined per segment.
 * Chunk c is summed along the ring starting at rank c and finishes on rank c−1 (its owner), which
 * averages it and sends the final bits round; every rank ends with identical bits.
 *
 * Reduce-scatter: rank r first sends chunk r. A segment of chunk c received from the left has
 * passed (r−1−c) mod N ranks; after adding our part it goes on to the right, unless we are the
 * owner (c = r+1), who finishes it and starts its all-gather.
 */
/** Byte buffers reused between operations, so that compressed all-reduces make little garbage. */
export class BufferPool {
  private readonly free = new Map<number, Uint8Array[]>();

  take(bytes: number): Uint8Array {
    return this.free.get(bytes)?.pop() ?? new Uint8Array(bytes);
  }

  give(buffer: Uint8Array): void {
    const list = this.free.get(buffer.length) ?? [];
    // A few per size: ops in flight at once; more would only hold memory.
    if (list.length < 4) list.push(buffer);
    this.free.set(buffer.length, list);
  }
}

export class AllReduceOp extends Operation {
  readonly kind = 'allreduce' as const;
  /**
   * Whether every element of the result is finite. A rank's result is the chunk it finished
   * itself (checked in that last add) and the chunks it received in the all-gather (checked as
   * they land), so every rank reaches the same verdict on the same bits: it sees a sum that
   * overflowed although every rank's own values were finite.
   */
  finite = true;
  private readonly layout: RingLayout;
  private readonly compressed: boolean;
  /**
   * Compressed: every range this rank encodes or forwards has its own place here, as a range is
   * sent by a rank at most once per all-reduce; `part` holds one received segment, decoded.
   */
  private wire: Uint8Array | null = null;
  /** Whether `wire` was given (the host ring's shared memory) rather than taken from the pool. */
  private readonly wireGiven: boolean;
  private part: Float32Array | null = null;
  private readonly firstSegment: number[] = [];

  /**
   * With a compressing codec, partial sums travel encoded and each hop adds the decoded floats;
   * the owner of a chunk encodes the finished chunk once and keeps what it decodes to, and the
   * all-gather forwards those same bytes, so every rank decodes identical floats. With a
   * `residual` (error feedback), each encoding first adds what this rank's last encoding of that
   * range lost, and keeps what this one loses: every range is encoded by a given rank once per
   * all-reduce (as a partial sum or as its owner), so one residual per element covers both.
   */
  constructor(
    host: OperationHost,
    fingerprint: Fingerprint,
    private readonly data: Float32Array,
    private readonly average: boolean,
    segmentElems: number,
    private readonly codec: WireCodec = wireCodec('float32'),
    private readonly residual: Float32Array | null = null,
    private readonly pool: BufferPool | null = null,
    /** Where to keep the encoded segments (encodedBytes long), else a buffer from the pool. */
    wire: Uint8Array | null = null,
  ) {
    super(host, fingerprint);
    const { rank, world } = host;
    this.compressed = codec.format !== 'float32';
    if (residual && residual.length !== data.length) throw new RangeError(`error-feedback residual of ${residual.length} elements for a tensor of ${data.length}`);
    this.layout = new RingLayout(data.length, world, segmentElems);
    const owned = (rank + 1) % world;
    let segments = 0;
    for (let c = 0; c < world; c++) {
      if (c !== rank) this.expected += this.layout.segments(c); // reduce-scatter: all chunks but ours to start
      if (c !== owned) this.expected += this.layout.segments(c); // all-gather: all chunks but the one we own
      this.firstSegment.push(segments);
      segments += this.layout.segments(c);
    }
    this.wireGiven = wire !== null;
    if (this.compressed) {
      const bytes = encodedBytes(this.codec, data.length, segments);
      if (wire && wire.length < bytes) throw new RangeError(`${wire.length} bytes given for ${bytes} encoded`);
      this.wire = wire ?? this.take(bytes);
      this.part = new Float32Array(this.take(4 * Math.min(segmentElems, data.length)).buffer);
    }
  }

  private take(bytes: number): Uint8Array {
    return this.pool ? this.pool.take(bytes) : new Uint8Array(bytes);
  }

  override release(): void {
    if (!this.pool || !this.wire || !this.part) return;
    if (!this.wireGiven) this.pool.give(this.wire);
    this.pool.give(new Uint8Array(this.part.buffer));
    this.wire = this.part = null;
  }

  /** Where segment j of chunk c is encoded in \`wire\`. */
  private region(c: number, j: number, offset: number, count: number): Uint8Array {
    const start = encodedStart(this.codec, this.firstSegment[c] + j, offset);
    return this.wire!.subarray(start, start + this.codec.bytes(count));
  }

  start(): void {
    const c = this.host.rank;
    for (let j = 0; j < this.layout.segments(c); j++) this.sendSegment(FrameOp.reduceScatter, c, j);
  }

  refuse(h: FrameHeader): string | null {
    const { rank, world } = this.host;
    if (h.dtype !== this.codec.dtype) return `dtype ${h.dtype}, expected ${this.codec.format}`;
    if (h.chunk >= world || h.segment >= this.layout.segments(h.chunk)) return `chunk ${h.chunk} segment ${h.segment} is not in the layout`;
    // A rank never receives the reduce-scatter of its own chunk, nor the all-gather of the one it owns.
    if (h.op === FrameOp.reduceScatter ? h.chunk === rank : h.chunk === (rank + 1) % world) return `chunk ${h.chunk} never comes to rank ${rank} in ${opName(h.op)}`;
    const [offset, count] = this.layout.segment(h.chunk, h.segment);
    if (h.offset !== offset || h.count !== count) return `range ${h.offset}+${h.count}, the layout says ${offset}+${count}`;
    return this.firstOf(h);
  }

  handle(h: FrameHeader, payload: Payload): void {
    const { rank, world } = this.host;
    const d = this.data;
    const seg = d.subarray(h.offset, h.offset + h.count);
    if (h.op === FrameOp.reduceScatter) {
      let finite: boolean;
      if (this.compressed) {
        // Decoded into the scratch, then added: the received bytes are not kept.
        const bytes = this.region(h.chunk, h.segment, h.offset, h.count);
        payload.copyTo(bytes);
        const part = this.part!.subarray(0, h.count);
        this.codec.decode(bytes, part);
        finite = addFloat32(seg, new Uint8Array(part.buffer, 0, h.count * 4));
      } else {
        finite = payload.addFloat32To(seg);
      }
      if (h.chunk === (rank + 1) % world) {
        this.finite &&= finite;
        if (this.average) for (let o = 0; o < seg.length; o++) seg[o] /= world;
        this.sendSegment(FrameOp.allGather, h.chunk, h.segment);
      } else {
        this.sendSegment(FrameOp.reduceScatter, h.chunk, h.segment);
      }
    } else {
      // The all-gather of chunk c started at its owner c−1 and stops before returning there.
      const forward = (rank + 1) % world !== (h.chunk - 1 + world) % world;
      if (this.compressed) {
        // Kept in this range's place in \`wire\`, to be forwarded as they came.
        const bytes = this.region(h.chunk, h.segment, h.offset, h.count);
        payload.copyTo(bytes);
        this.codec.decode(bytes, seg);
        if (forward) this.host.send(this, this.header(FrameOp.allGather, this.codec.dtype, h.chunk, h.segment, h.offset, h.count), bytes);
      } else {
        payload.copyTo(bytesOf(d, h.offset, h.count));
        if (forward) this.sendSegment(FrameOp.allGather, h.chunk, h.segment);
      }
      if (this.finite) this.finite = allFiniteFloat32(seg);
    }
    this.received++;
  }

  private sendSegment(op: FrameOp, c: number, j: number): void {
    const [offset, count] = this.layout.segment(c, j);
    const header = this.header(op, this.codec.dtype, c, j, offset, count);
    if (!this.compressed) return this.host.send(this, header, bytesOf(this.data, offset, count));
    const seg = this.data.subarray(offset, offset + count);
    const out = this.region(c, j, offset, count);
    const owner = op === FrameOp.allGather;
    if (!this.residual) {
      this.codec.encode(seg, out);
      if (owner) this.codec.decode(out, seg);
    } else {
      const r = this.residual.subarray(offset, offset + count);
      const want = Float32Array.from(seg);
      addFloat32Js(want, r);
      this.codec.encode(want, out);
      const sent = owner ? seg : new Float32Array(count);
      this.codec.decode(out, sent);
      // A non-finite loss is not carried: the step fails or is skipped on every rank alike.
      for (let i = 0; i < count; i++) {
        const lost = want[i] - sent[i];
        r[i] = Number.isFinite(lost) ? lost : 0;
      }
    }
    // The owner keeps the floats its bytes decode to (above), as every other rank will.
    if (owner) this.finite &&= allFiniteFloat32(seg);
    this.host.send(this, header, out);
  }
}

/**
 * Rank `root`'s buffer to every rank, segment by segment along the ring. The last rank before the
 * root returns an empty acknowledgement, so the root too learns whether the ring agreed.
 */
export class BroadcastOp extends Operation {
  readonly kind = 'broadcast' as const;
  private readonly layout: RingLayout;
  private static readonly ACK = 1;

  constructor(
    host: OperationHost,
    fingerprint: Fingerprint,
    private readonly data: Float32Array,
    private readonly root: number,
    segmentElems: number,
  ) {
    super(host, fingerprint);
    this.layout = new RingLayout(data.length, 1, segmentElems);
    const segments = this.layout.segments(0);
    this.expected = segments === 0 ? 0 : host.rank === root ? 1 : segments;
  }

  start(): void {
    if (this.host.rank !== this.root) return;
    for (let j = 0; j < this.layout.segments(0); j++) this.forward(j);
  }

  refuse(h: FrameHeader): string | null {
    if (h.dtype !== Dtype.float32) return `dtype ${h.dtype}, expected float32`;
    if (h.chunk === BroadcastOp.ACK) return this.host.rank !== this.root || h.count !== 0 ? 'an acknowledgement that is not for this rank' : this.firstOf(h);
    if (h.chunk !== 0 || h.segment >= this.layout.segments(0) || this.host.rank === this.root) return `chunk ${h.chunk} segment ${h.segment} is not in the layout`;
    const [offset, count] = this.layout.segment(0, h.segment);
    if (h.offset !== offset || h.count !== count) return `range ${h.offset}+${h.count}, the layout says ${offset}+${count}`;
    return this.firstOf(h);
  }

  handle(h: FrameHeader, payload: Payload): void {
    this.received++;
    if (h.chunk === BroadcastOp.ACK) return;
    payload.copyTo(bytesOf(this.data, h.offset, h.count));
    if ((this.host.rank + 1) % this.host.world !== this.root) this.forward(h.segment);
    else if (this.received === this.expected) this.host.send(this, this.header(FrameOp.broadcast, Dtype.float32, BroadcastOp.ACK, 0, 0, 0), new Uint8Array(0));
  }

  private forward(j: number): void {
    const [offset, count] = this.layout.segment(0, j);
    this.host.send(this, this.header(FrameOp.broadcast, Dtype.float32, 0, j, offset, count), bytesOf(this.data, offset, count));
  }
}

/** Every rank's bytes to every rank (small values: metrics, hashes); also the barrier. */
export class AllGatherOp extends Operation {
  readonly kind = 'allgather' as const;
  readonly parts: Uint8Array[];

  constructor(host: OperationHost, fingerprint: Fingerprint, own: Uint8Array) {
    super(host, fingerprint);
    this.parts = Array.from({ length: host.world }, () => new Uint8Array(0));
    this.parts[host.rank] = Uint8Array.from(own);
    this.expected = host.world - 1;
  }

  start(): void {
    this.forward(this.host.rank);
  }

  refuse(h: FrameHeader): string | null {
    if (h.dtype !== Dtype.uint8) return `dtype ${h.dtype}, expected uint8`;
    if (h.chunk >= this.host.world || h.chunk === this.host.rank) return `part ${h.chunk} never comes to rank ${this.host.rank}`;
    return this.firstOf(h);
  }

  handle(h: FrameHeader, payload: Payload): void {
    this.parts[h.chunk] = payload.bytes();
    if ((this.host.rank + 1) % this.host.world !== h.chunk) this.forward(h.chunk);
    this.received++;
  }

  private forward(source: number): void {
    const part = this.parts[source];
    this.host.send(this, { ...this.header(FrameOp.gatherValues, Dtype.uint8, source, 0, 0, part.length), tensorLength: part.length }, part);
  }
}

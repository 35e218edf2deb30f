import { Dtype, FrameOp, type FrameHeader } from '@ringtrain/protocol';
import type { CollectiveError } from './errors.js';
import { AllReduceOp, encodedBytes, encodedStart, type Fingerprint, Operation, type OperationHost } from './operations.js';
import { RingLayout } from './ring-layout.js';
import type { HostBlocks, SharedMemoryGroup } from './shared-memory.js';
import type { WireCodec } from './wire-codec.js';

/** What the host ring needs of its communicator: its place in the ring and its way to send to the next rank (an OperationHost), and these. */
export interface RingAccess extends OperationHost {
  /** The ring's segment size now, in floats. */
  segmentElems(): number;
  /** Runs `op` under its fingerprint's sequence number: its frames reach it, and it fails with the ring. */
  launch(op: Operation, timeoutMs: number): Promise<void>;
  /** Settles `op` if it has completed through something other than a frame (a send that left). */
  settle(op: Operation): void;
}

// A send written down by a host's first rank for its last rank: all-gather bit, chunk (a host), segment.
const ALL_GATHER = 1 << 31;
const CHUNK_SHIFT = 22;
const MAX_HOSTS = 1 << 9;
const SEGMENT_MASK = (1 << CHUNK_SHIFT) - 1;

const describeSend = (h: FrameHeader): number => (h.op === FrameOp.allGather ? ALL_GATHER : 0) | (h.chunk << CHUNK_SHIFT) | h.segment;

/** How many sends host `h` of `hosts` makes in one all-reduce (AllReduceOp's): reduce-scatter every chunk but the one it finishes, all-gather every chunk but the next host's. */
function sendsOf(layout: RingLayout, h: number, hosts: number): number {
  let total = 0;
  for (let c = 0; c < hosts; c++) total += 2 * layout.segments(c);
  return total - layout.segments((h + 1) % hosts) - layout.segments((h + 2) % hosts);
}

/**
 * The all-reduce of a ring that spans hosts, each host's ranks next to each other in it: shared
 * memory inside a host, the ring's TCP links between hosts (as NCCL's and MPI's hierarchical
 * all-reduces), so each link between hosts carries 2(H−1)/H of the tensor for H hosts instead of
 * 2(N−1)/N for N ranks.
 *
 * 1. The ranks of a host sum their tensors into the host's accumulator, in shared memory.
 * 2. The hosts all-reduce their sums as a ring of H (AllReduceOp on the accumulator). A host
 *    receives on its first rank, whose left neighbour is the previous host's last rank, and sends
 *    from its last rank: the first rank runs the operation and writes each send down in shared
 *    memory; the last rank makes it, from the accumulator. A host of one rank does both itself.
 * 3. Every rank copies the result (averaged over all N ranks): the same bits on every rank.
 *
 * Compressed, the host ring encodes as the ring of ranks does, once per segment owner; the first
 * rank keeps the encoded segments in shared memory, where the last rank sends them from, and its
 * error-feedback residual is the host's (what encoding the host's sums lost).
 *
 * The ranks in between send nothing. Every rank still sees the ring's failures through its TCP
 * links (heartbeats, aborts), which end any of its waits.
 */
export class HostRing {
  /** The running count of sends written down (first rank) or made (last rank); they agree at every all-reduce's end. */
  private sends = 0;

  constructor(
    private readonly group: SharedMemoryGroup,
    private readonly ring: RingAccess,
  ) {}

  get blocks(): HostBlocks {
    return this.group.blocks!;
  }

  /** Whether an all-reduce of `length` floats can take this path (its sends, and its encoded segments, fit the room kept for them: segments of 1 KiB or more). */
  fits(length: number, codec: WireCodec): boolean {
    const { hosts } = this.blocks;
    const area = this.group.hostArea!;
    if (length > this.group.capacity || hosts > MAX_HOSTS) return false;
    const layout = new RingLayout(length, hosts, this.ring.segmentElems());
    let segments = 0;
    for (let c = 0; c < hosts; c++) segments += layout.segments(c);
    return 2 * segments <= area.sends.length && layout.segments(0) <= SEGMENT_MASK && (codec.format === 'float32' || encodedBytes(codec, length, segments) <= area.wire.length);
  }

  /**
   * Sums (or averages) `data` over the ring in place, the floats travelling between hosts as
   * `codec` says (with `residual`, error feedback); resolves with whether every element of the
   * result is finite.
   */
  async allreduce(data: Float32Array, average: boolean, fp: Fingerprint, deadline: number, failure: () => CollectiveError | null, codec: WireCodec, residual: Float32Array | null): Promise<boolean> {
    const g = this.group;
    const { hosts, host } = this.blocks;
    const s = await g.sumHost(data, average, fp, deadline, failure);
    const accumulator = g.hostArea!.accumulator.subarray(0, data.length);
    const layout = new RingLayout(data.length, hosts, this.ring.segmentElems());
    const timeoutMs = Math.max(1, deadline - performance.now());
    const wire = codec.format === 'float32' ? null : g.hostArea!.wire;
    if (g.rank === 0) {
      let slot = 0;
      const send: OperationHost['send'] =
        g.world === 1 ? (op, header, payload) => this.ring.send(op, { ...header, from: this.ring.rank }, payload) : (_op, header) => g.writeSend(slot++, describeSend(header), ++this.sends);
      const op = new AllReduceOp({ rank: host, world: hosts, send }, fp, accumulator, false, layout.segmentElems, codec, residual, null, wire);
      await this.ring.launch(op, timeoutMs);
      g.finishHost(s, op.finite);
    } else if (g.rank === g.world - 1) {
      const relay = new RelayOp(this.ring, fp, wire ? { codec, bytes: wire } : accumulator, layout, sendsOf(layout, host, hosts));
      const done = this.ring.launch(relay, timeoutMs);
      done.catch(() => undefined); // the ring's failure ends the waits below as well
      const base = this.sends;
      while (relay.sent < relay.total) {
        const seen = await g.waitSends(base + relay.sent + 1, s, fp, deadline, failure);
        const written = Math.min(relay.total, (seen - base) | 0);
        while (relay.sent < written) relay.make(g.hostArea!.sends[relay.sent]);
        this.ring.settle(relay);
      }
      this.sends = base + relay.total;
      await done;
    }
    return g.takeHostResult(s, data, average ? this.ring.world : 1, fp, deadline, failure);
  }
}

/**
 * A host's last rank's part in the ring between hosts: it makes the sends its host's first rank
 * writes down, from the host's accumulator (or its encoded segments). It receives nothing (its
 * left neighbour is on its host).
 */
class RelayOp extends Operation {
  readonly kind = 'allreduce' as const;
  sent = 0;

  constructor(
    host: OperationHost,
    fingerprint: Fingerprint,
    private readonly from: Float32Array | { codec: WireCodec; bytes: Uint8Array },
    private readonly layout: RingLayout,
    readonly total: number,
  ) {
    super(host, fingerprint);
  }

  start(): void {}

  refuse(): string | null {
    return 'the last rank of a host receives nothing in the all-reduce between hosts';
  }

  handle(): void {}

  /** Makes the send `descriptor` says (written down by this host's first rank). */
  make(descriptor: number): void {
    const chunk = (descriptor >>> CHUNK_SHIFT) & (MAX_HOSTS - 1);
    const segment = descriptor & SEGMENT_MASK;
    if (chunk >= this.layout.world || segment >= this.layout.segments(chunk)) throw new RangeError(`send ${this.sent} names chunk ${chunk} segment ${segment}, not in the layout`);
    const [offset, count] = this.layout.segment(chunk, segment);
    const op = descriptor & ALL_GATHER ? FrameOp.allGather : FrameOp.reduceScatter;
    const from = this.from;
    if (from instanceof Float32Array) {
      this.host.send(this, this.header(op, Dtype.float32, chunk, segment, offset, count), new Uint8Array(from.buffer, from.byteOffset + offset * 4, count * 4));
    } else {
      let index = segment;
      for (let c = 0; c < chunk; c++) index += this.layout.segments(c);
      const start = encodedStart(from.codec, index, offset);
      this.host.send(this, this.header(op, from.codec.dtype, chunk, segment, offset, count), from.bytes.subarray(start, start + from.codec.bytes(count)));
    }
    this.sent++;
  }

  override get complete(): boolean {
    return this.sent === this.total && super.complete;
  }
}

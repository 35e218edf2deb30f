import type { ControlMessage, FrameHeader } from '@ringtrain/protocol';
import { CollectiveError } from './errors.js';
import { Payload } from './payload.js';
import type { Transport, TransportHandler } from './transport.js';

/**
 * N transports in one process, for tests: frames are copied (as a wire would) and delivered on a
 * later turn of the event loop, in order per sender–receiver pair. `kill(rank)` makes a rank
 * vanish as a crashed process would: its ring neighbours see peerLost.
 *
 * With `pieceBytes`, each payload arrives as a socket would deliver it: cut into pieces of 1 to
 * pieceBytes bytes at any byte boundary (floats split between pieces), each at an odd address.
 */
export class MemoryHub {
  readonly transports: MemoryTransport[];
  private readonly dead = new Set<number>();
  private cuts = 12345;

  constructor(
    readonly worldSize: number,
    private readonly options: { pieceBytes?: number } = {},
  ) {
    this.transports = Array.from({ length: worldSize }, (_, rank) => new MemoryTransport(this, rank));
  }

  kill(rank: number): void {
    if (this.dead.has(rank)) return;
    this.dead.add(rank);
    // Only the ring neighbours notice directly; the others learn of it from the collectives' aborts.
    const neighbours = new Set([(rank + 1) % this.worldSize, (rank - 1 + this.worldSize) % this.worldSize]);
    for (const t of this.transports) {
      if (t.rank !== rank && neighbours.has(t.rank) && !this.dead.has(t.rank)) {
        setImmediate(() => t.lost(rank, new CollectiveError('ERR_PEER_LOST', `rank ${t.rank}: peer rank ${rank} is gone`, { rank: t.rank, peer: rank })));
      }
    }
  }

  isDead(rank: number): boolean {
    return this.dead.has(rank);
  }

  /** The payload as the receiver gets it: one copy, or misaligned pieces (see pieceBytes). */
  wire(bytes: Uint8Array): Payload {
    const most = this.options.pieceBytes;
    if (!most) return Payload.of(Uint8Array.from(bytes));
    const pieces: Uint8Array[] = [];
    for (let at = 0; at < bytes.length; ) {
      this.cuts = (this.cuts * 1103515245 + 12345) >>> 0;
      const take = Math.min(bytes.length - at, 1 + ((this.cuts >>> 8) % most));
      const piece = new Uint8Array(take + 1).subarray(1);
      piece.set(bytes.subarray(at, at + take));
      pieces.push(piece);
      at += take;
    }
    return new Payload(pieces);
  }

  deliver(to: number, fn: (t: MemoryTransport) => void): void {
    setImmediate(() => {
      if (!this.dead.has(to)) fn(this.transports[to]);
    });
  }
}

export class MemoryTransport implements Transport {
  private handler: TransportHandler | null = null;
  private closed = false;
  private readonly lostPeers = new Set<number>();

  constructor(
    private readonly hub: MemoryHub,
    readonly rank: number,
  ) {}

  get worldSize(): number {
    return this.hub.worldSize;
  }

  setHandler(handler: TransportHandler): void {
    this.handler = handler;
  }

  async sendFrame(to: number, header: FrameHeader, payload: Uint8Array): Promise<void> {
    if (this.closed || this.hub.isDead(this.rank)) throw new CollectiveError('ERR_CLOSED', `rank ${this.rank}: transport closed`, { rank: this.rank });
    if (this.hub.isDead(to)) throw new CollectiveError('ERR_PEER_LOST', `rank ${this.rank}: peer rank ${to} is gone`, { rank: this.rank, peer: to });
    const copy = this.hub.wire(payload);
    const h = { ...header };
    this.hub.deliver(to, (t) => t.handler?.frame(this.rank, h, copy));
  }

  sendControl(to: number, message: ControlMessage): void {
    if (this.closed || this.hub.isDead(this.rank) || this.hub.isDead(to)) return;
    const copy = structuredClone(message);
    this.hub.deliver(to, (t) => t.handler?.control(this.rank, copy));
  }

  lost(peer: number, error: CollectiveError): void {
    if (this.closed || this.lostPeers.has(peer)) return;
    this.lostPeers.add(peer);
    this.handler?.peerLost(peer, error);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

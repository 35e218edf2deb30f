import { connect, type NetConnectOpts, type Socket } from 'node:net';

/** What the arena needs to know of ws's receiver: how many received bytes it still holds. */
export interface HeldBytes {
  _bufferedBytes: number;
  _fragments: unknown[];
  writableLength: number;
}

/** Node's own read size. */
const BLOCK_BYTES = 64 * 1024;

/**
 * Socket reads into a per-connection pool of 64 KiB blocks instead of a fresh allocation each
 * (Node's default): no malloc, free or ArrayBuffer per read, and the block freed last is reused
 * first, so it is still in cache. A read's bytes stay valid while ws holds them unconsumed; once
 * consumed they are used only while the message handler runs, so the block can then take the
 * next read. ws consumes in order, so the unconsumed bytes are the newest ones: the reads that
 * cover them keep their blocks and older ones go back to the pool. Before ws is attached, while
 * it gathers a fragmented message (whose consumed parts it still holds), or once `maxBlocks` are
 * in use, a read gets a fresh buffer as usual.
 */
export class ReadArena {
  /** Reads that may still hold unconsumed bytes, oldest first; block null: a fresh buffer. */
  private readonly reads: { block: Buffer | null; length: number }[] = [];
  /**
   * The buffer handed out for the next read, until bytes land in it. Node 20 asks for the next
   * buffer only after a read that found bytes; should a read ever find none and Node ask again,
   * the same buffer goes out again rather than being counted as holding 64 KiB of data.
   */
  private pending: { block: Buffer | null; buffer: Buffer } | null = null;
  private readonly free: Buffer[] = [];
  private blocks = 0;
  private holder: HeldBytes | null = null;

  constructor(readonly maxBlocks = 64) {}

  /** From now on, `holder` says how many of the received bytes are still unconsumed. */
  track(holder: HeldBytes): void {
    this.holder = holder;
  }

  /** The buffer for the next socket read. */
  next(): Buffer {
    if (this.pending) return this.pending.buffer; // nothing was read into it: hand it out again
    const holder = this.holder;
    if (!holder) return Buffer.allocUnsafe(BLOCK_BYTES); // nothing to count reads against yet
    if (holder._fragments.length > 0) return this.take(null);
    let live = holder._bufferedBytes + holder.writableLength;
    let keep = 0;
    for (let i = this.reads.length - 1; i >= 0 && live > 0; i--, keep++) live -= this.reads[i].length;
    for (const done of this.reads.splice(0, this.reads.length - keep)) if (done.block) this.free.push(done.block);
    if (this.free.length) return this.take(this.free.pop()!);
    if (this.blocks < this.maxBlocks) {
      this.blocks++;
      return this.take(Buffer.allocUnsafeSlow(BLOCK_BYTES));
    }
    return this.take(null);
  }

  /** After a read of n bytes into the buffer handed out last: those n bytes are held. */
  filled(n: number): void {
    const p = this.pending;
    if (!p || n <= 0) return;
    this.pending = null;
    this.reads.push({ block: p.block, length: n });
  }

  private take(block: Buffer | null): Buffer {
    const buffer = block ?? Buffer.allocUnsafe(BLOCK_BYTES);
    this.pending = { block, buffer };
    return buffer;
  }
}

/** A TCP connection whose reads land in `arena`, re-emitted as ordinary 'data' events. */
export function connectWithArena(options: NetConnectOpts, arena: ReadArena): Socket {
  const socket: Socket = connect({
    ...options,
    // As ws's own connector: its options carry the HTTP path in `path`, which net reads as a Unix socket.
    path: (options as { socketPath?: string }).socketPath,
    onread: {
      buffer: () => arena.next(),
      callback: (n: number, buf: Uint8Array): boolean => {
        arena.filled(n);
        socket.emit('data', Buffer.from(buf.buffer, buf.byteOffset, n));
        return true; // ws pauses the socket itself when it must
      },
    },
  } as unknown as NetConnectOpts);
  return socket;
}

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type HeldBytes, ReadArena } from './read-arena.js';

/** The stream's byte at a position: not periodic, so a byte overwritten a lap later shows. */
const byteAt = (position: number): number => Math.imul(position, 0x9e3779b1) >>> 24;

describe('read arena', () => {
  it('never hands out memory that holds unconsumed bytes, whatever the reads and consumption', () => {
    fc.assert(
      fc.property(
        // Per read: bytes the socket has (often more than the buffer: the read fills it); what is
        // then consumed (some bytes; all but a few; all but the newest read and a few before it);
        // whether ws is gathering a fragmented message (consumed bytes it still holds); how many
        // held bytes sit in the Writable's queue; whether a read found nothing first.
        fc.array(
          fc.tuple(fc.oneof(fc.integer({ min: 1, max: 1 << 20 }), fc.constant(1 << 22)), fc.oneof(
              fc.record({ consume: fc.integer({ min: 0, max: 1 << 21 }) }),
              fc.record({ leave: fc.integer({ min: 0, max: 8 }) }),
              fc.record({ leaveBeyondNewest: fc.integer({ min: 0, max: 8 }) }),
            ), fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true }), fc.boolean()),
          { minLength: 1, maxLength: 120 },
        ),
        fc.constantFrom(1, 4, 64),
        (steps, maxBlocks) => {
          const arena = new ReadArena(maxBlocks);
          // A stand-in for ws's receiver: the bytes it holds, as views into what the socket read,
          // each with its position in the stream.
          const held: { bytes: Uint8Array; from: number }[] = [];
          let fragments: { bytes: Uint8Array; from: number }[] = [];
          const holder: HeldBytes = { _bufferedBytes: 0, _fragments: fragments, writableLength: 0 };
          arena.track(holder);
          let unconsumed = 0;
          let stream = 0;
          const intact = (): void => {
            for (const { bytes, from } of [...held, ...fragments]) {
              // Every byte would be slow; the first ones, the last and a stride catch an overlap.
              for (let i = 0; i < bytes.length; i += 997) expect(bytes[i]).toBe(byteAt(from + i));
              for (const i of [0, 1, 2, 3, bytes.length - 1]) if (i >= 0 && i < bytes.length) expect(bytes[i]).toBe(byteAt(from + i));
            }
          };
          for (const [available, consume, fragmented, queued, empty] of steps) {
            let buf = arena.next();
            if (empty) {
              // A read that found nothing (EAGAIN): the next read may ask for a buffer again.
              arena.filled(0);
              buf = arena.next();
            }
            const n = Math.min(available, buf.length);
            for (let i = 0; i < n; i++) buf[i] = byteAt(stream + i);
            arena.filled(n);
            held.push({ bytes: buf.subarray(0, n), from: stream });
            stream += n;
            unconsumed += n;
            intact();
            const leave = 'consume' in consume ? unconsumed - consume.consume : 'leave' in consume ? consume.leave : n + consume.leaveBeyondNewest;
            let left = Math.max(0, Math.min(unconsumed, unconsumed - leave));
            unconsumed -= left;
            if (!fragmented) fragments = [];
            while (left > 0) {
              const first = held[0];
              const take = Math.min(first.bytes.length, left);
              if (fragmented) fragments.push({ bytes: first.bytes.subarray(0, take), from: first.from });
              if (take === first.bytes.length) held.shift();
              else held[0] = { bytes: first.bytes.subarray(take), from: first.from + take };
              left -= take;
            }
            holder._fragments = fragments;
            holder.writableLength = Math.floor(unconsumed * queued);
            holder._bufferedBytes = unconsumed - holder.writableLength;
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('reuses the block freed last, and takes fresh buffers before it tracks anything or past its limit', () => {
    const arena = new ReadArena(2);
    const untracked = arena.next();
    arena.filled(100);
    const holder: HeldBytes = { _bufferedBytes: 0, _fragments: [], writableLength: 0 };
    arena.track(holder);
    const a = arena.next();
    arena.filled(4096);
    holder._bufferedBytes = 10; // a's last 10 bytes are unconsumed
    const b = arena.next();
    arena.filled(65536);
    holder._bufferedBytes = 65536 + 10;
    const c = arena.next(); // both blocks hold unconsumed bytes, and the limit is 2
    arena.filled(0); // the read found nothing: the same buffer goes to the next one
    expect(arena.next()).toBe(c);
    arena.filled(100);
    holder._bufferedBytes = 0;
    const d = arena.next(); // all consumed: the block freed last comes back
    expect(new Set([untracked.buffer, a.buffer, b.buffer, c.buffer]).size).toBe(4);
    expect(d.buffer).toBe(b.buffer);
  });
});

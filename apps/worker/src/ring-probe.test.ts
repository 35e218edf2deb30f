import { Communicator, MemoryHub } from '@ringtrain/allreduce';
import { describe, expect, it } from 'vitest';
import { bucketBytesFor, probeRing, setUpRing, tuneSegments } from './ring-probe.js';

const ring = (n: number): Communicator[] => new MemoryHub(n).transports.map((t) => new Communicator(t));

describe('segment tuning', () => {
  it('every rank picks the same size, from the sizes that cut a chunk and the one that leaves it whole, and uses it', async () => {
    const comms = ring(3);
    // 600k floats over 3 ranks: chunks of 800 kB; tried: 64 KiB, 256 KiB (cut it) and 1 MiB (whole).
    const results = await Promise.all(comms.map((c) => tuneSegments(c, 600_000)));
    for (const r of results) {
      expect(r!.tried.map((t) => t.segmentBytes)).toEqual([64 << 10, 256 << 10, 1 << 20]);
      for (const t of r!.tried) expect(t.ms).toBeGreaterThan(0);
      // The times are the ranks' mean, so every rank holds the same figures and the same choice.
      expect(r!.tried).toEqual(results[0]!.tried);
      expect(r!.chosen).toBe(results[0]!.chosen);
      const fastest = Math.min(...r!.tried.map((t) => t.ms));
      expect(r!.tried.find((t) => t.segmentBytes === r!.chosen)!.ms).toBe(fastest);
    }
    for (const c of comms) expect(c.segmentBytes).toBe(results[0]!.chosen);
    // The ring still works with it, and agrees.
    const data = comms.map((_, r) => Float32Array.from({ length: 600_000 }, (_, i) => (r + 1) * (i % 7)));
    await Promise.all(comms.map((c, r) => c.allreduce(data[r], { average: false })));
    expect(data[0][13]).toBe(6 * (13 % 7));
    expect(Buffer.from(data[1].buffer).equals(Buffer.from(data[2].buffer))).toBe(true);
  });

  it('at most four sizes for a large gradient, and nothing to choose for a small one', async () => {
    const comms = ring(2);
    const big = await Promise.all(comms.map((c) => tuneSegments(c, 50_000_000)));
    // Timed on 16 MiB (chunks of 8 MiB): 256 KiB, 1 MiB, 4 MiB cut it, 16 MiB leaves it whole.
    expect(big[0]!.tried.map((t) => t.segmentBytes)).toEqual([256 << 10, 1 << 20, 4 << 20, 16 << 20]);
    const small = await Promise.all(comms.map((c) => tuneSegments(c, 20_000)));
    expect(small).toEqual([null, null]);
  });
});

describe('the ring measures itself and picks the overlap’s range size', () => {
  it('every rank reports the same figures (the ranks’ mean)', async () => {
    const comms = ring(3);
    const measured = await Promise.all(comms.map((c) => probeRing(c, 64 * 1024)));
    for (const m of measured) {
      expect(m).toEqual(measured[0]);
      expect(m.latencyMs).toBeGreaterThan(0);
      expect(m.busbwMBps).toBeGreaterThan(0);
    }
  });

  it('ranges that cross the ring in about ten latencies, the nearest power of two from 64 KiB to 4 MiB', () => {
    expect(bucketBytesFor({ latencyMs: 2, busbwMBps: 118 })).toBe(2 << 20); // 1 Gbit/s: 10 × 2 ms × 118 MB/s = 2.36 MB
    expect(bucketBytesFor({ latencyMs: 1.6, busbwMBps: 35 })).toBe(512 << 10); // 560 kB
    expect(bucketBytesFor({ latencyMs: 2, busbwMBps: 11.8 })).toBe(256 << 10); // 100 Mbit/s: 236 kB
    expect(bucketBytesFor({ latencyMs: 0.05, busbwMBps: 20 })).toBe(64 << 10); // floor
    expect(bucketBytesFor({ latencyMs: 50, busbwMBps: 1000 })).toBe(4 << 20); // ceiling
  });
});

describe('a new ring and the segment size an earlier one picked', () => {
  it('takes it over the same transport without timing again, and times again over another', async () => {
    // Ranks in one process are on one host: shared memory off, so that the ring is TCP-like.
    const saved = process.env.RINGTRAIN_SHARED_MEMORY;
    process.env.RINGTRAIN_SHARED_MEMORY = '0';
    try {
      const again = await Promise.all(ring(2).map((c) => setUpRing(c, 600_000, { bytes: 64 << 10, transport: 'tcp' })));
      for (const r of again) {
        expect(r).toMatchObject({ transport: 'tcp', segmentBytes: 64 << 10, tunedBefore: true });
        expect(r.tuning).toBeUndefined();
      }
      const other = await Promise.all(ring(2).map((c) => setUpRing(c, 600_000, { bytes: 64 << 10, transport: 'hosts', hosts: 2 })));
      for (const r of other) {
        expect(r.tunedBefore).toBeUndefined();
        expect(r.tuning!.length).toBeGreaterThan(1);
      }
    } finally {
      if (saved === undefined) delete process.env.RINGTRAIN_SHARED_MEMORY;
      else process.env.RINGTRAIN_SHARED_MEMORY = saved;
    }
  });
});

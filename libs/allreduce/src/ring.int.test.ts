import { afterEach, describe, expect, it } from 'vitest';
import { ProcessRing } from './testing/ring-harness.js';

let ring: ProcessRing | null = null;
afterEach(async () => {
  await ring?.stop();
  ring = null;
});

describe('ring all-reduce across real processes on loopback', () => {
  it('4 processes run 2,000 all-reduces of varying sizes with exact results', async () => {
    ring = await ProcessRing.start(4, { segmentBytes: 4096 });
    ring.broadcast({ run: { sizes: [1, 3, 4, 1000, 7919, 65_537, 0, 250_000], iterations: 2000 } });
    const done = await ring.waitAll('done', 120_000);
    expect(done.map((d) => d.iterations)).toEqual([2000, 2000, 2000, 2000]);
    expect(ring.events.filter((e) => e.event === 'error')).toEqual([]);
  });

  it('large segments, read into reused buffers and reduced in place: exact over hundreds of all-reduces', async () => {
    // 1 MiB segments ride the 4 MiB read ring (wrapping round it); 6 MiB ones outgrow it and take fresh buffers.
    for (const segmentBytes of [1 << 20, 6 << 20]) {
      ring = await ProcessRing.start(3, { segmentBytes });
      ring.broadcast({ run: { sizes: [3_000_001, 262_147, 7, 1_500_000, 4_700_000], iterations: segmentBytes === 1 << 20 ? 150 : 20 } });
      const done = await ring.waitAll('done', 120_000);
      expect(done).toHaveLength(3);
      expect(ring.events.filter((e) => e.event === 'error')).toEqual([]);
      await ring.stop();
      ring = null;
    }
  });

  it('SIGKILL of one process mid-operation: the others fail with ERR_PEER_LOST naming it within 2 s', async () => {
    ring = await ProcessRing.start(4, { peerTimeoutMs: 1000 });
    ring.broadcast({ run: { sizes: [2_000_000], iterations: 100_000, verify: false } });
    await ring.waitAll('progress', 30_000);
    const killedAt = Date.now();
    ring.procs[2].kill('SIGKILL');
    const errors = await ring.waitAll('error', 5000, 3);
    for (const e of errors) {
      expect(e.code).toBe('ERR_PEER_LOST');
      expect(String(e.message)).toMatch(/peer rank 2/);
      expect(e.t - killedAt).toBeLessThan(2000);
    }
    console.log(`failure seen by the others after ${errors.map((e) => e.t - killedAt).join(', ')} ms`);
  });

  it('a process that stops answering (SIGSTOP) is found by the heartbeat within 2 s', async () => {
    ring = await ProcessRing.start(3, { peerTimeoutMs: 1000 });
    ring.broadcast({ run: { sizes: [500_000], iterations: 100_000, verify: false } });
    await ring.waitAll('progress', 30_000);
    const stoppedAt = Date.now();
    ring.procs[1].kill('SIGSTOP');
    try {
      const errors = await ring.waitAll('error', 5000, 2);
      for (const e of errors) {
        expect(['ERR_PEER_LOST', 'ERR_COLLECTIVE_TIMEOUT']).toContain(e.code);
        expect(String(e.message)).toMatch(/rank 1/);
        expect(e.t - stoppedAt).toBeLessThan(2000);
      }
      console.log(`hung peer detected after ${errors.map((e) => e.t - stoppedAt).join(', ')} ms`);
    } finally {
      ring.procs[1].kill('SIGCONT');
    }
  });

  it('long blocking steps, one rank slower than the silence limit: not taken for a hang (the deadline grows by the time a rank was busy)', async () => {
    // Ranks 0 and 2 compute 1.2 s a step, rank 1 2.4 s: the others wait 1.2 s on it, past the 1 s limit.
    ring = await ProcessRing.start(3, { peerTimeoutMs: 1000 });
    ring.broadcast({ run: { sizes: [10_000], iterations: 2, busyMs: [1200, 2400, 1200] } });
    const done = await ring.waitAll('done', 20_000);
    expect(done.map((d) => d.iterations)).toEqual([2, 2, 2]);
    expect(ring.events.filter((e) => e.event === 'error')).toEqual([]);
  });
});

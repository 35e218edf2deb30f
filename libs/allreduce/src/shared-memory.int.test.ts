import { readdirSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { sharedMemoryNative } from './reduce-kernel.js';
import { ProcessRing } from './testing/ring-harness.js';

// Where the addon must be there (CI), its absence fails here instead of skipping.
const expectNative = process.env.RINGTRAIN_EXPECT_NATIVE === '1';
const run = sharedMemoryNative || expectNative ? describe : describe.skip;

let ring: ProcessRing | null = null;
afterEach(async () => {
  await ring?.stop();
  ring = null;
});

const leftovers = (): string[] => readdirSync('/dev/shm').filter((f) => f.startsWith('ringtrain-'));

run('same-host ranks all-reduce through shared memory (real processes)', () => {
  it('is chosen by every rank, gives the TCP ring’s bits exactly, and leaves nothing in /dev/shm', async () => {
    expect(sharedMemoryNative, 'the native addon (with shared memory) is not loaded').not.toBeNull();
    const before = leftovers();
    for (const world of [2, 3, 4]) {
      // 300,001 elements fit; 400,000 do not and take the ring (and must agree with it too).
      ring = await ProcessRing.start(world, { sharedMemory: 300_001 });
      const connected = ring.events.filter((e) => e.event === 'connected');
      expect(connected.map((e) => e.sharedMemory)).toEqual(Array(world).fill(true));
      ring.broadcast({ run: { sizes: [1, 3, 0, 1000, 7919, 300_001, 400_000, 2], iterations: 40, floats: true } });
      const done = await ring.waitAll('done', 120_000);
      expect(done.map((d) => d.iterations)).toEqual(Array(world).fill(40));
      expect(ring.events.filter((e) => e.event === 'error')).toEqual([]);
      await ring.stop();
      ring = null;
    }
    expect(leftovers()).toEqual(before);
  });

  it('ranks told they are on two or three hosts: shared memory inside each, the ring between, exact sums on every rank', async () => {
    for (const hosts of [
      ['a', 'a', 'b', 'b'],
      ['a', 'a', 'a', 'b', 'c'],
    ]) {
      ring = await ProcessRing.start(hosts.length, { sharedMemory: 300_001, hosts, segmentBytes: 64 * 1024 });
      const connected = ring.events.filter((e) => e.event === 'connected');
      expect(connected.map((e) => [e.sharedMemory, e.hosts, e.why])).toEqual(hosts.map(() => [false, new Set(hosts).size, null]));
      // Small integers: every order of summing gives the exact sum, which each rank checks.
      ring.broadcast({ run: { sizes: [1, 3, 0, 1000, 7919, 300_001, 400_000, 2], iterations: 40 } });
      const done = await ring.waitAll('done', 120_000);
      expect(done.map((d) => d.iterations)).toEqual(hosts.map(() => 40));
      expect(ring.events.filter((e) => e.event === 'error')).toEqual([]);
      await ring.stop();
      ring = null;
    }
  });

  it('across hosts, SIGKILL of a host’s last rank (the one that sends for it): the others fail with ERR_PEER_LOST within 2 s', async () => {
    ring = await ProcessRing.start(4, { sharedMemory: 2_000_000, hosts: ['a', 'a', 'b', 'b'], peerTimeoutMs: 1000 });
    ring.broadcast({ run: { sizes: [2_000_000], iterations: 100_000, verify: false } });
    await ring.waitAll('progress', 30_000);
    const killedAt = Date.now();
    ring.procs[1].kill('SIGKILL');
    const errors = await ring.waitAll('error', 5000, 3);
    for (const e of errors) {
      expect(e.code).toBe('ERR_PEER_LOST');
      expect(e.t - killedAt).toBeLessThan(2000);
    }
  });

  it('one rank with RINGTRAIN_SHARED_MEMORY=0: every rank stays on TCP, saying why', async () => {
    ring = await ProcessRing.start(3, { sharedMemory: 10_000 }, (r) => (r === 1 ? { RINGTRAIN_SHARED_MEMORY: '0' } : {}));
    const connected = ring.events.filter((e) => e.event === 'connected');
    expect(connected.map((e) => e.sharedMemory)).toEqual([false, false, false]);
    for (const e of connected) expect(e.why).toBe('rank 1: RINGTRAIN_SHARED_MEMORY=0');
    ring.broadcast({ run: { sizes: [5000], iterations: 5, floats: true } });
    await ring.waitAll('done', 30_000);
  });

  it('a directory it cannot write: every rank stays on TCP, naming the rank and the path', async () => {
    // A file, not a directory: nothing can be made under it, as a read-only or missing /dev/shm.
    ring = await ProcessRing.start(2, { sharedMemory: 10_000 }, (r) => (r === 0 ? { RINGTRAIN_SHARED_MEMORY_DIR: '/proc/version' } : {}));
    const connected = ring.events.filter((e) => e.event === 'connected');
    expect(connected.map((e) => e.sharedMemory)).toEqual([false, false]);
    for (const e of connected) expect(String(e.why)).toMatch(/^rank 0: cannot make \/proc\/version\/ringtrain-/);
  });

  it('SIGKILL of one process while the others wait in shared memory: ERR_PEER_LOST naming it within 2 s', async () => {
    ring = await ProcessRing.start(4, { sharedMemory: 2_000_000, peerTimeoutMs: 1000 });
    ring.broadcast({ run: { sizes: [2_000_000], iterations: 100_000, verify: false } });
    await ring.waitAll('progress', 30_000);
    const killedAt = Date.now();
    ring.procs[2].kill('SIGKILL');
    const errors = await ring.waitAll('error', 5000, 3);
    for (const e of errors) {
      expect(['ERR_PEER_LOST']).toContain(e.code);
      expect(String(e.message)).toMatch(/rank 2/);
      expect(e.t - killedAt).toBeLessThan(2000);
    }
  });

  it('a process that stops (SIGSTOP) is found by the heartbeat within 2 s, not waited on forever', async () => {
    ring = await ProcessRing.start(3, { sharedMemory: 500_000, peerTimeoutMs: 1000 });
    ring.broadcast({ run: { sizes: [500_000], iterations: 100_000, verify: false, trace: true } });
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
      // Woken, it must not take the all-reduce the others gave up on (it would go on a step ahead).
      ring.procs[1].kill('SIGCONT');
      const [woken] = await ring.waitAll('error', 5000, 3).then((all) => all.filter((e) => e.rank === 1));
      expect(woken.code).toMatch(/ERR_PEER_LOST|ERR_COLLECTIVE_TIMEOUT/);
      // It completes no all-reduce that the others did not (it may finish one they all finished).
      const last = (rank: number): number => Math.max(-1, ...ring!.events.filter((e) => e.rank === rank && e.event === 'iteration').map((e) => Number(e.iteration)));
      expect(last(1)).toBeLessThanOrEqual(Math.min(last(0), last(2)));
    } finally {
      ring.procs[1].kill('SIGCONT');
    }
  });
});

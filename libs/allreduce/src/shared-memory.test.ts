import { mkdtempSync, readdirSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Communicator } from './communicator.js';
import { CollectiveError } from './errors.js';
import { MemoryHub } from './memory-transport.js';
import type { Fingerprint } from './operations.js';
import { sharedMemoryNative } from './reduce-kernel.js';
import { type GroupHost, SharedMemoryGroup } from './shared-memory.js';
import { STALE_FILE_MS, sweepStaleFiles } from './stale-files.js';

const expectNative = process.env.RINGTRAIN_EXPECT_NATIVE === '1';
const run = sharedMemoryNative || expectNative ? describe : describe.skip;

/** `world` ranks in this one process, with an all-gather among them (each call k meets the others' call k). */
function localHosts(world: number): GroupHost[] {
  const rounds: { parts: Uint8Array[]; waiting: ((parts: Uint8Array[]) => void)[] }[] = [];
  const calls = Array(world).fill(0);
  return Array.from({ length: world }, (_, rank) => ({
    rank,
    worldSize: world,
    allgather: (bytes: Uint8Array) =>
      new Promise<Uint8Array[]>((resolve) => {
        const round = (rounds[calls[rank]++] ??= { parts: Array(world), waiting: [] });
        round.parts[rank] = Uint8Array.from(bytes);
        round.waiting.push(resolve);
        if (round.waiting.length === world) for (const w of round.waiting) w(round.parts);
      }),
  }));
}

async function groups(world: number, capacity: number): Promise<SharedMemoryGroup[]> {
  const made = await Promise.all(localHosts(world).map((h) => SharedMemoryGroup.establish(h, { capacity })));
  for (const g of made) if (!(g instanceof SharedMemoryGroup)) throw new Error(g.reason);
  return made as SharedMemoryGroup[];
}

const fp = (step = 0, length = 0): Fingerprint => ({ kind: 'allreduce', seq: 0, step, length, layoutHash: '00000000000000ab' });
const later = (ms: number): number => performance.now() + ms;
const randomData = (world: number, n: number, seed: number): Float32Array[] =>
  Array.from({ length: world }, (_, r) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + r * 7919 + i) * 10 ** ((i % 7) - 3)));

/** The same data through the TCP ring's algorithm (in memory), for its bits. */
async function viaRing(data: Float32Array[], average: boolean): Promise<Float32Array[]> {
  const hub = new MemoryHub(data.length);
  const copies = data.map((d) => Float32Array.from(d));
  await Promise.all(hub.transports.map((t, r) => new Communicator(t, { segmentBytes: 4096 }).allreduce(copies[r], { average })));
  return copies;
}

const bits = (x: Float32Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

run('shared-memory all-reduce (ranks in one process)', () => {
  it('gives the ring’s bits, sum and mean, at 2 to 5 ranks and awkward lengths', async () => {
    for (const world of [2, 3, 5]) {
      const gs = await groups(world, 20_000);
      for (const [n, average] of [[1, false], [4, true], [world - 1, false], [19_999, true], [20_000, false], [0, true]] as const) {
        const data = randomData(world, n, n + world);
        const expected = await viaRing(data, average);
        const finite = await Promise.all(gs.map((g, r) => g.allreduce(data[r], average, fp(3, n), later(5000), () => null)));
        expect(finite).toEqual(Array(world).fill(true));
        for (let r = 0; r < world; r++) expect(bits(data[r]).equals(bits(expected[r])), `world ${world} n ${n} rank ${r}`).toBe(true);
      }
    }
  });

  it('a NaN or an overflowing sum is reported as not finite on every rank alike', async () => {
    const gs = await groups(3, 100);
    const nan = randomData(3, 100, 1);
    nan[1][57] = Number.NaN;
    expect(await Promise.all(gs.map((g, r) => g.allreduce(nan[r], true, fp(), later(5000), () => null)))).toEqual([false, false, false]);
    const big = Array.from({ length: 3 }, () => new Float32Array(100).fill(3e38));
    expect(await Promise.all(gs.map((g, r) => g.allreduce(big[r], false, fp(), later(5000), () => null)))).toEqual([false, false, false]);
    // …and the group goes on working.
    const ok = randomData(3, 100, 2);
    expect(await Promise.all(gs.map((g, r) => g.allreduce(ok[r], true, fp(), later(5000), () => null)))).toEqual([true, true, true]);
  });

  it('ranks at different steps or lengths fail with ERR_FINGERPRINT_MISMATCH naming the odd one', async () => {
    const gs = await groups(3, 100);
    const data = randomData(3, 100, 3);
    const results = await Promise.allSettled(gs.map((g, r) => g.allreduce(r === 2 ? data[r].subarray(0, 99) : data[r], true, fp(7, r === 2 ? 99 : 100), later(5000), () => null)));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      const e = (r as PromiseRejectedResult).reason as CollectiveError;
      expect(e.code).toBe('ERR_FINGERPRINT_MISMATCH');
      expect(e.message).toMatch(/^ranks disagree: rank 2 is at allreduce step 7 length 99 layout 00000000000000ab \(mean\); rank 0 is at allreduce step 7 length 100 /);
    }
  });

  it('a rank that never comes: the others time out at their deadline, naming it', async () => {
    const gs = await groups(3, 100);
    const data = randomData(3, 100, 4);
    const t0 = performance.now();
    const results = await Promise.allSettled([0, 1].map((r) => gs[r].allreduce(data[r], true, fp(), later(150), () => null)));
    const waited = performance.now() - t0;
    for (const r of results) {
      const e = (r as PromiseRejectedResult).reason as CollectiveError;
      expect(e.code).toBe('ERR_COLLECTIVE_TIMEOUT');
      expect(e.message).toMatch(/waiting on rank 2 in shared memory \(to arrive\)/);
    }
    expect(waited).toBeGreaterThanOrEqual(150);
    expect(waited).toBeLessThan(1000);
  });

  it('the ring’s failure (an abort, a lost peer) ends a wait with that error', async () => {
    const gs = await groups(2, 10);
    const lost = new CollectiveError('ERR_PEER_LOST', 'rank 0: peer rank 1 is gone', { rank: 0, peer: 1 });
    let failure: CollectiveError | null = null;
    setTimeout(() => (failure = lost), 30);
    await expect(gs[0].allreduce(new Float32Array(10), true, fp(), later(5000), () => failure)).rejects.toBe(lost);
  });

  it('more elements than its capacity is refused before anything is shared', async () => {
    const gs = await groups(2, 10);
    await expect(gs[0].allreduce(new Float32Array(11), true, fp(), later(5000), () => null)).rejects.toThrow(/11 elements exceed the shared memory's 10/);
  });

  it('leaves no file in /dev/shm once established, and says why where it cannot be', async () => {
    const before = readdirSync('/dev/shm').filter((f) => f.startsWith('ringtrain-'));
    await groups(4, 1000);
    expect(readdirSync('/dev/shm').filter((f) => f.startsWith('ringtrain-'))).toEqual(before);
    const refused = await Promise.all(localHosts(2).map((h) => SharedMemoryGroup.establish(h, { capacity: 10, dir: '/nonexistent-dir' })));
    for (const r of refused) expect((r as { reason: string }).reason).toMatch(/^rank 0: cannot make \/nonexistent-dir\/ringtrain-\d+-[0-9a-f]+: ENOENT/);
  });
});

describe('sweepStaleFiles (real files)', () => {
  it('removes only old files of ours whose process is gone: not fresh ones, not a live process\'s, not other names', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-shm-'));
    const dead = 2 ** 22 + 12345; // above Linux's default pid_max: no process has it
    const old = (Date.now() - STALE_FILE_MS - 60_000) / 1000;
    const make = (name: string, age: number | null): void => {
      writeFileSync(join(dir, name), 'x');
      if (age !== null) utimesSync(join(dir, name), age, age);
    };
    make(`ringtrain-${dead}-0123456789ab`, old); // a killed rank's, long ago: removed
    make(`ringtrain-${dead}-ba9876543210`, null); // a killed rank's, just now: its group may still be forming elsewhere
    make(`ringtrain-${process.pid}-0123456789ab`, old); // a live process's
    make(`ringtrain-${dead}-notours`, old);
    make('other-file', old);
    expect(sweepStaleFiles(dir)).toEqual([join(dir, `ringtrain-${dead}-0123456789ab`)]);
    expect(readdirSync(dir).sort()).toEqual([`ringtrain-${dead}-ba9876543210`, `ringtrain-${dead}-notours`, `ringtrain-${process.pid}-0123456789ab`, 'other-file'].sort());
    expect(sweepStaleFiles(join(dir, 'missing'))).toEqual([]);
  });
});

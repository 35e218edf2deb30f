import { describe, expect, it } from 'vitest';
import { Communicator } from './communicator.js';
import { CollectiveError } from './errors.js';
import { MemoryHub } from './memory-transport.js';
import { sharedMemoryNative } from './reduce-kernel.js';
import { hostBlocks } from './shared-memory.js';

const expectNative = process.env.RINGTRAIN_EXPECT_NATIVE === '1';
const run = sharedMemoryNative || expectNative ? describe : describe.skip;

describe('hostBlocks: where the ranks of a ring sit, by host', () => {
  it('finds each host’s ranks as a block of the ring', () => {
    expect(hostBlocks(['a', 'a', 'b', 'b'], 0)).toEqual({ hosts: 2, host: 0, first: 0, size: 2 });
    expect(hostBlocks(['a', 'a', 'b', 'b'], 3)).toEqual({ hosts: 2, host: 1, first: 2, size: 2 });
    expect(hostBlocks(['a', 'b', 'b', 'b', 'c'], 2)).toEqual({ hosts: 3, host: 1, first: 1, size: 3 });
    expect(hostBlocks(['a', 'b', 'b', 'b', 'c'], 4)).toEqual({ hosts: 3, host: 2, first: 4, size: 1 });
  });

  it('says why not where a host’s ranks are apart, or every host has one rank', () => {
    expect(hostBlocks(['a', 'b', 'a', 'b'], 0)).toEqual({ reason: 'the ranks of one host are not next to each other in the ring' });
    // Ranks 0 and 3 are neighbours in the ring, but the blocks are cut at rank 0.
    expect(hostBlocks(['a', 'b', 'b', 'a'], 1)).toEqual({ reason: 'the ranks of one host are not next to each other in the ring' });
    expect(hostBlocks(['a', 'b', 'c'], 1)).toEqual({ reason: 'the ranks are not all on one host' });
  });
});

/** A ring of communicators in this process, each told which host it is on; resolves once shared memory is set up (or refused). */
async function ringOn(hosts: string[], capacity: number, segmentBytes?: number): Promise<{ comms: Communicator[]; why: (string | null)[]; hub: MemoryHub }> {
  const hub = new MemoryHub(hosts.length);
  const comms = hub.transports.map((t) => new Communicator(t, { segmentBytes, timeoutMs: 10_000 }));
  const why = await Promise.all(comms.map((c, r) => c.shareMemory({ capacity, hostKey: hosts[r] })));
  return { comms, why, hub };
}

const values = (world: number, n: number, seed: number): Float32Array[] => Array.from({ length: world }, (_, r) => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 31 + r * 7919 + i) * 10 ** ((i % 5) - 2)));
/**
 * The result in float32, summed in the order the hierarchy sums: each host's ranks in ring order,
 * then each chunk of the host ring from its host c round to c−1 (as the ring of ranks does).
 */
function hierarchicalSum(hosts: string[], data: Float32Array[], average: boolean): Float32Array {
  const names = [...new Set(hosts)];
  const n = data[0].length;
  const hostSums = names.map((name) => {
    const mine = data.filter((_, r) => hosts[r] === name);
    return Float32Array.from({ length: n }, (_, i) => mine.slice(1).reduce((sum, d) => Math.fround(sum + d[i]), mine[0][i]));
  });
  const H = names.length;
  return Float32Array.from({ length: n }, (_, i) => {
    let c = 0;
    while (Math.floor(((c + 1) * n) / H) <= i) c++;
    let sum = hostSums[c][i];
    for (let k = 1; k < H; k++) sum = Math.fround(sum + hostSums[(c + k) % H][i]);
    return average ? Math.fround(sum / hosts.length) : sum;
  });
}

const bits = (x: Float32Array): Buffer => Buffer.from(x.buffer, x.byteOffset, x.byteLength);

run('all-reduce across hosts: shared memory inside each, the ring between (ranks in one process)', () => {
  it('gives every rank the same bits, those of the hierarchy’s order of summing, at several host layouts and lengths', async () => {
    for (const hosts of [
      ['a', 'a', 'b', 'b'],
      ['a', 'a', 'a', 'b'],
      ['a', 'b', 'b', 'c', 'c'],
      ['a', 'a', 'b', 'b', 'c', 'c'],
    ]) {
      const world = hosts.length;
      // Segments of 4 KiB: chunks of several segments, so the sends written down pipeline.
      const { comms, why } = await ringOn(hosts, 50_000, 4096);
      expect(why, hosts.join('')).toEqual(Array(world).fill(null));
      expect(comms.map((c) => c.hostBlocks?.hosts)).toEqual(Array(world).fill(new Set(hosts).size));
      expect(comms.every((c) => !c.sharedMemory)).toBe(true);
      for (const [n, average] of [[1, false], [2, true], [7, false], [10_001, true], [50_000, false], [0, true]] as const) {
        const data = values(world, n, n + world);
        const expected = hierarchicalSum(hosts, data, average);
        const finite = await Promise.all(comms.map((c, r) => c.allreduce(data[r], { average, step: 5 })));
        expect(finite.map((f) => f.finite)).toEqual(Array(world).fill(true));
        for (let r = 1; r < world; r++) expect(bits(data[r]).equals(bits(data[0])), `${hosts.join('')} n ${n} rank ${r}`).toBe(true);
        // (The ring of ranks sums in another order: these bits show the hierarchy did it.)
        const wrong = data[0].findIndex((x, i) => !Object.is(x, expected[i]));
        expect(wrong >= 0 ? `${hosts.join('')} n ${n}: element ${wrong} is ${data[0][wrong]}, expected ${expected[wrong]}` : null).toBeNull();
      }
      // Broadcast and all-gather keep to the ring, in the same sequence.
      const parts = await Promise.all(comms.map((c, r) => c.allgather(new Uint8Array([r]))));
      expect(parts[world - 1].map((p) => p[0])).toEqual([...Array(world).keys()]);
      await Promise.all(comms.map((c) => c.close()));
    }
  });

  it('several all-reduces in flight at once (overlapped ranges) complete in call order with the right sums', async () => {
    const { comms } = await ringOn(['a', 'a', 'b', 'b'], 10_000);
    const data = Array.from({ length: 4 }, () => Array.from({ length: 5 }, (_, k) => new Float32Array(1000 + k).fill(k + 1)));
    await Promise.all(comms.flatMap((c, r) => data[r].map((d) => c.allreduce(d, { average: false }))));
    for (const ranges of data) expect(ranges.map((d) => [d[0], d.at(-1)])).toEqual([1, 2, 3, 4, 5].map((k) => [4 * k, 4 * k]));
    await Promise.all(comms.map((c) => c.close()));
  });

  it('compressed between hosts (fp16, bf16, int8 with error feedback): the same bits on every rank, within the format’s error of the sum', async () => {
    const { comms } = await ringOn(['a', 'a', 'b', 'b', 'b', 'c'], 20_000, 4096);
    for (const [wire, tolerance] of [['fp16', 2e-3], ['bf16', 2e-2], ['int8', 5e-2]] as const) {
      for (const n of [3, 20_000]) {
        const residuals = comms.map(() => new Float32Array(n));
        const data = values(6, n, 11);
        const exact = Array.from({ length: n }, (_, i) => data.reduce((sum, d) => sum + d[i], 0) / 6);
        const scale = Math.max(...exact.map(Math.abs));
        await Promise.all(comms.map((c, r) => c.allreduce(data[r], { wire, residual: residuals[r] })));
        for (let r = 1; r < 6; r++) expect(bits(data[r]).equals(bits(data[0])), `${wire} n ${n} rank ${r}`).toBe(true);
        for (let i = 0; i < n; i++) expect(Math.abs(data[0][i] - exact[i]), `${wire} element ${i}`).toBeLessThanOrEqual(tolerance * scale);
        // Error feedback lives on each host's first rank (ranks 0, 2, 5), which encode the host's sums.
        if (n > 3) expect(residuals.map((x) => x.some((v) => v !== 0))).toEqual([true, false, true, false, false, true]);
      }
    }
    await Promise.all(comms.map((c) => c.close()));
  });

  it('ones past the capacity keep to the ring, with the same results on every rank', async () => {
    const { comms } = await ringOn(['a', 'a', 'b', 'b'], 100);
    const data = values(4, 101, 3);
    await Promise.all(comms.map((c, r) => c.allreduce(data[r])));
    for (let r = 1; r < 4; r++) expect(bits(data[r]).equals(bits(data[0]))).toBe(true);
    await Promise.all(comms.map((c) => c.close()));
  });

  it('a NaN on one rank is reported as not finite on every rank', async () => {
    const { comms } = await ringOn(['a', 'a', 'b', 'b'], 100);
    const data = values(4, 100, 9);
    data[2][40] = Number.NaN;
    const results = await Promise.all(comms.map((c, r) => c.allreduce(data[r])));
    expect(results.map((x) => x.finite)).toEqual([false, false, false, false]);
    await Promise.all(comms.map((c) => c.close()));
  });

  it('a rank lost mid-ring: every other rank fails with ERR_PEER_LOST instead of waiting', async () => {
    const { comms, hub } = await ringOn(['a', 'a', 'b', 'b'], 10_000);
    hub.kill(3);
    const results = await Promise.allSettled(comms.slice(0, 3).map((c) => c.allreduce(new Float32Array(10_000))));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect(((r as PromiseRejectedResult).reason as CollectiveError).code).toBe('ERR_PEER_LOST');
    }
    await Promise.all(comms.map((c) => c.close()));
  });

  it('ranks of one host apart in the ring: every rank stays on the ring and says why', async () => {
    const { comms, why } = await ringOn(['a', 'b', 'a', 'b'], 100);
    expect(why).toEqual(Array(4).fill('the ranks of one host are not next to each other in the ring'));
    expect(comms.map((c) => c.hostBlocks)).toEqual([null, null, null, null]);
    await Promise.all(comms.map((c) => c.close()));
  });
});

// Keeps the import used where the describe is skipped.
void CollectiveError;

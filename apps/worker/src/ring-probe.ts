import type { Communicator } from '@ringtrain/allreduce';

export interface RingMeasurement {
  /** Median time of an all-reduce of one float: the ring's round trip. */
  latencyMs: number;
  /** Bus bandwidth of the best of three all-reduces of `probeBytes` after two to warm up (bytes · 2(N−1)/N per second). */
  busbwMBps: number;
  probeBytes: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The ring measures itself at the start of a generation (a few milliseconds on one host, a
 * quarter second at 50 Mbit/s): every rank calls it, as any collective. The first all-reduces on
 * new connections are slow (TCP's slow start, cold code), so two warm up unmeasured.
 */
export async function probeRing(comm: Communicator, probeBytes = 256 * 1024): Promise<RingMeasurement> {
  const one = new Float32Array(1);
  const times: number[] = [];
  await comm.barrier();
  for (let i = 0; i < 5; i++) {
    const t = performance.now();
    await comm.allreduce(one);
    times.push(performance.now() - t);
  }
  const big = new Float32Array(probeBytes / 4);
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    await comm.barrier();
    const t = performance.now();
    await comm.allreduce(big);
    if (i >= 2) best = Math.min(best, performance.now() - t);
  }
  const n = comm.worldSize;
  return { latencyMs: median(times), busbwMBps: (probeBytes * 2 * (n - 1)) / n / (best / 1000) / 1e6, probeBytes };
}

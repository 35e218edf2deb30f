import type { Communicator } from '@ringtrain/allreduce';
import type { MessageOf } from '@ringtrain/protocol';

export interface RingMeasurement {
  /** Median time of an all-reduce of one float: the ring's round trip. */
  latencyMs: number;
  /** Bus bandwidth of the best of three all-reduces of `probeBytes` after two to warm up (bytes · 2(N−1)/N per second). */
  busbwMBps: number;
  probeBytes: number;
}

/** What a new ring settled on and measured of itself (the ringProbe message's figures). */
export interface RingSetUp extends RingMeasurement {
  transport: 'tcp' | 'shared memory' | 'hosts';
  /** With transport `hosts` (shared memory inside each host, TCP between): how many. */
  hosts?: number;
  /** Why not shared memory, where it is TCP. */
  why?: string;
  segmentBytes: number;
  tuning?: SegmentTuning['tried'];
  /** The segment size is the one an earlier ring of the run picked over the same transport. */
  tunedBefore?: boolean;
}

/**
 * A new generation's ring, before its first step (every rank calls it, as any collective): shared
 * memory where all ranks are on one host, or inside each host where the ring spans hosts; where
 * any TCP is left, the segment size that pipelines a gradient of `elements` floats best (unless one
 * was given, or an earlier ring of the run picked one over the same transport: `before`); then it
 * measures itself. Every rank has the same `before` (its assign) and sees the same transport, so
 * all make the same choice.
 */
export async function setUpRing(comm: Communicator, elements: number, before?: MessageOf<'assign'>['tunedSegment']): Promise<RingSetUp> {
  // Gradients, DiLoCo's pseudo-gradients and the metrics all fit in one parameter vector.
  const why = await comm.shareMemory({ capacity: elements });
  const transport = comm.sharedMemory ? 'shared memory' : comm.hostBlocks ? 'hosts' : 'tcp';
  const hosts = comm.hostBlocks?.hosts;
  const again = !comm.sharedMemory && !comm.segmentBytesGiven && before !== undefined && before.transport === transport && before.hosts === hosts;
  if (again) comm.setSegmentBytes(before.bytes);
  const tuned = comm.sharedMemory || comm.segmentBytesGiven || again ? null : await tuneSegments(comm, elements);
  const measured = await probeRing(comm);
  return {
    ...measured,
    transport,
    ...(hosts ? { hosts } : {}),
    segmentBytes: comm.segmentBytes,
    ...(why ? { why: why.slice(0, 4000) } : {}),
    ...(tuned ? { tuning: tuned.tried } : {}),
    ...(again ? { tunedBefore: true } : {}),
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The ring measures itself at the start of a generation (a few milliseconds on one host, a
 * quarter second at 50 Mbit/s): every rank calls it, as any collective. The first all-reduces on
 * new connections are slow (TCP's slow start, cold code), so two warm up unmeasured. The figures
 * are the ranks' mean (an all-reduce): the same on every rank, so that choices made from them agree.
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
  const mean = Float32Array.of(median(times), (probeBytes * 2 * (n - 1)) / n / (best / 1000) / 1e6);
  await comm.allreduce(mean);
  return { latencyMs: mean[0], busbwMBps: mean[1], probeBytes };
}

/**
 * The overlap's range size for a ring that measured itself: each range's all-reduce pays the
 * ring's latency once, so a range is made to take about ten times that to cross the ring (the
 * latency about a tenth of it): the nearest power of two, from 64 KiB to 4 MiB. 1 Gbit/s with a
 * 2 ms ring: 2 MiB; 100 Mbit/s: 256 KiB; loopback: ~1 MiB.
 */
export function bucketBytesFor(m: Pick<RingMeasurement, 'latencyMs' | 'busbwMBps'>): number {
  const bytes = 10 * (m.latencyMs / 1000) * m.busbwMBps * 1e6;
  return 2 ** Math.min(22, Math.max(16, Math.round(Math.log2(Math.max(1, bytes)))));
}

/** Segment sizes the tuner tries: from 64 KiB to 16 MiB, by fours. */
const SEGMENT_CANDIDATES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20];
/** The tuner all-reduces at most this many floats (16 MiB): enough to see how segments pipeline. */
const TUNING_ELEMENTS = 4 << 20;

export interface SegmentTuning {
  /** What was tried, and the ring's mean over ranks of the best of two all-reduces, in ms. */
  tried: { segmentBytes: number; ms: number }[];
  chosen: number;
}

/**
 * Picks the ring's segment size for an all-reduce of `elements` floats (the gradient) by timing it
 * at each size that cuts a chunk into pieces, and the smallest that leaves it whole. Every rank
 * calls it; the times are averaged over the ranks by an all-reduce, so every rank picks the same
 * size (a segment's frames must match its receiver's layout). Returns null with nothing to choose.
 */
export async function tuneSegments(comm: Communicator, elements: number): Promise<SegmentTuning | null> {
  const n = Math.min(elements, TUNING_ELEMENTS);
  const chunkBytes = Math.ceil(n / comm.worldSize) * 4;
  const whole = SEGMENT_CANDIDATES.find((s) => s >= chunkBytes);
  const candidates = [...SEGMENT_CANDIDATES.filter((s) => s < chunkBytes).slice(-3), ...(whole ? [whole] : [])];
  if (candidates.length < 2) return null;
  const data = new Float32Array(n);
  const times = new Float32Array(candidates.length);
  for (const [i, bytes] of candidates.entries()) {
    comm.setSegmentBytes(bytes);
    let best = Number.POSITIVE_INFINITY;
    for (let rep = 0; rep < (i === 0 ? 3 : 2); rep++) {
      await comm.barrier();
      const t = performance.now();
      await comm.allreduce(data);
      // The first all-reduce on fresh connections is slow (TCP's slow start, cold code): not counted.
      if (i > 0 || rep > 0) best = Math.min(best, performance.now() - t);
    }
    times[i] = best;
  }
  await comm.allreduce(times);
  let chosen = 0;
  for (let i = 1; i < candidates.length; i++) if (times[i] <= times[chosen]) chosen = i;
  comm.setSegmentBytes(candidates[chosen]);
  return { tried: candidates.map((segmentBytes, i) => ({ segmentBytes, ms: times[i] })), chosen: candidates[chosen] };
}

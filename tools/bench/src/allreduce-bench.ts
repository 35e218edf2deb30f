import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ProcessRing } from '@ringtrain/allreduce/testing';
import { fmt, runPeer } from './measure.js';
import { table } from '@ringtrain/cli';

export const SIZES = [4096, 65536, 1 << 20, 4 << 20, 16 << 20, 64 << 20];

/** `../shared/peers` beside the checkout, or RINGTRAIN_PEERS_DIR. */
export function peersDir(): string {
  return process.env.RINGTRAIN_PEERS_DIR ?? fileURLToPath(new URL('../../../../shared/peers/', import.meta.url));
}

interface Row {
  bytes: number;
  ms: number;
  busbw: number;
}

const busbw = (bytes: number, ms: number, n: number): number => ((bytes / (ms / 1000)) * 2 * (n - 1)) / n / 1e6;

/** Over loopback TCP, or (sharedMemory) through shared memory, as same-host workers run. */
async function ringtrain(workers: number, segmentBytes: number, sharedMemory: boolean): Promise<Row[]> {
  const ring = await ProcessRing.start(workers, { segmentBytes, peerTimeoutMs: 30_000, timeoutMs: 120_000, ...(sharedMemory ? { sharedMemory: Math.max(...SIZES) / 4 } : {}) });
  try {
    const used = ring.events.find((e) => e.event === 'connected')?.sharedMemory === true;
    if (used !== sharedMemory) throw new Error(`shared memory ${sharedMemory ? 'not in use' : 'in use'}: ${String(ring.events.find((e) => e.event === 'connected')?.why)}`);
    ring.broadcast({ run: { sizes: SIZES.map((b) => b / 4), timed: true, iterations: 20, warmup: 3 } });
    const done = await ring.waitAll('done', 600_000);
    const results = done.find((d) => d.rank === 0)!.results as { elements: number; ms: number }[];
    return results.map((r) => ({ bytes: r.elements * 4, ms: r.ms, busbw: busbw(r.elements * 4, r.ms, workers) }));
  } finally {
    await ring.stop();
  }
}

/** One-stream loopback TCP throughput in MB/s by iperf3, or undefined without it. */
async function iperf(): Promise<number | undefined> {
  if (spawnSync('iperf3', ['--version']).status !== 0) return undefined;
  const server = spawn('iperf3', ['-s', '-1', '-p', '5299'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  const r = spawnSync('iperf3', ['-c', '127.0.0.1', '-p', '5299', '-t', '3', '-J'], { encoding: 'utf8' });
  server.kill();
  try {
    return JSON.parse(r.stdout).end.sum_received.bits_per_second / 8 / 1e6;
  } catch {
    return undefined;
  }
}

interface Cell {
  ours: number[];
  shared: number[];
  gloo: number[];
  ratio: number[];
  ofIperf: number[];
}

const range = (xs: number[], digits: number): string => {
  const ok = xs.filter(Number.isFinite);
  if (!ok.length) return 'n/a';
  const [lo, hi] = [fmt(Math.min(...ok), digits), fmt(Math.max(...ok), digits)];
  return lo === hi ? lo : `${lo}–${hi}`;
};

/**
 * Ring all-reduce time and bus bandwidth beside Gloo's, N = 2 and 4, on loopback. With runs > 1
 * each run measures ours, then Gloo, then iperf3 again, and each cell shows the range over runs
 * (this machine's figures move by ±10% between runs; the ratio within a run is what counts).
 */
export async function allreduceBench(segmentBytes: number, runs = 1): Promise<string> {
  const gloo = `${peersDir()}gloo_allreduce.py`;
  const cells = new Map<string, Cell>();
  const ceilings: number[] = [];
  for (let run = 0; run < runs; run++) {
    const ceiling = await iperf();
    if (ceiling) ceilings.push(ceiling);
    for (const n of [2, 4]) {
      const ours = await ringtrain(n, segmentBytes, false);
      const shared = await ringtrain(n, segmentBytes, true);
      const peer = existsSync(gloo) ? runPeer(gloo, ['--workers', String(n), '--sizes', SIZES.join(',')]) : null;
      for (const r of ours) {
        const g = peer?.find((p) => p.bytes === r.bytes) as { ms: number; busbw_MBps: number } | undefined;
        const key = `${n}:${r.bytes}`;
        const cell = cells.get(key) ?? { ours: [], shared: [], gloo: [], ratio: [], ofIperf: [] };
        cell.ours.push(r.ms);
        cell.shared.push(shared.find((x) => x.bytes === r.bytes)!.ms);
        cell.gloo.push(g?.ms ?? NaN);
        cell.ratio.push(r.busbw / (g?.busbw_MBps ?? NaN));
        cell.ofIperf.push(ceiling ? (100 * r.busbw) / ceiling : NaN);
        cells.set(key, cell);
      }
    }
  }
  const out = [2, 4].map((n) => {
    const rows = SIZES.map((bytes) => {
      const c = cells.get(`${n}:${bytes}`)!;
      const busbws = c.ours.map((ms) => busbw(bytes, ms, n));
      const glooBusbws = c.gloo.map((ms) => busbw(bytes, ms, n));
      const pct = range(c.ofIperf, 0);
      const sharedRatio = c.shared.map((ms, i) => c.gloo[i] / ms);
      return [bytes >= 1 << 20 ? `${bytes >> 20} MiB` : `${bytes >> 10} KiB`, range(c.ours, 3), range(busbws, 0), range(c.shared, 3), range(c.shared.map((ms) => busbw(bytes, ms, n)), 0), range(c.gloo, 3), range(glooBusbws, 0), range(c.ratio, 2), range(sharedRatio, 2), pct === 'n/a' ? pct : `${pct}%`];
    });
    return `N = ${n}\n${table(['size', 'TCP ms', 'TCP busbw MB/s', 'shm ms', 'shm busbw MB/s', 'gloo ms', 'gloo busbw MB/s', 'ratio TCP', 'ratio shm', 'TCP of iperf3'], rows)}`;
  });
  const runsNote = runs > 1 ? `; ${runs} runs, each cell their range` : '';
  const iperfNote = ceilings.length ? ceilings.map((c) => `${fmt(c, 0)} MB/s`).join(', ') : 'n/a (apt-get install iperf3)';
  return `Ring all-reduce on one host, over loopback TCP and through shared memory (shm), float32, median of 20 (TCP segment ${segmentBytes >> 10} KiB${runsNote}); busbw = bytes/time · 2(N−1)/N; ratio = Gloo's time / ours\n${out.join('\n\n')}\niperf3 loopback, one stream: ${iperfNote}`;
}

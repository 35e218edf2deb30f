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

async function ringtrain(workers: number, segmentBytes: number): Promise<Row[]> {
  const ring = await ProcessRing.start(workers, { segmentBytes, peerTimeoutMs: 30_000, timeoutMs: 120_000 });
  try {
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

/** Ring all-reduce time and bus bandwidth beside Gloo's, N = 2 and 4, on loopback. */
export async function allreduceBench(segmentBytes: number): Promise<string> {
  const gloo = `${peersDir()}gloo_allreduce.py`;
  const out: string[] = [];
  const ceiling = await iperf();
  for (const n of [2, 4]) {
    const ours = await ringtrain(n, segmentBytes);
    const peer = existsSync(gloo) ? runPeer(gloo, ['--workers', String(n), '--sizes', SIZES.join(',')]) : null;
    const rows = ours.map((r) => {
      const g = peer?.find((p) => p.bytes === r.bytes) as { ms: number; busbw_MBps: number } | undefined;
      return [
        r.bytes >= 1 << 20 ? `${r.bytes >> 20} MiB` : `${r.bytes >> 10} KiB`,
        fmt(r.ms, 3),
        fmt(r.busbw, 0),
        fmt(g?.ms, 3),
        fmt(g?.busbw_MBps, 0),
        fmt(r.busbw / (g?.busbw_MBps ?? NaN), 2),
        ceiling ? `${fmt((100 * r.busbw) / ceiling, 0)}%` : 'n/a',
      ];
    });
    out.push(`N = ${n}\n${table(['size', 'ringtrain ms', 'busbw MB/s', 'gloo ms', 'gloo busbw MB/s', 'ratio', 'of iperf3'], rows)}`);
  }
  return `Ring all-reduce on loopback, float32, median of 20 (segment ${segmentBytes >> 10} KiB); busbw = bytes/time · 2(N−1)/N\n${out.join('\n\n')}\niperf3 loopback, one stream: ${ceiling ? `${fmt(ceiling, 0)} MB/s` : 'n/a (apt-get install iperf3)'}`;
}

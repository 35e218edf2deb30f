import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Best rate (ops/s) of `fn` over about `seconds`, with repetitions batched so timer cost vanishes. */
export function bestRate(fn: () => void, ops: number, seconds: number): number {
  fn();
  let reps = 1;
  let best = Infinity;
  const deadline = performance.now() + seconds * 1000;
  while (performance.now() < deadline) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    const dt = (performance.now() - t0) / 1000 / reps;
    best = Math.min(best, dt);
    if (dt * reps < 0.01) reps *= 2;
  }
  return ops / best;
}

export const PYTHON = process.env.RINGTRAIN_BENCH_PYTHON ?? '/usr/bin/python3';

/** Runs a peer script; returns its JSON lines, or null (with the reason on stderr) when it cannot run. */
export function runPeer(script: string, args: string[], timeoutMs = 600_000, env: Record<string, string> = {}): Record<string, unknown>[] | null {
  const r = spawnSync(PYTHON, [script, ...args], { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, OMP_NUM_THREADS: '1', OPENBLAS_NUM_THREADS: '1', ...env } });
  if (r.status !== 0) {
    process.stderr.write(`peer ${script} failed (${r.error?.message ?? `exit ${r.status}`}): ${r.stderr.split('\n').slice(-3).join(' ')}\n`);
    return null;
  }
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

export const fmt = (x: number | undefined, digits = 1): string => (x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(digits));

/** Peak resident memory (VmHWM, MB) of every process whose parent is `pid`, polled until it exits. */
export async function childrenPeakRss(pid: number, done: Promise<unknown>): Promise<Map<number, number>> {
  const peaks = new Map<number, number>();
  let running = true;
  void done.then(() => (running = false));
  while (running) {
    for (const p of readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
      try {
        const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) !== pid) continue;
        const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
        if (hwm) peaks.set(Number(p), Math.max(peaks.get(Number(p)) ?? 0, Number(hwm[1]) / 1024));
      } catch {
        // the process ended between the listing and the read
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return peaks;
}

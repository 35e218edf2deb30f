// Start-up: `ringtrain launch --workers N` to its first training step, beside PyTorch DDP's N fresh
// worker processes (as torchrun starts them) to theirs, alternating; and `--version` / `--help`.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { loadEmbeddedMnist, writeIdxFolder } from '@ringtrain/data';
import { PYTHON } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));
const peer = fileURLToPath(new URL('../peers/torch_ddp_startup.py', import.meta.url));
const GOAL_S = 1.5;
const DEADLINE_MS = 120_000;

/** CPU seconds (user + system) of `root` and every process below it, from /proc. */
function treeCpuSeconds(root: number): number {
  const tick = 100; // USER_HZ
  const procs = new Map<number, { ppid: number; cpu: number }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      procs.set(Number(name), { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / tick });
    } catch {
      // exited meanwhile
    }
  }
  let sum = 0;
  const todo = [root];
  while (todo.length) {
    const pid = todo.pop()!;
    sum += procs.get(pid)?.cpu ?? 0;
    for (const [child, p] of procs) if (p.ppid === pid) todo.push(child);
  }
  return sum;
}

/** One launch of `main` to its first step: seconds from the spawn, and the CPU its processes had used by then. */
async function launchToFirstStep(main: string, workers: number, dir: string): Promise<{ seconds: number; cpu: number }> {
  const log = join(dir, `steps-${process.pid}.jsonl`);
  rmSync(log, { force: true });
  const t0 = Date.now();
  const child = spawn(process.execPath, [main, 'launch', '--workers', String(workers), '--epochs', '1'], {
    stdio: 'ignore',
    env: { ...process.env, RINGTRAIN_STEP_LOG: log, RINGTRAIN_LOG_LEVEL: 'warn' },
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    for (;;) {
      const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
      if (text.includes('\n')) {
        const cpu = treeCpuSeconds(child.pid!);
        return { seconds: ((JSON.parse(text.slice(0, text.indexOf('\n'))) as { time: number }).time - t0) / 1000, cpu };
      }
      if (child.exitCode !== null || Date.now() - t0 > DEADLINE_MS) throw new Error(`${main} launch --workers ${workers}: no first step (exit ${child.exitCode})`);
      await sleep(5);
    }
  } finally {
    child.kill('SIGINT');
    await exited;
  }
}

/** PyTorch DDP: seconds from starting its launcher to every rank's first step, or null when it cannot run. */
async function ddpToFirstStep(workers: number, data: string): Promise<number | null> {
  const t0 = Date.now();
  const r = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(PYTHON, [peer, '--workers', String(workers), '--data', data], { env: { ...process.env, OMP_NUM_THREADS: '1' } });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (err += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out, err });
    });
  });
  const line = r.out.split('\n').find((l) => l.startsWith('{'));
  if (r.code !== 0 || !line) {
    process.stderr.write(`peer ${peer} failed (exit ${r.code}): ${r.err.split('\n').slice(-3).join(' ')}\n`);
    return null;
  }
  return ((JSON.parse(line) as { first_step_ms: number }).first_step_ms - t0) / 1000;
}

/** Seconds a CLI invocation takes, start to exit. */
function timed(main: string, args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [main, ...args], { stdio: 'ignore' });
  if (r.status !== 0) throw new Error(`${main} ${args.join(' ')}: exit ${r.status}`);
  return (performance.now() - t0) / 1000;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const span = (xs: number[], digits = 2): string => (xs.length ? `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})` : 'n/a');

/**
 * `launch --workers N` (N = 1, 2, 4) to the first step in its step log, on the embedded MNIST, `runs`
 * times each, alternating with PyTorch DDP on the same digits (and with `baseline`, another build's
 * apps/cli/dist/main.js, when given); then `--version` and `--help`.
 */
export async function startupBench(runs: number, baseline?: string): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'ringtrain-startup-'));
  const data = join(dir, 'mnist');
  writeIdxFolder(data, loadEmbeddedMnist());
  const builds = baseline ? [['ringtrain', cli], ['baseline', baseline]] : [['ringtrain', cli]];
  const rows: string[] = [];
  try {
    for (const workers of [1, 2, 4]) {
      const ours = new Map<string, { seconds: number[]; cpu: number[] }>(builds.map(([name]) => [name, { seconds: [], cpu: [] }]));
      const ddp: number[] = [];
      for (let r = 0; r < runs; r++) {
        for (const [name, main] of builds) {
          const m = await launchToFirstStep(main, workers, dir);
          ours.get(name)!.seconds.push(m.seconds);
          ours.get(name)!.cpu.push(m.cpu);
        }
        const d = await ddpToFirstStep(workers, data);
        if (d !== null) ddp.push(d);
      }
      const mine = ours.get('ringtrain')!;
      const base = ours.get('baseline');
      const ratio = ddp.length ? (median(ddp) / median(mine.seconds)).toFixed(2) : 'n/a';
      rows.push(`| ${workers} | ${span(mine.seconds)} | ${span(mine.cpu)} |${base ? ` ${span(base.seconds)} | ${span(base.cpu)} |` : ''} ${span(ddp)} | ${ratio} |${workers === 4 ? ` ${median(mine.seconds) <= GOAL_S ? 'met' : 'not met'} (≤ ${GOAL_S} s) |` : ' |'}`);
    }
    const version = Array.from({ length: runs }, () => timed(cli, ['--version']));
    const help = Array.from({ length: runs }, () => timed(cli, ['--help']));
    const head = `| N | ringtrain: s to first step | its CPU s |${baseline ? ' baseline: s | its CPU s |' : ''} PyTorch DDP: s to first step | DDP ÷ ringtrain | goal |`;
    const rule = `|---|---|---|${baseline ? '---|---|' : ''}---|---|---|`;
    return [
      `Start-up: launch --workers N --epochs 1 to its first step (embedded MNIST, MLP 784-128-10), median (range) of ${runs} alternating runs; PyTorch DDP: N fresh interpreters, gloo, to every rank's first step`,
      head,
      rule,
      ...rows,
      `ringtrain --version ${span(version)} s, --help ${span(help)} s (goal ≤ 0.15 s: ${median(version) <= 0.15 && median(help) <= 0.15 ? 'met' : 'not met'})`,
    ].join('\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

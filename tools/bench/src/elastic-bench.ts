import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { table } from '@ringtrain/cli';
import { fmt } from './measure.js';

const cli = fileURLToPath(new URL('../../../apps/cli/dist/main.js', import.meta.url));

/** A ringtrain process and its JSON log lines. */
interface Proc {
  child: ChildProcess;
  lines: Record<string, unknown>[];
  stdout: string;
  exited: Promise<number | null>;
}

function start(main: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [main, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RINGTRAIN_LOG_LEVEL: 'info', ...env } });
  const p: Proc = { child, lines: [], stdout: '', exited: new Promise((r) => child.once('exit', (c) => r(c))) };
  child.stdout!.on('data', (d: Buffer) => (p.stdout += d));
  let partial = '';
  child.stderr!.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) if (l.startsWith('{')) p.lines.push(JSON.parse(l));
  });
  return p;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const changes = (p: Proc) => p.lines.filter((l) => typeof l.cause === 'string' && typeof l.recoveryMs === 'number');
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const range = (xs: number[]): string => (xs.length ? `${fmt(median(xs), 0)} (${fmt(Math.min(...xs), 0)}–${fmt(Math.max(...xs), 0)})` : 'n/a');

interface FaultTimes {
  /** From the fault to the coordinator seeing it, to training again, and to the next completed step (ms). */
  seen: number;
  training: number;
  nextStep: number;
}

/** Kills (or stops) one worker of `launch --workers <spec>` in the second epoch, and times what follows. */
async function faultCost(spec: string, signal: 'SIGKILL' | 'SIGSTOP'): Promise<FaultTimes> {
  const log = join(mkdtempSync(join(tmpdir(), 'ringtrain-elastic-bench-')), 'steps.jsonl');
  const run = start(cli, ['launch', '--workers', spec, '--epochs', '4', '--json'], { RINGTRAIN_WORKER_LOG_LEVEL: 'info', RINGTRAIN_STEP_LOG: log });
  try {
    await until(() => run.lines.some((l) => String(l.msg).startsWith('epoch 1/')), 60_000, 'the first epoch');
    const victim = run.lines.find((l) => l.rank === 1 && /^rank 1 of \d+/.test(String(l.msg)))!.pid as number;
    const at = Date.now();
    process.kill(victim, signal);
    await until(() => changes(run).length > 0, 30_000, 'training again');
    if (signal === 'SIGSTOP') {
      try {
        process.kill(victim, 'SIGCONT');
      } catch {
        // launch has ended it already
      }
    }
    const change = changes(run)[0];
    const trainingAt = change.time as number;
    await new Promise((r) => setTimeout(r, 300));
    const after = readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { time: number })
      .filter((e) => e.time >= trainingAt);
    return { seen: trainingAt - (change.recoveryMs as number) - at, training: trainingAt - at, nextStep: Math.min(...after.map((e) => e.time)) - at };
  } finally {
    run.child.kill('SIGINT');
    await run.exited;
  }
}

/** `--workers 2:4` with 2 workers, then a third by hand: from its hello to training, and the regroup alone. */
async function joinCost(): Promise<{ total: number; regroup: number }> {
  const coord = start(cli, ['coordinator', '--workers', '2:4', '--host', '127.0.0.1', '--port', '0', '--token', 'b', '--epochs', '6']);
  const workers: Proc[] = [];
  try {
    await until(() => coord.lines.some((l) => typeof l.address === 'string'), 20_000, 'the coordinator');
    const address = coord.lines.find((l) => typeof l.address === 'string')!.address as string;
    for (let i = 0; i < 2; i++) workers.push(start(cli, ['worker', '--coordinator', address, '--token', 'b'], { RINGTRAIN_FAULT_DELAY_MS: '0:10' }));
    await until(() => coord.lines.some((l) => String(l.msg).startsWith('epoch 1/')), 60_000, 'the first epoch');
    workers.push(start(cli, ['worker', '--coordinator', address, '--token', 'b'], { RINGTRAIN_FAULT_DELAY_MS: '0:10' }));
    await until(() => changes(coord).some((c) => c.cause === 'join'), 60_000, 'the join');
    // The third hello (a worker re-executes itself, so its pid is not the one spawned here).
    const hello = coord.lines.filter((l) => String(l.msg).includes(' joined ('))[2].time as number;
    const join = changes(coord).find((c) => c.cause === 'join')!;
    return { total: (join.time as number) - hello, regroup: join.recoveryMs as number };
  } finally {
    coord.child.kill('SIGINT');
    for (const w of workers) w.child.kill('SIGKILL');
    await coord.exited;
  }
}

/** Samples/s of `launch --workers 4` on the embedded MNIST, 15 epochs, with one build of the CLI. */
async function pace(main: string): Promise<number> {
  const run = start(main, ['launch', '--workers', '4', '--json'], { RINGTRAIN_LOG_LEVEL: 'warn' });
  if ((await run.exited) !== 0) throw new Error(`launch failed with ${main}`);
  return (JSON.parse(run.stdout.trim()) as { samplesPerSecond: number }).samplesPerSecond;
}

/**
 * What elasticity costs: a fault (kill or hang → training again), a join (hello → training), and the
 * steady-state pace beside another build (`--baseline path/to/apps/cli/dist/main.js`, e.g. the
 * commit before elastic membership), alternating the two in the same run.
 */
export async function elasticBench(runs: number, baseline?: string): Promise<string> {
  const out: string[] = [];
  const rows: string[][] = [];
  for (const [spec, signal, what] of [
    ['3:4', 'SIGKILL', 'SIGKILL, survivors go on (3:4)'],
    ['4', 'SIGKILL', 'SIGKILL, waits for the replacement (4:4)'],
    ['3:4', 'SIGSTOP', 'SIGSTOP (hang), survivors go on (3:4)'],
  ] as const) {
    const times: FaultTimes[] = [];
    for (let i = 0; i < runs; i++) times.push(await faultCost(spec, signal));
    rows.push([what, range(times.map((t) => t.seen)), range(times.map((t) => t.training)), range(times.map((t) => t.nextStep))]);
  }
  out.push(
    `Fault cost: ms from the fault (median (min–max) of ${runs}), launch, embedded MNIST (a step takes ~5 ms here)\n` +
      table(['fault', 'seen by the coordinator', 'training again', 'next step completed'], rows),
  );
  const joins: { total: number; regroup: number }[] = [];
  for (let i = 0; i < runs; i++) joins.push(await joinCost());
  out.push(
    `Join cost: a third worker joins a 2:4 run (median (min–max) of ${runs}, ms)\n` +
      table(
        ['from', 'ms'],
        [
          ['its hello to training (start-up, data, replica, regroup, state sync)', range(joins.map((j) => j.total))],
          ['prepared to training (the regroup and the state sync)', range(joins.map((j) => j.regroup))],
        ],
      ),
  );
  if (baseline) {
    const ours: number[] = [];
    const theirs: number[] = [];
    for (let i = 0; i < runs; i++) {
      theirs.push(await pace(baseline));
      ours.push(await pace(cli));
    }
    out.push(
      `Steady-state pace, launch --workers 4, embedded MNIST, 15 epochs (samples/s, median (min–max) of ${runs}, alternating)\n` +
        table(['build', 'samples/s'], [
          ['this build', range(ours)],
          ['baseline', range(theirs)],
          ['ratio (medians)', fmt(median(ours) / median(theirs), 2)],
        ]),
    );
  }
  return out.join('\n\n');
}

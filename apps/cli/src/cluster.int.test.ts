import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors } from '@ringtrain/checkpoint';
import { DEFAULT_JOB, parseJobConfig, Trainer } from '@ringtrain/trainer';
import { afterEach, describe, expect, it } from 'vitest';
import { alive, killStarted, type Run, startRingtrain, until } from './testing/run-process.js';
import { MLP_LEARNED } from './testing/learned.js';

afterEach(killStarted);
const ringtrain = startRingtrain;
const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));

/** Worker pids, from the coordinator's "joined" log lines (worker ids are host:pid). */
const workerPids = (run: Run): number[] => run.lines.filter((l) => typeof l.workerId === 'string' && String(l.msg).includes('joined')).map((l) => Number(String(l.workerId).split(':').pop()));

describe('ringtrain launch (real processes on loopback)', () => {
  it('4 workers train the MLP 784-128-10 on the embedded MNIST until it has learned', async () => {
    const run = ringtrain(['launch', '--workers', '4', '--json']);
    expect(await run.exited).toBe(0);
    const summary = JSON.parse(run.stdout.trim());
    expect(summary.worldSize).toBe(4);
    expect(summary.epochs).toHaveLength(15);
    expect(summary.epochs.at(-1).testSamples).toBe(2000);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    expect(summary.replicaChecks).toBeGreaterThanOrEqual(16);
    expect(summary.timing).toHaveLength(4);
    for (const pid of workerPids(run)) expect(alive(pid)).toBe(false);
  }, 120_000);

  describe('N workers with batch b take the same steps as one process with batch N·b', () => {
    const b = 16;
    const maxRel = (x: Float32Array, y: Float32Array): number => {
      let m = 0;
      for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]) / Math.max(1e-3, Math.abs(y[i])));
      return m;
    };
    for (const n of [1, 2, 4]) {
      it(`N = ${n}: ≤ 1e-5 after 1 step, ≤ 1e-3 after 30, replicas bit-identical at every step`, async () => {
        const dir = mkdtempSync(join(tmpdir(), 'ringtrain-eq-'));
        // Rounding differences grow with steps (measured 5e-7 after 1, 7e-5 after 50): 30 steps keep
        // the bound far from what any kernel's summation order gives.
        for (const steps of [1, 30]) {
          const file = join(dir, `n${n}-s${steps}.safetensors`);
          const run = ringtrain(['launch', '--workers', String(n), '--batch-size', String(b), '--max-steps', String(steps), '--verify-every', '1', '--save-final', file, '--json']);
          expect(await run.exited, run.stderr).toBe(0);
          // a replica check after every step, plus the initial and the final one
          expect(JSON.parse(run.stdout).replicaChecks).toBeGreaterThanOrEqual(steps + 2);
          const single = new Trainer(parseJobConfig({ ...DEFAULT_JOB, batchSize: n * b }));
          for (let s = 0; s < steps; s++) single.trainStep();
          const saved = readSafetensors(file);
          expect(saved.metadata.step).toBe(String(steps));
          const flat = new Float32Array(single.model.params.length);
          for (const t of saved.tensors) flat.set(t.data, single.model.params.info(t.name).offset);
          const rel = maxRel(flat, single.model.params.values);
          console.log(`N = ${n}, ${steps} step(s): max relative difference ${rel.toExponential(2)}`);
          expect(rel).toBeLessThanOrEqual(steps === 1 ? 1e-5 : 1e-3);
        }
      }, 60_000);
    }
  });

  it('with --max-restarts 0, a SIGKILLed worker ends the run within 5 s with an error naming the rank, no process left', async () => {
    const run = ringtrain(['launch', '--workers', '4', '--epochs', '500', '--max-restarts', '0'], { RINGTRAIN_WORKER_LOG_LEVEL: 'info' });
    await until(() => run.lines.some((l) => l.epoch === 1 && String(l.msg).startsWith('epoch')), 60_000, 'the second epoch', run);
    const pids = workerPids(run);
    expect(pids).toHaveLength(4);
    const victim = run.lines.find((l) => l.rank === 2 && String(l.msg).startsWith('rank 2 of 4'))!.pid as number;
    const killedAt = Date.now();
    process.kill(victim, 'SIGKILL');
    const code = await run.exited;
    const elapsed = Date.now() - killedAt;
    expect(code).toBe(1);
    expect(elapsed).toBeLessThan(5000);
    // The first word of the fault comes from the lost control connection or from a ring neighbour: both name rank 2.
    expect(run.stderr).toMatch(/ringtrain: ERR_RESTART_BUDGET: .*more than --max-restarts 0.*(rank 2 \(.*pid \d+.*\) (disconnected|lost)|peer rank 2 closed)/);
    await until(() => pids.every((p) => !alive(p)), 5000, 'all workers to exit');
    console.log(`launch exited ${elapsed} ms after the kill`);
  }, 90_000);

  it('Ctrl-C (SIGINT) stops every process cleanly with exit code 130', async () => {
    const run = ringtrain(['launch', '--workers', '2', '--epochs', '500']);
    await until(() => run.lines.some((l) => String(l.msg).startsWith('epoch 1/')), 60_000, 'the first epoch', run);
    const pids = workerPids(run);
    expect(pids).toHaveLength(2);
    run.proc.kill('SIGINT');
    expect(await run.exited).toBe(130);
    await until(() => pids.every((p) => !alive(p)), 5000, 'all workers to exit');
  }, 90_000);

  it('Ctrl-C on a terminal (SIGINT to the whole process group) is the same clean stop: a checkpoint, exit 130, no worker counted as failed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-ctrl-c-'));
    const log = join(dir, 'launch.log');
    // `script` gives the launch a real pseudo-terminal; Ctrl-C typed into it makes the terminal send
    // SIGINT to its foreground process group. The log goes to a file (JSON lines) to be read here.
    const command = `exec ${process.execPath} ${main} launch --workers 2 --epochs 500 --checkpoint-dir ${join(dir, 'ck')} 2>${log}`;
    const term = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'ignore', 'inherit'] });
    const exited = new Promise<number | null>((r) => term.once('exit', (code) => r(code)));
    const lines = (): Record<string, unknown>[] => (existsSync(log) ? readFileSync(log, 'utf8') : '').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
    try {
      await until(() => lines().some((l) => String(l.msg).startsWith('epoch 1/')), 60_000, 'the first epoch');
      const pids = lines().filter((l) => typeof l.workerId === 'string' && String(l.msg).includes('joined')).map((l) => Number(String(l.workerId).split(':').pop()));
      expect(pids).toHaveLength(2);
      term.stdin!.write('\x03');
      expect(await exited).toBe(130);
      const said = lines().map((l) => String(l.msg));
      expect(said.filter((m) => /ended \(|replacement|first failure|failed/.test(m)), said.join('\n')).toEqual([]);
      expect(said.some((m) => /interrupted \(SIGINT\)/.test(m)), said.join('\n')).toBe(true);
      expect(readdirSync(join(dir, 'ck')).filter((f) => f.endsWith('.safetensors')).length).toBeGreaterThan(0);
      await until(() => pids.every((p) => !alive(p)), 5000, 'all workers to exit');
    } finally {
      term.kill('SIGKILL');
    }
  }, 90_000);

  it('on a terminal, launch writes its log lines above the progress bar, whole, and they stay', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-terminal-'));
    const typescript = join(dir, 'screen');
    // `script` records everything written to the terminal, escape sequences included.
    const command = `exec ${process.execPath} ${main} launch --workers 2 --epochs 3 --checkpoint-dir ${join(dir, 'ck')}`;
    const term = spawn('script', ['-qfec', command, typescript], { stdio: ['pipe', 'ignore', 'inherit'] });
    expect(await new Promise((r) => term.once('exit', r))).toBe(0);
    const screen = renderTerminal(readFileSync(typescript, 'utf8'));
    const epochs = screen.filter((l) => / INFO: epoch \d\/3:/.test(l));
    expect(epochs, screen.join('\n')).toHaveLength(3);
    for (const l of epochs) expect(l).toMatch(/ INFO: epoch \d\/3: loss \d\.\d{4}, test \d+\.\d\d% on 2000 samples, \d+ samples\/s$/);
    expect(screen.filter((l) => / INFO: checkpoint at step \d+: .*\.safetensors \(training paused [\d.]+ ms to copy, written in \d+ ms\)$/.test(l)).length).toBeGreaterThanOrEqual(3);
    // No line holds a piece of the bar and a log line together.
    expect(screen.filter((l) => /[░█]/.test(l) && /INFO/.test(l))).toEqual([]);
  }, 90_000);
});

/**
 * What a terminal shows after `raw`: lines of text, with carriage returns, column moves (CSI G) and
 * erasures (CSI K) applied, and other escape sequences (colours, the cursor) dropped.
 */
function renderTerminal(raw: string): string[] {
  const lines: string[] = [];
  let line: string[] = [];
  let col = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === '\x1b') {
      const m = /^\x1b\[([?\d;]*)([A-Za-z])/.exec(raw.slice(i));
      if (!m) continue;
      i += m[0].length - 1;
      const n = Number(m[1] || 0);
      if (m[2] === 'G') col = Math.max(0, n - 1);
      if (m[2] === 'K') line = n === 2 ? [] : n === 1 ? line.map((x, j) => (j <= col ? ' ' : x)) : line.slice(0, col);
      continue;
    }
    if (c === '\r') col = 0;
    else if (c === '\n') {
      lines.push(line.join('').trimEnd());
      line = [];
      col = 0;
    } else line[col++] = c;
  }
  if (line.length) lines.push(line.join('').trimEnd());
  return lines;
}

describe('ringtrain coordinator + worker (separate processes)', () => {
  it('refuses a worker started with a different job config, and one with a wrong token', async () => {
    const coord = ringtrain(['coordinator', '--workers', '1', '--port', '0', '--host', '127.0.0.1', '--token', 'sesame']);
    await until(() => coord.lines.some((l) => typeof l.address === 'string'), 20_000, 'the coordinator', coord);
    const address = coord.lines.find((l) => typeof l.address === 'string')!.address as string;
    const other = ringtrain(['worker', '--coordinator', address, '--token', 'sesame', '--epochs', '3']);
    expect(await other.exited).toBe(1);
    expect(other.stderr).toMatch(/ERR_CONFIG_MISMATCH/);
    // The field that differs is named, with both values, not only two hashes.
    expect(other.stderr).toMatch(/it differs in epochs: 3 here, 15 there/);
    const intruder = ringtrain(['worker', '--coordinator', address, '--token', 'wrong']);
    expect(await intruder.exited).toBe(1);
    expect(intruder.stderr).toMatch(/refused the connection: 401/);
    const good = ringtrain(['worker', '--coordinator', address, '--token', 'sesame']);
    expect(await good.exited).toBe(0);
    expect(await coord.exited).toBe(0);
  }, 90_000);

  it('a coordinator whose workers never come fails with a clear rendezvous error', async () => {
    const coord = ringtrain(['coordinator', '--workers', '2', '--port', '0', '--host', '127.0.0.1'], { RINGTRAIN_JOIN_TIMEOUT_MS: '1000' });
    expect(await coord.exited).toBe(1);
    expect(coord.stderr).toMatch(/ERR_RENDEZVOUS: only 0 of 2 workers joined within 1000 ms/);
  }, 30_000);
});

import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** For the integration tests: `ringtrain` as a real process, its JSON log lines and its exit. */
export interface Run {
  proc: ChildProcess;
  lines: Record<string, unknown>[];
  stdout: string;
  stderr: string;
  exited: Promise<number | null>;
}

// From src/testing (vitest) and from dist/testing alike: the built CLI.
const main = fileURLToPath(new URL('../../dist/main.js', import.meta.url));
const running: ChildProcess[] = [];

/** Starts `ringtrain ...args` (the built CLI) with stdout and stderr captured. */
export function startRingtrain(args: string[], env: NodeJS.ProcessEnv = {}, cwd?: string): Run {
  const proc = spawn(process.execPath, [main, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd });
  running.push(proc);
  const run: Run = { proc, lines: [], stdout: '', stderr: '', exited: new Promise((r) => proc.once('exit', (code) => r(code))) };
  proc.stdout!.on('data', (d: Buffer) => (run.stdout += d));
  let partial = '';
  proc.stderr!.on('data', (d: Buffer) => {
    run.stderr += d;
    const text = partial + d.toString();
    const lines = text.split('\n');
    partial = lines.pop() ?? '';
    for (const l of lines) if (l.startsWith('{')) run.lines.push(JSON.parse(l));
  });
  return run;
}

/** Kills every process started here that is still running (call from afterEach). */
export function killStarted(): void {
  for (const p of running.splice(0)) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

/** Polls `cond` until it holds; fails after `ms`, or at once when `run` (if given) has exited. */
export async function until(cond: () => boolean, ms: number, what: string, run?: Run): Promise<void> {
  const end = Date.now() + ms;
  let exited = false;
  run?.exited.then(() => (exited = true));
  while (!cond()) {
    if (exited) throw new Error(`the process exited (code ${run!.proc.exitCode}) before ${what}; its stderr ends with:\n${run!.stderr.slice(-2000)}`);
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A port that was free a moment ago (for a coordinator that must come back on the same one). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

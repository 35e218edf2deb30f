import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { RING_NODE_FLAGS, ringProcessEnv } from '@ringtrain/allreduce/process-env';
import type { Logger } from 'pino';
import { OPTION_ENV } from './option-env.js';
import { childEnv } from './secrets.js';

/**
 * `launch`'s worker processes: N at the start, and a dead one respawned (with backoff, within the
 * restart budget), so that a local run heals itself. Each one's stderr passes through, and its last
 * lines are kept for the root-cause record.
 */
export class LocalWorkers {
  private readonly children = new Set<ChildProcess>();
  private readonly exits = new Map<number, { exit: string; stderr: string[] }>();
  private readonly tails = new Map<number, string[]>();
  private respawns = 0;
  private streak = 0;
  private lastDeath = 0;
  private stopping = false;
  private readonly main = fileURLToPath(new URL('./main.js', import.meta.url));

  private idle: (() => void) | null = null;
  private unreplaced = 0;
  private pending = 0;

  constructor(
    n: number,
    private readonly address: string,
    private readonly token: string | undefined,
    private readonly maxRespawns: number,
    private readonly log: Logger,
    private readonly workerArgs: string[] = [],
    /** Environment variables the workers do without (the rest of this process's passes on). */
    private readonly omitEnv: readonly string[] = [],
  ) {
    for (let i = 0; i < n; i++) this.spawn();
  }

  /** Resolves once no worker is left or about to be started: 0 when none ended unreplaced with an error, else 1. */
  whenIdle(): Promise<number> {
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.children.size === 0 && this.pending === 0) resolve(this.unreplaced ? 1 : 0);
      };
      this.idle = check;
      check();
    });
  }

  /** The last worker that ended with an error: how, and the error it logged (its last error line). */
  lastFailure(): string {
    const failed = [...this.exits.entries()].filter(([, e]) => e.exit !== 'exit code 0').at(-1);
    if (!failed) return 'no worker reported an error';
    const [pid, { exit, stderr }] = failed;
    const logged = stderr
      .map((l) => {
        try {
          return JSON.parse(l) as { level?: number; code?: string; msg?: string };
        } catch {
          return null;
        }
      })
      .filter((l) => l && (l.level ?? 0) >= 50)
      .at(-1);
    return `worker pid ${pid} ended (${exit})${logged ? `: ${logged.code ? `${logged.code}: ` : ''}${logged.msg}` : stderr.length ? `: ${stderr.at(-1)}` : ''}`;
  }

  /** How a worker process ended, and its last stderr lines (once it has exited). */
  describeExit(pid: number): { exit?: string; stderr?: string[] } | undefined {
    return this.exits.get(pid) ?? (this.tails.has(pid) ? { stderr: this.tails.get(pid) } : undefined);
  }

  private spawn(): void {
    // RINGTRAIN_NODE_ARGS passes flags such as --cpu-prof to every worker (profiling).
    const nodeArgs = (process.env.RINGTRAIN_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...RING_NODE_FLAGS, ...nodeArgs, this.main, 'worker', '--coordinator', this.address, ...this.workerArgs], {
      stdio: ['ignore', 'inherit', 'pipe'],
      // A process group of its own: Ctrl-C on a terminal signals the launch's group, and the launch
      // then stops its workers cleanly; a worker that got the SIGINT itself would die as a fault.
      detached: true,
      // Only the job token, and only in the environment: not the status or admin tokens, not on argv.
      env: { ...childEnv(ringProcessEnv(), { token: this.token }, [...OPTION_ENV, ...this.omitEnv]), RINGTRAIN_LOG_LEVEL: process.env.RINGTRAIN_WORKER_LOG_LEVEL ?? 'warn' },
    });
    this.children.add(child);
    const pid = child.pid ?? -1;
    const tail: string[] = [];
    this.tails.set(pid, tail);
    child.stderr?.on('data', (d: Buffer) => {
      process.stderr.write(d);
      tail.push(...d.toString().split('\n').filter(Boolean));
      if (tail.length > 20) tail.splice(0, tail.length - 20);
    });
    child.on('error', (err) => this.log.error(`a worker could not start: ${err.message}`));
    child.once('exit', (code, signal) => {
      this.children.delete(child);
      this.exits.set(pid, { exit: signal ? `signal ${signal}` : `exit code ${code}`, stderr: tail.slice(-10) });
      if (code === 0) this.runOver();
      if (this.stopping || code === 0) return this.idle?.();
      if (this.respawns >= this.maxRespawns) {
        this.unreplaced++;
        this.log.error(`worker pid ${pid} ended (${signal ?? `exit code ${code}`}); the restart budget of ${this.maxRespawns} is spent, so it is not replaced`);
        return this.idle?.();
      }
      // Backoff doubles for deaths in quick succession (a crash loop) and starts over after 10 quiet seconds.
      if (Date.now() - this.lastDeath > 10_000) this.streak = 0;
      this.lastDeath = Date.now();
      this.respawns++;
      const delay = Math.min(5000, 100 * 2 ** this.streak++);
      this.log.warn(`worker pid ${pid} ended (${signal ?? `exit code ${code}`}); starting a replacement in ${delay} ms (${this.respawns}/${this.maxRespawns})`);
      this.pending++;
      setTimeout(() => {
        this.pending--;
        if (!this.stopping) this.spawn();
        else this.idle?.();
      }, delay);
    });
  }

  /**
   * A worker finished (exit 0): the run is over, or it left. Nothing more is started; a worker still
   * there after 15 s (one that missed the end, dialling a coordinator that is gone) is asked to leave.
   */
  private runOver(): void {
    if (this.stopping) return;
    this.stopping = true;
    setTimeout(() => this.signal('SIGTERM'), 15_000).unref();
    setTimeout(() => this.signal('SIGKILL'), 25_000).unref();
  }

  /** Sends `signal` to every worker. */
  signal(signal: NodeJS.Signals): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill(signal);
  }

  /** Ends a worker the coordinator dropped (a hung one stays dropped; the exit brings a replacement). */
  end(pid: number): void {
    for (const c of this.children) if (c.pid === pid && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }

  /** Waits for the workers to exit; kills what is left after `ms`, so no process outlives the launch. */
  async stop(ms: number): Promise<void> {
    this.stopping = true;
    await Promise.all(
      [...this.children].map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const timer = setTimeout(() => c.kill('SIGKILL'), ms);
            c.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
          }),
      ),
    );
  }
}

import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { RING_NODE_FLAGS, ringProcessEnv } from '../process-env.js';

export interface RingEvent {
  rank: number;
  t: number;
  event: string;
  [key: string]: unknown;
}

/** N ring-process children on loopback, wired into a ring, with their events as they come. */
export class ProcessRing {
  readonly procs: ChildProcess[];
  readonly events: RingEvent[] = [];
  private waiters: (() => void)[] = [];

  private constructor(procs: ChildProcess[]) {
    this.procs = procs;
    procs.forEach((p) => {
      createInterface({ input: p.stdout! }).on('line', (line) => {
        if (!line.startsWith('{')) return;
        this.events.push(JSON.parse(line) as RingEvent);
        for (const w of this.waiters.splice(0)) w();
      });
      p.stderr!.on('data', (d: Buffer) => process.stderr.write(d));
    });
  }

  /** `env(rank)` adds to a member's environment. */
  static async start(world: number, options: object = {}, env: (rank: number) => NodeJS.ProcessEnv = () => ({})): Promise<ProcessRing> {
    // RINGTRAIN_NODE_ARGS passes flags such as --cpu-prof to every member (profiling).
    const nodeArgs = (process.env.RINGTRAIN_NODE_ARGS ?? '').split(' ').filter(Boolean);
    const script = fileURLToPath(new URL('../../dist/testing/ring-process.js', import.meta.url));
    const procs = Array.from({ length: world }, (_, r) => spawn(process.execPath, [...RING_NODE_FLAGS, ...nodeArgs, script, String(r), String(world), JSON.stringify(options)], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...ringProcessEnv(), ...env(r) } }));
    const ring = new ProcessRing(procs);
    const listening = await ring.waitAll('listening', 15_000);
    listening.sort((a, b) => a.rank - b.rank);
    procs.forEach((p, r) => p.stdin!.write(`${JSON.stringify({ prev: listening[(r - 1 + world) % world].address })}\n`));
    await ring.waitAll('connected', 15_000);
    return ring;
  }

  send(rank: number, msg: object): void {
    this.procs[rank].stdin!.write(`${JSON.stringify(msg)}\n`);
  }

  broadcast(msg: object): void {
    this.procs.forEach((_, r) => this.send(r, msg));
  }

  /** Waits until `count` events of a kind (or one per live process) have arrived. */
  async waitAll(event: string, timeoutMs: number, count = this.procs.length): Promise<RingEvent[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.events.filter((e) => e.event === event);
      if (got.length >= count) return got;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${count} "${event}" events; have ${JSON.stringify(this.events.slice(-8))}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Kills every child and waits for them to exit. */
  async stop(): Promise<void> {
    await Promise.all(
      this.procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve();
            p.once('exit', () => resolve());
            p.kill('SIGKILL');
          }),
      ),
    );
  }
}

import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { alive, freePort, killStarted, type Run, startRingtrain, until } from './testing/run-process.js';
import { checkTrajectory, readStepLog } from './testing/step-log.js';
import { MLP_LEARNED } from './testing/learned.js';

afterEach(killStarted);

/** The live child processes of `pid` (from /proc). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const trainsAgain = (runs: Run[]): Record<string, unknown>[] => runs.flatMap((r) => r.lines).filter((l) => typeof l.cause === 'string' && typeof l.recoveryMs === 'number');

describe('chaos (real processes)', () => {
  // 4 workers (3:4, so the survivors go on while a replacement starts) under `launch` supervising
  // them, and a coordinator that is killed once and restarted. A fault may cost the step in flight
  // and the time to regroup; nothing else: every step is taken once, every sample used once.
  it('10 SIGKILLs, a 5 s SIGSTOP and a coordinator restart: the run finishes and has learned, every step and sample once, no orphan', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-chaos-'));
    const log = join(dir, 'steps.jsonl');
    const port = await freePort();
    const url = `ws://127.0.0.1:${port}`;
    const coordArgs = ['coordinator', '--workers', '3:4', '--host', '127.0.0.1', '--port', String(port), '--token', 'chaos', '--max-restarts', '40', '--json'];
    const coordinators: Run[] = [startRingtrain(coordArgs)];
    const workers = startRingtrain(
      ['launch', '--workers', '4', '--coordinator', url, '--token', 'chaos', '--max-restarts', '40'],
      // Rank 0 sleeps 90 ms a step, so that the 465 steps last about 45 s: time for every fault to land mid-run.
    { RINGTRAIN_STEP_LOG: log, RINGTRAIN_WORKER_LOG_LEVEL: 'info', RINGTRAIN_FAULT_DELAY_MS: '0:90' });
    const coord = (): Run => coordinators.at(-1)!;
    const seen = new Set<number>();
    const stepNow = (): number => readStepLog(log).at(-1)?.step ?? 0;
    await until(() => coord().lines.some((l) => String(l.msg).startsWith('epoch 1/')), 60_000, 'the first epoch', coord());
    // A member of the ring now training (not a replacement still loading: that is no membership change).
    const pick = (): number => {
      childrenOf(workers.proc.pid!).forEach((k) => seen.add(k));
      const ring = coordinators.flatMap((r) => r.lines).filter((l) => Array.isArray(l.ring)).at(-1)!.ring as string[];
      const pids = ring.map((id) => Number(id.split(':').pop())).filter((p) => alive(p));
      return pids[Math.floor(Math.random() * pids.length)];
    };
    const faults: string[] = [];
    const killedAt: number[] = [];
    const faultChanges = (): number => trainsAgain(coordinators).filter((l) => l.cause === 'fault').length;
    /** Waits until the fault has been turned into a new generation that trains, then a moment more. */
    const worldSize = (): number => (trainsAgain(coordinators).at(-1)?.worldSize as number | undefined) ?? 4;
    // Faults come one at a time: the next once the replacement has joined (the ring is whole).
    const whole = (what: string): Promise<void> => until(() => worldSize() === 4 || coord().proc.exitCode !== null, 30_000, `the ring whole again after ${what}`, coord());
    const recovered = async (seen: number, what: string, wait = true): Promise<void> => {
      await until(() => faultChanges() > seen || coord().proc.exitCode !== null, 30_000, what, coord());
      if (wait) await whole(what);
      await sleep(200 + Math.random() * 500);
    };
    for (let i = 0; i < 10; i++) {
      if (i === 5) {
        // The coordinator dies and comes back on the same address: the workers re-adopt it.
        coord().proc.kill('SIGKILL');
        await coord().exited;
        await sleep(1000);
        coordinators.push(startRingtrain(coordArgs));
        faults.push(`coordinator killed at step ${stepNow()}`);
        await until(() => coord().lines.some((l) => String(l.msg).includes('re-adopting run')), 30_000, 'the run re-adopted', coord());
        await until(() => coord().lines.some((l) => String(l.msg).startsWith('all ') && String(l.msg).includes('training')), 30_000, 'training again', coord());
        await sleep(300);
      }
      if (i === 3) {
        const seen = faultChanges();
        const victim = pick();
        const stoppedAt = Date.now();
        process.kill(victim, 'SIGSTOP');
        faults.push(`SIGSTOP ${victim} at step ${stepNow()}`);
        await recovered(seen, 'training after the hang', false);
        await sleep(Math.max(0, 5000 - (Date.now() - stoppedAt)));
        process.kill(victim, 'SIGCONT');
        await whole('the hung worker woke'); // it finds itself dropped, dials again and rejoins
      }
      const seen = faultChanges();
      const victim = pick();
      killedAt.push(Date.now());
      process.kill(victim, 'SIGKILL');
      faults.push(`SIGKILL ${victim} at step ${stepNow()}`);
      await recovered(seen, `training after fault ${i + 1}`);
      if (coord().proc.exitCode !== null) break;
    }
    console.log(faults.join('\n'));
    expect(faults.filter((f) => f.startsWith('SIGKILL'))).toHaveLength(10);
    // Every wait has a deadline: the run ends, then the supervised workers within 30 s of it.
    await until(() => coord().proc.exitCode !== null, 90_000, 'the coordinator to finish the run', coord());
    expect(coord().proc.exitCode, coord().stderr.slice(-3000)).toBe(0);
    await until(() => workers.proc.exitCode !== null, 30_000, `the supervised workers to exit (alive: ${childrenOf(workers.proc.pid!).join(', ')})`);
    expect(workers.proc.exitCode, workers.stderr.slice(-3000)).toBe(0);

    const summary = JSON.parse(coord().stdout.trim());
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    // Every planned step once in the trajectory, at its place in the data order, its slices disjoint.
    const trajectory = checkTrajectory(readStepLog(log), 465, 31, 256);
    console.log(`trajectory: ${JSON.stringify(trajectory)}`);
    expect(trajectory.complete).toBeGreaterThan(430);
    // What each fault cost, from the coordinators' records.
    const costs = trainsAgain(coordinators).map((l) => ({ cause: l.cause, ms: l.recoveryMs as number }));
    const faultCosts = costs.filter((c) => c.cause === 'fault').map((c) => c.ms);
    console.log(`membership changes: ${JSON.stringify(costs)}; fault cost max ${Math.max(...faultCosts)} ms`);
    expect(faultCosts.length).toBeGreaterThanOrEqual(10);
    // From each kill to training again (the coordinator's log time): the step in flight plus at most 2 s.
    const trainingAt = trainsAgain(coordinators).filter((l) => l.cause === 'fault').map((l) => l.time as number);
    const killCosts = killedAt.map((t) => Math.min(...trainingAt.filter((x) => x > t)) - t);
    console.log(`kill → training again: ${killCosts.join(', ')} ms`);
    for (const ms of killCosts) expect(ms).toBeLessThan(2000 + 200);
    // No orphan: every worker process that took part has exited.
    expect(seen.size).toBeGreaterThanOrEqual(4);
    await until(() => [...seen].every((p) => !alive(p)), 10_000, 'all workers to exit');
  }, 240_000);
});

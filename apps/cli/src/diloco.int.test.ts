// DiLoCo in real clusters: convergence with identical replicas at every round's end, checkpoints
// at sync points that resume bit for bit, and a worker lost in the middle of a round.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';
import { MLP_LEARNED } from './testing/learned.js';

afterEach(killStarted);
const dir = mkdtempSync(join(tmpdir(), 'ringtrain-diloco-'));
const config = join(dir, 'diloco.json');
writeFileSync(config, JSON.stringify({ sync: { type: 'diloco', innerSteps: 8 } }));

async function launch(args: string[], env: Record<string, string> = {}) {
  const run = startRingtrain(['launch', '--config', config, '--json', ...args], env);
  expect(await run.exited, run.stderr.slice(-3000)).toBe(0);
  return { summary: JSON.parse(run.stdout.trim().split('\n').at(-1)!), run };
}

describe('DiLoCo (real processes)', () => {
  it('H = 8 with 4 workers learns the embedded MNIST; the replicas are bit-identical at every round end', async () => {
    const { summary, run } = await launch(['--workers', '4', '--verify-every', '8']);
    expect(run.stderr).toContain('DiLoCo: 8 local steps a round, outer Nesterov lr 0.7 momentum 0.9');
    // Every 8 steps and at each epoch end (which closes a round): a difference in any bit stops the run.
    expect(summary.replicaChecks).toBeGreaterThanOrEqual(Math.floor(summary.steps / 8));
    console.log(`DiLoCo H = 8, 4 workers: ${(100 * summary.epochs.at(-1).testAccuracy).toFixed(2)}%`);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
  }, 120_000);

  it('checkpoints wait for a round end (they carry the outer velocity); resuming from one ends bit-identical to the uninterrupted run', async () => {
    const ckpts = join(dir, 'ckpts');
    const full = await launch(['--workers', '2', '--epochs', '3', '--checkpoint-dir', ckpts, '--save-every', '20', '--keep-last', '20']);
    // 62 steps an epoch; rounds of 8 restart at each epoch end (8, 16 … 56, 62, 70 … 118, 124,
    // 132 …). Saves due at 20, 40, 60 … land on the next round end; epoch ends save too.
    const steps = full.summary.checkpoints.map((c: { step: number }) => c.step);
    expect(steps).toEqual([24, 40, 62, 86, 102, 124, 140, 164, 180, 186]);
    for (const from of ['ckpt-step-0000000040.safetensors', 'ckpt-step-0000000086.safetensors']) {
      const resumed = await launch(['--workers', '2', '--resume', join(ckpts, from)]);
      expect(resumed.summary.steps).toBe(186);
      expect(resumed.summary.weightsHash).toBe(full.summary.weightsHash);
    }
  }, 120_000);

  it('a worker killed in the middle of a round: every replica goes back to the round start, launch replaces it, the run finishes and has learned', async () => {
    // 31 steps an epoch at N = 4, rounds restart at each epoch end: epoch 3's start at 93 and 101, so step 100 is inside one.
    const { summary, run } = await launch(['--workers', '4', '--verify-every', '8'], { RINGTRAIN_FAULT_KILL: '2@100' });
    const changes = run.lines.filter((l) => typeof l.cause === 'string' && typeof l.recoveryMs === 'number');
    expect(changes).toEqual([expect.objectContaining({ cause: 'fault', fault: expect.objectContaining({ rank: 2, exit: 'signal SIGKILL' }) })]);
    // The survivors went back to the start of the round (not to step 100) and redid it.
    expect(changes[0].step).toBeLessThan(100);
    expect(summary.steps).toBe(465);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
  }, 120_000);
});

// Compressed gradients (fp16, bf16, int8 with error feedback) in real clusters: convergence,
// bit-identical replicas, and a worker lost in the middle of a compressed all-reduce.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';
import { MLP_LEARNED } from './testing/learned.js';

afterEach(killStarted);
const dir = mkdtempSync(join(tmpdir(), 'ringtrain-compression-'));

/**
 * `launch --workers 4` of the default job (MLP 784-128-10, embedded MNIST), replicas compared every
 * 5 steps, the ring over TCP: on one host it would share memory, where nothing is compressed.
 */
async function launch(args: string[], env: Record<string, string> = {}) {
  const run = startRingtrain(['launch', '--workers', '4', '--verify-every', '5', '--json', ...args], { RINGTRAIN_SHARED_MEMORY: '0', RINGTRAIN_LOG_LEVEL: 'info', ...env });
  expect(await run.exited, run.stderr.slice(-3000)).toBe(0);
  expect(run.stderr).toMatch(/ring of 4 over TCP, .*not shared memory: rank \d: RINGTRAIN_SHARED_MEMORY=0/);
  return { summary: JSON.parse(run.stdout.trim().split('\n').at(-1)!), run };
}

describe('gradient compression (real processes)', () => {
  for (const [wire, described] of [
    ['fp16', 'gradients as fp16'],
    ['bf16', 'gradients as bf16'],
    ['int8', 'gradients as int8 with error feedback'],
  ] as const) {
    it(`${wire}: 4 workers learn the embedded MNIST with replicas bit-identical at every check`, async () => {
      const { summary, run } = await launch(['--gradient-compression', wire]);
      expect(run.stderr).toContain(described);
      // A replica check every 5 steps and at each epoch end: any difference in the weights' bits stops the run.
      expect(summary.replicaChecks).toBeGreaterThanOrEqual(Math.floor(summary.steps / 5));
      console.log(`${wire}: ${(100 * summary.epochs.at(-1).testAccuracy).toFixed(2)}%`);
      expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
    }, 120_000);
  }

  it('int8 without error feedback, for comparison; a config may turn it off', async () => {
    const config = join(dir, 'int8-no-feedback.json');
    writeFileSync(config, JSON.stringify({ gradientCompression: { type: 'int8', errorFeedback: false } }));
    const { summary, run } = await launch(['--config', config]);
    expect(run.stderr).toMatch(/gradients as int8"/);
    console.log(`int8 without error feedback: ${(100 * summary.epochs.at(-1).testAccuracy).toFixed(2)}%`);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(0.9);
  }, 120_000);

  it('a worker killed inside a compressed all-reduce: the others abort the step, launch replaces it, the run finishes and has learned', async () => {
    // Rank 2 dies after its gradients, with the other three already in the int8 all-reduce.
    const { summary, run } = await launch(['--gradient-compression', 'int8'], { RINGTRAIN_FAULT_KILL: '2@100' });
    const changes = run.lines.filter((l) => typeof l.cause === 'string' && typeof l.recoveryMs === 'number');
    expect(changes).toEqual([expect.objectContaining({ cause: 'fault', step: 100, fault: expect.objectContaining({ rank: 2, exit: 'signal SIGKILL' }) })]);
    expect(summary.steps).toBe(465);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
  }, 120_000);
});

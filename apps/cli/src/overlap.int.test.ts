// Overlap in a real cluster over TCP: the gradient's top layers are all-reduced while the backward
// pass computes the ones below, in several collectives per step; replicas stay bit-identical, and
// a worker lost with ranges in flight costs only the step.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killStarted, startRingtrain } from './testing/run-process.js';
import { MLP_LEARNED } from './testing/learned.js';

afterEach(killStarted);

describe('overlap (real processes, TCP ring)', () => {
  it('3 workers, ranges of ≥ 4 KiB, int8 with error feedback; rank 1 killed with a range in flight: the run finishes and has learned, with every step once and replicas identical at every check', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ringtrain-overlap-'));
    const config = join(dir, 'job.json');
    // MLP 784-64-64-10: the top two layers (650 + 4160 floats) go as one range before the first layer's gradient exists.
    const layers = [{ type: 'dense', units: 64 }, { type: 'relu' }, { type: 'dense', units: 64 }, { type: 'relu' }, { type: 'dense', units: 10 }];
    writeFileSync(config, JSON.stringify({ model: { inputSize: 784, layers, loss: 'softmax_cross_entropy' }, bucketBytes: 4096, gradientCompression: 'int8', epochs: 3 }));
    const run = startRingtrain(['launch', '--workers', '3', '--config', config, '--verify-every', '5', '--json'], { RINGTRAIN_SHARED_MEMORY: '0', RINGTRAIN_LOG_LEVEL: 'info', RINGTRAIN_FAULT_KILL: '1@40' });
    expect(await run.exited, run.stderr.slice(-3000)).toBe(0);
    expect(run.stderr).toMatch(/ring of 3 over TCP, segments of \d+ KiB.*, gradients all-reduced in ranges of ≥ 4 KiB during the backward pass/);
    const summary = JSON.parse(run.stdout.trim().split('\n').at(-1)!);
    const changes = run.lines.filter((l) => typeof l.cause === 'string' && typeof l.recoveryMs === 'number');
    expect(changes).toEqual([expect.objectContaining({ cause: 'fault', step: 40, fault: expect.objectContaining({ rank: 1, exit: 'signal SIGKILL' }) })]);
    // 8,000 samples, a global batch of 192: 41 steps an epoch.
    expect(summary.steps).toBe(3 * 41);
    // Counted by the rank with the fewest: the replacement, which checks from step 40 on.
    expect(summary.replicaChecks).toBeGreaterThanOrEqual(Math.floor((summary.steps - 40) / 5));
    console.log(`overlap, int8: ${(100 * summary.epochs.at(-1).testAccuracy).toFixed(2)}%`);
    expect(summary.epochs.at(-1).testAccuracy).toBeGreaterThanOrEqual(MLP_LEARNED);
  }, 120_000);
});

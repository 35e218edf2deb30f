import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { RunRecord } from './run-record.js';
import { RunStats } from './run-stats.js';
import { StatusFeed } from './status-feed.js';
import { TEST_CONFIG } from './testing/running-feed.js';

const progress = (epoch: number, step: number) => ({ type: 'progress', v: 1, generation: 1, rank: 0, epoch, step, loss: 1, samples: 8, correct: 1, steps: 1, dataMs: 0, computeMs: 1, allreduceMs: 0, optimizerMs: 0, lr: 0.1, skipped: 0 }) as const;

describe('run record', () => {
  it("drops a report past the run's plan (a step near 2^53, an epoch past the last) instead of keying memory by it", () => {
    const logs: string[] = [];
    const stats = new RunStats(2, 1);
    stats.start(10);
    const feed = new StatusFeed({ runId: 'r', workers: 2, config: TEST_CONFIG, intervalMs: 60_000 });
    const record = new RunRecord(stats, feed, pino({ level: 'warn' }, new Writable({ write: (c, _e, done) => void (logs.push(String(c)), done()) })), 1, 1, 1, { progress: () => {}, epoch: () => {} });
    record.report(0, progress(0, 9e15), 2);
    record.report(0, progress(4e9, 5), 2);
    record.report(0, { type: 'evaluated', v: 1, generation: 1, rank: 0, epoch: 0, step: 2 ** 52, atEpochEnd: false, lossSum: 1, correct: 1, samples: 1 }, 2);
    expect(stats.step).toBe(0);
    expect(stats.epochs).toEqual([]);
    expect(logs.join('')).toMatch(/a progress report for epoch 0, step 9000000000000000, past the run's 1 epochs and 10 steps: dropped/);
    expect(logs.join('')).toMatch(/epoch 4000000000, step 5/);
    record.report(0, progress(0, 5), 2);
    expect(stats.step).toBe(5);
  });
});

import { describe, expect, it } from 'vitest';
import { RunStats } from './run-stats.js';

const progress = (rank: number, step: number, loss: number) =>
  ({ type: 'progress', v: 1, generation: 1, rank, epoch: 0, step, loss, samples: 64, correct: 1, steps: 10, dataMs: 0, computeMs: 0, allreduceMs: 0, optimizerMs: 0, lr: 0.1, skipped: 0 }) as const;
const evaluated = (rank: number, step = 20, atEpochEnd = true) => ({ type: 'evaluated', v: 1, generation: 1, rank, epoch: 0, step, atEpochEnd, lossSum: 1, correct: 1, samples: 2 }) as const;

describe('run statistics', () => {
  it("an epoch's training loss does not depend on the order in which the ranks' reports arrived", () => {
    // (0.1 + 0.2) + 0.3 and (0.2 + 0.3) + 0.1 differ in the last bit.
    const reports = [progress(0, 10, 0.1), progress(1, 10, 0.2), progress(2, 10, 0.3), progress(0, 20, 0.1), progress(1, 20, 0.2), progress(2, 20, 0.3)];
    const trainLoss = (order: number[]): number => {
      const stats = new RunStats(3, 1);
      for (const i of order) stats.addProgress(reports[i]);
      for (const r of [2, 0, 1]) stats.addEvaluation(evaluated(r));
      return stats.epochs[0].trainLoss;
    };
    // Each rank's own reports keep their order, as on a real connection; the ranks interleave.
    const inRankOrder = trainLoss([0, 1, 2, 3, 4, 5]);
    expect(trainLoss([1, 2, 0, 4, 5, 3])).toBe(inRankOrder);
    expect(trainLoss([2, 5, 1, 0, 3, 4])).toBe(inRankOrder);
    expect(inRankOrder).toBeCloseTo(0.2, 12);
  });

  it("an epoch's evaluation taken again after a fault (a later generation) does not replace the first", () => {
    const stats = new RunStats(2, 1);
    stats.addProgress(progress(0, 10, 0.5));
    expect([0, 1].map((r) => stats.addEvaluation(evaluated(r)) !== null)).toEqual([false, true]);
    const first = { ...stats.epochs[0] };
    const again = (rank: number) => ({ ...evaluated(rank), generation: 2, lossSum: 9, correct: 2 });
    expect([0, 1].map((r) => stats.addEvaluation(again(r), 2))).toEqual([null, null]);
    expect(stats.epochs[0]).toEqual(first);
  });

  it('evaluations within an epoch (evalEvery) are collected by step, give their figures once, and leave the epoch summary to its end', () => {
    const stats = new RunStats(2, 1);
    stats.addProgress(progress(0, 5, 0.5));
    stats.addProgress(progress(1, 5, 0.7));
    const at5 = (rank: number, lossSum: number) => ({ ...evaluated(rank, 5, false), lossSum });
    expect(stats.addEvaluation(at5(1, 3))).toBeNull();
    const figures = stats.addEvaluation(at5(0, 1));
    expect(figures).toMatchObject({ epoch: 0, step: 5, atEpochEnd: false, testLoss: 1, testAccuracy: 0.5, testSamples: 4 });
    expect(figures!.trainLoss).toBeCloseTo(0.6, 12); // the epoch's so far
    expect(stats.addEvaluation(at5(1, 3))).toBeNull(); // a share after the figures were given
    expect(stats.epochs).toEqual([]);
    // Another step's shares are another evaluation; the epoch's end fills the summary.
    expect([0, 1].map((r) => stats.addEvaluation(evaluated(r, 10)) !== null)).toEqual([false, true]);
    expect(stats.epochs[0].testLoss).toBe(0.5);
  });
});

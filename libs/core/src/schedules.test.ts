import { describe, expect, it } from 'vitest';
import { learningRate, parseScheduleConfig } from './schedules.js';

describe('learning-rate schedules', () => {
  it('constant, step and cosine, with linear warm-up', () => {
    expect(learningRate({ type: 'constant' }, 0.1, 1000)).toBe(0.1);
    const step = { type: 'step', stepSize: 10, gamma: 0.5 } as const;
    expect(learningRate(step, 0.1, 9)).toBe(0.1);
    expect(learningRate(step, 0.1, 10)).toBe(0.05);
    expect(learningRate(step, 0.1, 25)).toBe(0.025);
    const cos = { type: 'cosine', totalSteps: 100, minLr: 0.01 } as const;
    expect(learningRate(cos, 0.1, 0)).toBeCloseTo(0.1, 12);
    expect(learningRate(cos, 0.1, 50)).toBeCloseTo(0.055, 12);
    expect(learningRate(cos, 0.1, 100)).toBeCloseTo(0.01, 12);
    expect(learningRate(cos, 0.1, 500)).toBeCloseTo(0.01, 12);
    // Without totalSteps, cosine spans the run it is given (and cannot do without one).
    const run = { type: 'cosine' } as const;
    expect(learningRate(run, 0.1, 50, 200)).toBeCloseTo(0.05 * (1 + Math.cos(Math.PI / 4)), 12);
    expect(learningRate(run, 0.1, 200, 200)).toBeCloseTo(0, 12);
    expect(() => learningRate(run, 0.1, 5)).toThrow(/needs the run length/);
    const warm = { type: 'constant', warmupSteps: 4 } as const;
    [0.025, 0.05, 0.075, 0.1, 0.1].forEach((lr, s) => expect(learningRate(warm, 0.1, s)).toBeCloseTo(lr, 12));
  });

  it('rejects invalid settings naming the value', () => {
    expect(() => parseScheduleConfig({ type: 'step', stepSize: 0, gamma: 0.5 })).toThrow(/stepSize = 0/);
    expect(() => parseScheduleConfig({ type: 'cosine', totalSteps: 0 })).toThrow(/totalSteps/);
    expect(() => parseScheduleConfig({ type: 'linear' })).toThrow(/invalid schedule/);
  });
});

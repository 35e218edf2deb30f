import { z } from 'zod';
import { CoreError } from './errors.js';
import { describeIssues } from './validation.js';

const warmup = z.number().int().min(0).optional();

export const scheduleConfigSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('constant'), warmupSteps: warmup }),
  z.strictObject({ type: z.literal('step'), stepSize: z.number().int().positive(), gamma: z.number().positive().max(1), warmupSteps: warmup }),
  /** Without totalSteps, the decay spans the whole run (its epochs × steps per epoch). */
  z.strictObject({ type: z.literal('cosine'), totalSteps: z.number().int().positive().optional(), minLr: z.number().min(0).optional(), warmupSteps: warmup }),
]);

/** How the learning rate moves with the step; optional linear warm-up from 0 over `warmupSteps`. */
export type ScheduleConfig = z.infer<typeof scheduleConfigSchema>;

export function parseScheduleConfig(input: unknown): ScheduleConfig {
  const parsed = scheduleConfigSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_HYPERPARAM', `invalid schedule: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/**
 * Learning rate for 0-based `step`: a pure function, so a resumed run gets the same rates.
 * `runSteps` is the whole run's length, which a cosine schedule without totalSteps spans.
 */
export function learningRate(schedule: ScheduleConfig, baseLr: number, step: number, runSteps?: number): number {
  const warm = schedule.warmupSteps ?? 0;
  if (step < warm) return (baseLr * (step + 1)) / warm;
  const s = step - warm;
  switch (schedule.type) {
    case 'constant':
      return baseLr;
    case 'step':
      return baseLr * schedule.gamma ** Math.floor(s / schedule.stepSize);
    case 'cosine': {
      const min = schedule.minLr ?? 0;
      const total = schedule.totalSteps ?? runSteps;
      if (total === undefined) throw new CoreError('ERR_HYPERPARAM', 'a cosine schedule without totalSteps needs the run length');
      const span = Math.max(1, total - warm);
      const progress = Math.min(1, s / span);
      return min + 0.5 * (baseLr - min) * (1 + Math.cos(Math.PI * progress));
    }
  }
}

import { readFileSync } from 'node:fs';

/** One line of a worker's RINGTRAIN_STEP_LOG: a step this rank completed. */
export interface StepEntry {
  ring: string;
  generation: number;
  rank: number;
  step: number;
  epoch: number;
  cursor: number;
  start: number;
  count: number;
  pid: number;
  time: number;
}

export function readStepLog(file: string): StepEntry[] {
  return readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as StepEntry);
}

export interface Trajectory {
  /** Rings that steps were taken in. */
  rings: number;
  /** Steps also completed in an earlier ring by ranks that died right after. */
  redone: number;
  /** Steps whose slices, in the ring the run went on from, cover the whole global batch in the log. */
  complete: number;
}

/**
 * Checks a run's trajectory from the workers' step log: every step 0..total−1, at its place in the
 * data order (epoch and cursor), taken in one ring that the run went on from, its ranks' slices
 * disjoint. A step may also appear in an earlier ring, but only from ranks that never logged again:
 * a ring all-gather can finish on some ranks and not others, and when all of those die, the state
 * they held dies with them and the survivors take that step again. So each step counts once in the
 * weights, and each sample of an epoch once.
 */
export function checkTrajectory(entries: StepEntry[], total: number, stepsPerEpoch: number, globalBatch: number): Trajectory {
  const lastTime = new Map<number, number>();
  for (const e of entries) lastTime.set(e.pid, Math.max(lastTime.get(e.pid) ?? 0, e.time));
  const byStep = new Map<number, StepEntry[]>();
  for (const e of entries) byStep.set(e.step, [...(byStep.get(e.step) ?? []), e]);
  const steps = [...byStep.keys()].sort((a, b) => a - b);
  if (steps.length !== total || steps[0] !== 0 || steps.at(-1) !== total - 1) throw new Error(`steps taken: ${steps.length} (${steps[0]}..${steps.at(-1)}), planned ${total}`);
  const rings = new Set<string>();
  let redone = 0;
  let complete = 0;
  for (const [step, list] of byStep) {
    for (const e of list) {
      if (e.epoch !== Math.floor(step / stepsPerEpoch) || e.cursor !== (step % stepsPerEpoch) * globalBatch) {
        throw new Error(`step ${step} taken at epoch ${e.epoch}, cursor ${e.cursor}: not its place in the data order`);
      }
    }
    const byRing = new Map<string, StepEntry[]>();
    for (const e of list) byRing.set(e.ring, [...(byRing.get(e.ring) ?? []), e]);
    const ordered = [...byRing.entries()].sort((a, b) => Math.min(...a[1].map((e) => e.time)) - Math.min(...b[1].map((e) => e.time)));
    for (const [ring, group] of ordered.slice(0, -1)) {
      const alive = group.filter((e) => lastTime.get(e.pid) !== e.time);
      if (alive.length) throw new Error(`step ${step} taken twice: in ring ${ring} by pid ${alive[0].pid}, which went on, and again later`);
      redone++;
    }
    const [ring, kept] = ordered.at(-1)!;
    rings.add(ring);
    const slices = kept.map((e) => [e.start, e.start + e.count]).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < slices.length; i++) {
      if (slices[i][0] < slices[i - 1][1]) throw new Error(`step ${step}: slices [${slices[i - 1]}) and [${slices[i]}) overlap in ring ${ring}`);
    }
    if (slices[0][0] === 0 && slices.at(-1)![1] === globalBatch && slices.every((s, i) => i === 0 || s[0] === slices[i - 1][1])) complete++;
  }
  return { rings: rings.size, redone, complete };
}

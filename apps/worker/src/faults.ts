import { appendFileSync } from 'node:fs';

/**
 * Faults injected on purpose, for tests and drills of the monitoring (never set in production):
 *   RINGTRAIN_FAULT_NAN=<rank>@<step>        that rank's gradient gets a NaN at that step
 *   RINGTRAIN_FAULT_DELAY_MS=<rank>:<ms>     that rank sleeps this long in every step (a straggler)
 *   RINGTRAIN_FAULT_OVERFLOW=<step>          every rank's second gradient element gets 3e38 at that
 *                                            step: finite on each rank, their sum overflows
 *   RINGTRAIN_FAULT_KILL=<rank>@<step>       that rank's process dies by SIGKILL at that step of the
 *                                            first generation, after its gradients and before the
 *                                            all-reduce (a crash drill; later generations redo the
 *                                            step without dying again); rank * is every rank: no
 *                                            worker survives to hold the state
 *   RINGTRAIN_FAULT_KILL_EVAL=<rank>@<epoch> that rank's process dies by SIGKILL when it starts that
 *                                            epoch's evaluation in generation 1 (before it sends
 *                                            its share)
 *   RINGTRAIN_FAULT_DIVERGE=<rank>@<step>    that rank flips the lowest bit of its last weight after
 *                                            that step's update (a divergence drill: the next
 *                                            replica check must stop the run)
 *   RINGTRAIN_STEP_LOG=<file>                every rank appends one JSON line per completed step
 *                                            (ring, generation, rank, step, epoch, cursor, its slice,
 *                                            pid, time): the drills check that no sample is skipped
 *                                            or repeated
 */
export interface Faults {
  nanAt(rank: number, step: number): boolean;
  overflowAt(step: number): boolean;
  divergeAt(rank: number, step: number): boolean;
  delayMs(rank: number): number;
  /** Records a completed step (when RINGTRAIN_STEP_LOG is set). */
  logStep(entry: { ring: string; generation: number; rank: number; step: number; epoch: number; cursor: number; start: number; count: number }): void;
  /** Kills this process (SIGKILL) when it is `rank` at `step` of generation 1. */
  exitAt(rank: number, step: number, generation: number): void;
  /** Kills this process (SIGKILL) when it is `rank` evaluating `epoch` in generation 1. */
  exitInEvaluation(rank: number, epoch: number, generation: number): void;
}

export function faultsFromEnv(env: NodeJS.ProcessEnv = process.env): Faults {
  const nan = /^(\d+)@(\d+)$/.exec(env.RINGTRAIN_FAULT_NAN ?? '');
  const delay = /^(\d+):(\d+)$/.exec(env.RINGTRAIN_FAULT_DELAY_MS ?? '');
  const overflow = /^(\d+)$/.exec(env.RINGTRAIN_FAULT_OVERFLOW ?? '');
  const kill = /^(\d+|\*)@(\d+)$/.exec(env.RINGTRAIN_FAULT_KILL ?? '');
  const diverge = /^(\d+)@(\d+)$/.exec(env.RINGTRAIN_FAULT_DIVERGE ?? '');
  const killEval = /^(\d+)@(\d+)$/.exec(env.RINGTRAIN_FAULT_KILL_EVAL ?? '');
  const stepLog = env.RINGTRAIN_STEP_LOG;
  return {
    logStep: (entry) => {
      if (stepLog) appendFileSync(stepLog, `${JSON.stringify({ ...entry, pid: process.pid, time: Date.now() })}\n`);
    },
    nanAt: (rank, step) => nan !== null && Number(nan[1]) === rank && Number(nan[2]) === step,
    delayMs: (rank) => (delay !== null && Number(delay[1]) === rank ? Number(delay[2]) : 0),
    overflowAt: (step) => overflow !== null && Number(overflow[1]) === step,
    divergeAt: (rank, step) => diverge !== null && Number(diverge[1]) === rank && Number(diverge[2]) === step,
    exitAt: (rank, step, generation) => {
      if (kill !== null && generation === 1 && (kill[1] === '*' || Number(kill[1]) === rank) && Number(kill[2]) === step) process.kill(process.pid, 'SIGKILL');
    },
    exitInEvaluation: (rank, epoch, generation) => {
      if (killEval !== null && generation === 1 && Number(killEval[1]) === rank && Number(killEval[2]) === epoch) process.kill(process.pid, 'SIGKILL');
    },
  };
}

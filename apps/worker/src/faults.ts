/**
 * Faults injected on purpose, for tests and drills of the monitoring (never set in production):
 *   RINGTRAIN_FAULT_NAN=<rank>@<step>        that rank's gradient gets a NaN at that step
 *   RINGTRAIN_FAULT_DELAY_MS=<rank>:<ms>     that rank sleeps this long in every step (a straggler)
 *   RINGTRAIN_FAULT_OVERFLOW=<step>          every rank's last gradient element gets 3e38 at that
 *                                            step: finite on each rank, their sum overflows
 */
export interface Faults {
  nanAt(rank: number, step: number): boolean;
  overflowAt(step: number): boolean;
  delayMs(rank: number): number;
}

export function faultsFromEnv(env: NodeJS.ProcessEnv = process.env): Faults {
  const nan = /^(\d+)@(\d+)$/.exec(env.RINGTRAIN_FAULT_NAN ?? '');
  const delay = /^(\d+):(\d+)$/.exec(env.RINGTRAIN_FAULT_DELAY_MS ?? '');
  const overflow = /^(\d+)$/.exec(env.RINGTRAIN_FAULT_OVERFLOW ?? '');
  return {
    nanAt: (rank, step) => nan !== null && Number(nan[1]) === rank && Number(nan[2]) === step,
    delayMs: (rank) => (delay !== null && Number(delay[1]) === rank ? Number(delay[2]) : 0),
    overflowAt: (step) => overflow !== null && Number(overflow[1]) === step,
  };
}

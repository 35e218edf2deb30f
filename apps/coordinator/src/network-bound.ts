import type { Phases, RingProbe } from '@ringtrain/protocol';
import { gradientCompressionOf, type JobConfig } from '@ringtrain/trainer';

/**
 * Below this bus bandwidth (about 300 Mbit/s) a link, not memory or the CPU, sets the pace of a
 * ring. Set low on purpose: on one busy host a ring measures itself at 90–110 MB/s when it starts
 * (measured: two workers on two cores), and there compression does not help.
 */
export const SLOW_RING_MBPS = 40;

export interface NetworkBound {
  allreduceMs: number;
  stepMs: number;
}

/**
 * Whether the network bounds the steps: on every rank the all-reduce takes at least half the step
 * (a straggler makes the others wait, but not itself), over a ring that measured itself slow at the
 * start (on one host, a ring starved of CPU also spends its steps in the all-reduce, and there
 * compression does not help). Means over the ranks, or null.
 */
export function networkBound(ranks: readonly Phases[], probe: RingProbe | null): NetworkBound | null {
  if (!probe || probe.busbwMBps >= SLOW_RING_MBPS || ranks.length < 2) return null;
  let allreduceMs = 0;
  let stepMs = 0;
  for (const p of ranks) {
    const step = p.dataMs + p.computeMs + p.allreduceMs + p.optimizerMs;
    if (!(p.allreduceMs >= 0.5 * step)) return null;
    allreduceMs += p.allreduceMs / ranks.length;
    stepMs += step / ranks.length;
  }
  return { allreduceMs, stepMs };
}

/** What would help a run that the network bounds, given how its replicas sync now. */
export function networkAdvice(config: JobConfig): string {
  const { wire } = gradientCompressionOf(config);
  const diloco = 'on links of 100 Mbit/s or less, DiLoCo ("sync": {"type": "diloco", "innerSteps": 8} in the job config) all-reduces once every 8 steps';
  if (config.sync?.type === 'diloco') return `more innerSteps all-reduce less often${wire === 'int8' ? '' : '; --gradient-compression int8 sends a quarter of the bytes'}`;
  if (wire === 'float32') return `--gradient-compression fp16 halves the bytes each step sends, int8 quarters them; ${diloco}`;
  if (wire !== 'int8') return `--gradient-compression int8 sends half of what ${wire} does; ${diloco}`;
  return diloco;
}

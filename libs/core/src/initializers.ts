import { CoreError } from './errors.js';
import type { Rng } from './rng.js';

export const INITIALIZERS = ['zeros', 'xavier_uniform', 'xavier_normal', 'he_uniform', 'he_normal', 'gpt_normal'] as const;
export type Initializer = (typeof INITIALIZERS)[number];

/**
 * Fills a weight of fan-in `fanIn` and fan-out `fanOut` (Glorot & Bengio 2010; He et al. 2015).
 * Xavier: Var = 2/(fanIn+fanOut). He: Var = 2/fanIn (ReLU gain). Uniform bounds are √(3·Var).
 * gpt_normal: N(0, 0.02²) whatever the fan, as GPT-2 and nanoGPT start every linear layer.
 */
export function initialize(target: Float32Array, kind: Initializer, fanIn: number, fanOut: number, rng: Rng): void {
  if (!(fanIn > 0 && fanOut > 0)) throw new CoreError('ERR_HYPERPARAM', `initialize: fanIn and fanOut must be positive, got ${fanIn} and ${fanOut}`);
  const variance = initializerVariance(kind, fanIn, fanOut);
  switch (kind) {
    case 'zeros':
      target.fill(0);
      return;
    case 'xavier_uniform':
    case 'he_uniform': {
      const bound = Math.sqrt(3 * variance);
      for (let i = 0; i < target.length; i++) target[i] = (2 * rng.uniform() - 1) * bound;
      return;
    }
    case 'xavier_normal':
    case 'he_normal':
    case 'gpt_normal': {
      const std = Math.sqrt(variance);
      rng.fillNormal(target, std);
      return;
    }
    default:
      throw new CoreError('ERR_HYPERPARAM', `unknown initializer "${String(kind)}"; expected one of ${INITIALIZERS.join(', ')}`);
  }
}

/** Variance that `kind` aims for, for tests and reports. */
export function initializerVariance(kind: Initializer, fanIn: number, fanOut: number): number {
  if (kind === 'zeros') return 0;
  if (kind === 'gpt_normal') return 0.02 ** 2;
  return kind.startsWith('xavier') ? 2 / (fanIn + fanOut) : 2 / fanIn;
}

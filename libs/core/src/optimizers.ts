import { z } from 'zod';
import { CoreError } from './errors.js';
import { scale, sumSquares } from './ops.js';
import type { ParameterStore } from './parameter-store.js';
import { describeIssues } from './validation.js';

const lr = z.number().positive().finite();
const decay = z.number().min(0).finite().optional();

export const optimizerConfigSchema = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('sgd'),
    lr,
    momentum: z.number().min(0).lt(1).optional(),
    nesterov: z.boolean().optional(),
    weightDecay: decay,
  }),
  z.strictObject({
    type: z.enum(['adam', 'adamw']),
    lr,
    beta1: z.number().min(0).lt(1).optional(),
    beta2: z.number().min(0).lt(1).optional(),
    eps: z.number().positive().optional(),
    weightDecay: decay,
  }),
]);

export type OptimizerConfig = z.infer<typeof optimizerConfigSchema>;

/** What an optimizer carries between steps; a checkpoint saves it. */
export interface OptimizerState {
  step: number;
  /** Slot name → buffer laid out like the parameters. */
  slots: Record<string, Float32Array>;
}

/** Updates `store.values` from `store.grads` in place; its slots are flat buffers like the parameters. */
export interface Optimizer {
  readonly config: OptimizerConfig;
  readonly state: OptimizerState;
  step(lr: number): void;
}

export function parseOptimizerConfig(input: unknown): OptimizerConfig {
  const parsed = optimizerConfigSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new CoreError('ERR_HYPERPARAM', `invalid optimizer: ${describeIssues(parsed.error)}`);
  if (parsed.data.type === 'sgd' && parsed.data.nesterov && !parsed.data.momentum) {
    throw new CoreError('ERR_HYPERPARAM', 'invalid optimizer: nesterov = true needs momentum > 0');
  }
  return parsed.data;
}

export function createOptimizer(config: unknown, store: ParameterStore): Optimizer {
  const c = parseOptimizerConfig(config);
  return c.type === 'sgd' ? new Sgd(c, store) : new Adam(c, store);
}

type SgdConfig = Extract<OptimizerConfig, { type: 'sgd' }>;
type AdamConfig = Extract<OptimizerConfig, { type: 'adam' | 'adamw' }>;

/** SGD with optional (Nesterov) momentum and L2 weight decay, as torch.optim.SGD (dampening 0). */
class Sgd implements Optimizer {
  readonly state: OptimizerState;

  constructor(
    readonly config: SgdConfig,
    private readonly store: ParameterStore,
  ) {
    this.state = { step: 0, slots: config.momentum ? { momentum: store.newSlot() } : {} };
  }

  step(lr: number): void {
    const p = this.store.values;
    const g = this.store.grads;
    const wd = this.config.weightDecay ?? 0;
    const mu = this.config.momentum ?? 0;
    const v = this.state.slots.momentum;
    if (!v) {
      for (let i = 0; i < p.length; i++) p[i] -= lr * (g[i] + wd * p[i]);
    } else if (this.config.nesterov) {
      for (let i = 0; i < p.length; i++) {
        const gi = g[i] + wd * p[i];
        const vi = mu * v[i] + gi;
        v[i] = vi;
        p[i] -= lr * (gi + mu * vi);
      }
    } else {
      for (let i = 0; i < p.length; i++) {
        const vi = mu * v[i] + g[i] + wd * p[i];
        v[i] = vi;
        p[i] -= lr * vi;
      }
    }
    this.state.step++;
  }
}

/** Adam (L2 decay added to the gradient) and AdamW (decoupled decay), as torch.optim. */
class Adam implements Optimizer {
  readonly state: OptimizerState;

  constructor(
    readonly config: AdamConfig,
    private readonly store: ParameterStore,
  ) {
    this.state = { step: 0, slots: { exp_avg: store.newSlot(), exp_avg_sq: store.newSlot() } };
  }

  step(lr: number): void {
    const p = this.store.values;
    const g = this.store.grads;
    const { exp_avg: m, exp_avg_sq: v } = this.state.slots;
    const b1 = this.config.beta1 ?? 0.9;
    const b2 = this.config.beta2 ?? 0.999;
    const eps = this.config.eps ?? 1e-8;
    const wd = this.config.weightDecay ?? (this.config.type === 'adamw' ? 0.01 : 0);
    const t = ++this.state.step;
    const stepSize = lr / (1 - b1 ** t);
    const rootCorrection = Math.sqrt(1 - b2 ** t);
    const l2 = this.config.type === 'adam' ? wd : 0;
    const shrink = this.config.type === 'adamw' ? 1 - lr * wd : 1;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i] + l2 * p[i];
      const mi = b1 * m[i] + (1 - b1) * gi;
      const vi = b2 * v[i] + (1 - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] * shrink - (stepSize * mi) / (Math.sqrt(vi) / rootCorrection + eps);
    }
  }
}

/**
 * Scales `grads` so that their global L2 norm is at most `maxNorm`; returns the norm before.
 * A non-finite norm (NaN or Inf in the gradients) throws instead of poisoning the weights.
 */
export function clipGradNorm(grads: Float32Array, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new CoreError('ERR_HYPERPARAM', `clipGradNorm: maxNorm must be positive, got ${maxNorm}`);
  const norm = Math.sqrt(sumSquares(grads));
  if (!Number.isFinite(norm)) throw new CoreError('ERR_NON_FINITE', `clipGradNorm: gradient norm is ${norm}`);
  if (norm > maxNorm) scale(grads, maxNorm / (norm + 1e-6));
  return norm;
}

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
    /** Which parameters AdamW decays: all (torch.optim's default), or matrices only (nanoGPT: not norms, biases). */
    decayOn: z.enum(['all', 'matrices']).optional(),
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
    const { values, grads, backend } = this.store;
    const momentum = this.config.momentum ?? 0;
    backend.sgdUpdate(values, grads, this.state.slots.momentum ?? null, {
      lr,
      momentum,
      weightDecay: this.config.weightDecay ?? 0,
      nesterov: this.config.nesterov ?? false,
    });
    this.state.step++;
  }
}

/** Adam (L2 decay added to the gradient) and AdamW (decoupled decay), as torch.optim. */
class Adam implements Optimizer {
  readonly state: OptimizerState;
  /** The tensors of two or more dimensions (weight matrices, embeddings, convolution kernels). */
  private readonly matrices: readonly { offset: number; length: number }[];

  constructor(
    readonly config: AdamConfig,
    private readonly store: ParameterStore,
  ) {
    this.state = { step: 0, slots: { exp_avg: store.newSlot(), exp_avg_sq: store.newSlot() } };
    this.matrices = store.tensors.filter((t) => t.shape.length >= 2);
  }

  step(lr: number): void {
    const { values, grads, backend } = this.store;
    const b1 = this.config.beta1 ?? 0.9;
    const b2 = this.config.beta2 ?? 0.999;
    const wd = this.config.weightDecay ?? (this.config.type === 'adamw' ? 0.01 : 0);
    const t = ++this.state.step;
    const decoupled = this.config.type === 'adamw' ? 1 - lr * wd : 1;
    // Decaying only the matrices: p·shrink on those first, then the update with no shrink.
    const selective = this.config.decayOn === 'matrices' && decoupled !== 1;
    if (selective) for (const m of this.matrices) scale(values.subarray(m.offset, m.offset + m.length), decoupled);
    backend.adamUpdate(values, grads, this.state.slots.exp_avg, this.state.slots.exp_avg_sq, {
      stepSize: lr / (1 - b1 ** t),
      beta1: b1,
      beta2: b2,
      eps: this.config.eps ?? 1e-8,
      rootCorrection: Math.sqrt(1 - b2 ** t),
      l2: this.config.type === 'adam' ? wd : 0,
      shrink: selective ? 1 : decoupled,
    });
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

import type { Backend } from './backend.js';
import { CoreError } from './errors.js';
import type { LossName } from './model-spec.js';

/** Class indices (cross-entropy) or dense target rows (MSE). */
export type Targets = Int32Array | Float32Array;

export interface Loss {
  readonly name: LossName;
  /**
   * Mean loss over the batch; when `grad` is given, writes d(mean loss)/d(output) into it.
   * `output` holds `batch` rows of `width` values.
   */
  compute(output: Float32Array, targets: Targets, batch: number, width: number, grad: Float32Array | null): number;
}

/** log-softmax through the max-shifted log-sum-exp, so large logits neither overflow nor lose digits. */
export class SoftmaxCrossEntropy implements Loss {
  readonly name = 'softmax_cross_entropy' as const;

  /** `backend`: its kernel, where it has one (a language model's head has thousands of logits per token). */
  constructor(private readonly backend?: Pick<Backend, 'softmaxCrossEntropy'>) {}

  compute(logits: Float32Array, targets: Targets, batch: number, classes: number, grad: Float32Array | null): number {
    if (!(targets instanceof Int32Array)) throw new CoreError('ERR_SHAPE', 'softmax_cross_entropy: targets must be class indices (Int32Array)');
    if (targets.length < batch) throw new CoreError('ERR_SHAPE', `softmax_cross_entropy: ${targets.length} labels for a batch of ${batch}`);
    for (let r = 0; r < batch; r++) {
      const label = targets[r];
      if (!(label >= 0 && label < classes)) throw new CoreError('ERR_SHAPE', `softmax_cross_entropy: label ${label} at row ${r} is outside 0..${classes - 1}`);
    }
    const inv = 1 / batch;
    if (this.backend?.softmaxCrossEntropy) return this.backend.softmaxCrossEntropy(logits, targets, batch, classes, grad, inv) * inv;
    let total = 0;
    for (let r = 0; r < batch; r++) {
      const o = r * classes;
      const label = targets[r];
      let max = logits[o];
      for (let c = 1; c < classes; c++) if (logits[o + c] > max) max = logits[o + c];
      // With a gradient to write, each e^(z − max) is kept in it: one exp per logit, not two.
      let sum = 0;
      if (grad) {
        for (let c = 0; c < classes; c++) sum += grad[o + c] = Math.exp(logits[o + c] - max);
      } else {
        for (let c = 0; c < classes; c++) sum += Math.exp(logits[o + c] - max);
      }
      total += Math.log(sum) + max - logits[o + label];
      if (grad) {
        const k = inv / sum;
        for (let c = 0; c < classes; c++) grad[o + c] *= k;
        grad[o + label] -= inv;
      }
    }
    return total * inv;
  }
}

/** Mean squared error over every element, as PyTorch's MSELoss(reduction='mean'). */
export class MeanSquaredError implements Loss {
  readonly name = 'mse' as const;

  compute(output: Float32Array, targets: Targets, batch: number, width: number, grad: Float32Array | null): number {
    const n = batch * width;
    if (targets.length < n) throw new CoreError('ERR_SHAPE', `mse: ${targets.length} target values for a batch of ${batch}×${width}`);
    let total = 0;
    const k = 2 / n;
    for (let i = 0; i < n; i++) {
      const d = output[i] - targets[i];
      total += d * d;
      if (grad) grad[i] = k * d;
    }
    return total / n;
  }
}

export function createLoss(name: LossName, backend?: Pick<Backend, 'softmaxCrossEntropy'>): Loss {
  return name === 'mse' ? new MeanSquaredError() : new SoftmaxCrossEntropy(backend);
}

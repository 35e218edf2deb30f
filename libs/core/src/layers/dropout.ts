import type { Backend } from '../backend.js';
import type { ParameterDecl } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { BatchBuffer, type Layer } from './layer.js';

/**
 * Inverted dropout: in training each value is kept with probability 1−rate and scaled by
 * 1/(1−rate); in evaluation it is the identity. The mask comes from the model's seeded Rng,
 * so runs repeat exactly and a checkpoint that saves the Rng resumes exactly.
 */
export class Dropout implements Layer {
  readonly type = 'dropout';
  readonly outputSize: number;
  private readonly out: BatchBuffer;
  private readonly maskBuffer: BatchBuffer;
  private readonly dx: BatchBuffer;
  private mask: Float32Array | null = null;

  constructor(
    readonly name: string,
    readonly inputSize: number,
    readonly rate: number,
    private readonly rng: Rng,
    backend: Backend,
  ) {
    this.outputSize = inputSize;
    this.out = new BatchBuffer(backend, inputSize);
    this.maskBuffer = new BatchBuffer(backend, inputSize);
    this.dx = new BatchBuffer(backend, inputSize);
  }

  parameters(): ParameterDecl[] {
    return [];
  }
  bind(): void {}
  initialize(): void {}

  forward(x: Float32Array, batch: number, training: boolean): Float32Array {
    if (!training || this.rate === 0) {
      this.mask = null;
      return x;
    }
    const n = batch * this.inputSize;
    const y = this.out.get(batch);
    const mask = this.maskBuffer.get(batch);
    const keep = 1 - this.rate;
    const scale = 1 / keep;
    for (let i = 0; i < n; i++) {
      mask[i] = this.rng.uniform() < keep ? scale : 0;
      y[i] = x[i] * mask[i];
    }
    this.mask = mask;
    return y;
  }

  /** Generation evaluates: the identity. */
  step(x: Float32Array): Float32Array {
    return x;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (!needInputGrad) return null;
    if (!this.mask) return dy;
    const n = batch * this.inputSize;
    const dx = this.dx.get(batch);
    for (let i = 0; i < n; i++) dx[i] = dy[i] * this.mask[i];
    return dx;
  }
}

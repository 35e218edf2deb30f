import type { Backend } from '../backend.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';

/**
 * One step of a model. `forward` and `backward` return buffers the layer owns and reuses
 * (valid until its next call); `backward` writes (not adds) its parameters' gradients.
 */
export interface Layer {
  /** Stable prefix of its parameters, e.g. `layers.0`. */
  readonly name: string;
  readonly type: string;
  readonly inputSize: number;
  readonly outputSize: number;
  parameters(): ParameterDecl[];
  /** Takes views of its tensors in the flat buffers. */
  bind(store: ParameterStore): void;
  /** Draws initial values (dense weights) from `rng`. */
  initialize(rng: Rng): void;
  forward(x: Float32Array, batch: number, training: boolean): Float32Array;
  /** dL/dx from dL/dy; skips the input gradient (returns null) when nobody needs it. */
  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null;
  /**
   * Incremental decoding (a language model generating): one sample's row at `position`, the rows
   * at positions 0…position−1 having been stepped before it. A layer that mixes positions
   * (attention) keeps what it needs of the earlier rows (its key/value cache); the others act on
   * the row alone. Absent where a layer cannot decode (images).
   */
  step?(x: Float32Array, position: number): Float32Array;
}

/** A one-row buffer from the backend for a layer's `step`, made at its first use. */
export class RowBuffer {
  private buffer: Float32Array | null = null;
  constructor(
    private readonly backend: Backend,
    private readonly width: number,
  ) {}
  get(): Float32Array {
    this.buffer ??= this.backend.alloc(this.width);
    return this.buffer;
  }
}

/** A batch-sized buffer from the backend that grows with the largest batch seen and is reused. */
export class BatchBuffer {
  private buffer: Float32Array | null = null;
  private rows = 0;

  constructor(
    private readonly backend: Backend,
    private readonly width: number,
  ) {}

  get(batch: number): Float32Array {
    if (batch > this.rows || !this.buffer) {
      if (this.buffer) this.backend.free(this.buffer);
      this.rows = Math.max(batch, 1);
      this.buffer = this.backend.alloc(this.rows * this.width);
    }
    return this.buffer.subarray(0, batch * this.width);
  }
}

import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl } from '../parameter-store.js';
import { type Window, windowOver } from './conv-geometry.js';
import { BatchBuffer, type Layer } from './layer.js';

/** Shared by the parameter-free shape-changing layers. */
abstract class Reshaping implements Layer {
  abstract readonly type: string;
  abstract readonly inputSize: number;
  abstract readonly outputSize: number;
  abstract readonly name: string;
  parameters(): ParameterDecl[] {
    return [];
  }
  bind(): void {}
  initialize(): void {}
  abstract forward(x: Float32Array, batch: number, training: boolean): Float32Array;
  abstract backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null;

  protected checkInput(x: Float32Array, batch: number): void {
    if (x.length < batch * this.inputSize) throw new CoreError('ERR_SHAPE', `${this.name} (${this.type}): input has ${x.length} values, a batch of ${batch} needs ${batch}×${this.inputSize}`);
  }
}

/**
 * Max or average over windows of each channel (no padding: a window lies inside the input). Max
 * remembers where each maximum was, and its gradient goes there alone (the first one on a tie).
 */
export class Pool2d extends Reshaping {
  readonly inputSize: number;
  readonly outputSize: number;
  readonly window: Window;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;
  /** Per output, where its maximum was (int32 in a backend buffer). */
  private readonly argmax: BatchBuffer;
  private batch = 0;

  constructor(
    readonly name: string,
    readonly type: 'maxpool2d' | 'avgpool2d',
    readonly inputShape: readonly [number, number, number],
    size: number,
    stride: number,
    private readonly backend: Backend,
  ) {
    super();
    const [c, h, w] = inputShape;
    this.window = windowOver(h, w, size, size, stride, 'valid', `${name} (${type})`);
    this.inputSize = c * h * w;
    this.outputSize = c * this.window.outH * this.window.outW;
    this.out = new BatchBuffer(backend, this.outputSize);
    this.dx = new BatchBuffer(backend, this.inputSize);
    this.argmax = new BatchBuffer(backend, this.outputSize);
  }

  get outputShape(): [number, number, number] {
    return [this.inputShape[0], this.window.outH, this.window.outW];
  }

  forward(x: Float32Array, batch: number): Float32Array {
    this.checkInput(x, batch);
    const [c, h, w] = this.inputShape;
    const { kh, kw, stride, outH, outW } = this.window;
    const y = this.out.get(batch);
    this.batch = batch;
    if (this.type === 'maxpool2d') {
      this.backend.maxPool(x, batch * c, h, w, this.window, y, this.argmax.get(batch));
      return y;
    }
    const area = kh * kw;
    let o = 0;
    for (let plane = 0; plane < batch * c; plane++) {
      const base = plane * h * w;
      for (let oy = 0; oy < outH; oy++) {
        for (let ox = 0; ox < outW; ox++, o++) {
          const top = base + oy * stride * w + ox * stride;
          let sum = 0;
          for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) sum += x[top + i * w + j];
          y[o] = sum / area;
        }
      }
    }
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (!needInputGrad) return null;
    if (this.batch !== batch) throw new CoreError('ERR_STATE', `${this.name}: backward of a batch of ${batch} after a forward of ${this.batch}`);
    const dx = this.dx.get(batch);
    if (this.type === 'maxpool2d') {
      this.backend.maxPoolBackward(dy, this.argmax.get(batch), batch * this.outputSize, dx, batch * this.inputSize);
      return dx;
    }
    dx.fill(0);
    const [c, h, w] = this.inputShape;
    const { kh, kw, stride, outH, outW } = this.window;
    const area = kh * kw;
    let o = 0;
    for (let plane = 0; plane < batch * c; plane++) {
      const base = plane * h * w;
      for (let oy = 0; oy < outH; oy++) {
        for (let ox = 0; ox < outW; ox++, o++) {
          const g = dy[o] / area;
          const top = base + oy * stride * w + ox * stride;
          for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) dx[top + i * w + j] += g;
        }
      }
    }
    return dx;
  }
}

/** The mean of each channel: [C, H, W] → [C]. */
export class GlobalAvgPool extends Reshaping {
  readonly type = 'globalavgpool';
  readonly inputSize: number;
  readonly outputSize: number;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;

  constructor(
    readonly name: string,
    readonly inputShape: readonly [number, number, number],
    backend: Backend,
  ) {
    super();
    this.inputSize = inputShape[0] * inputShape[1] * inputShape[2];
    this.outputSize = inputShape[0];
    this.out = new BatchBuffer(backend, this.outputSize);
    this.dx = new BatchBuffer(backend, this.inputSize);
  }

  forward(x: Float32Array, batch: number): Float32Array {
    this.checkInput(x, batch);
    const area = this.inputShape[1] * this.inputShape[2];
    const y = this.out.get(batch);
    for (let p = 0; p < batch * this.outputSize; p++) {
      let sum = 0;
      for (let i = p * area; i < (p + 1) * area; i++) sum += x[i];
      y[p] = sum / area;
    }
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (!needInputGrad) return null;
    const area = this.inputShape[1] * this.inputShape[2];
    const dx = this.dx.get(batch);
    for (let p = 0; p < batch * this.outputSize; p++) dx.fill(dy[p] / area, p * area, (p + 1) * area);
    return dx;
  }
}

/** [C, H, W] → [C·H·W]: NCHW memory is already flat, so both passes hand their buffer on. */
export class Flatten extends Reshaping {
  readonly type = 'flatten';
  constructor(
    readonly name: string,
    readonly inputSize: number,
  ) {
    super();
  }
  get outputSize(): number {
    return this.inputSize;
  }
  forward(x: Float32Array, batch: number): Float32Array {
    this.checkInput(x, batch);
    return x.subarray(0, batch * this.inputSize);
  }
  backward(dy: Float32Array, _batch: number, needInputGrad: boolean): Float32Array | null {
    return needInputGrad ? dy : null;
  }
}

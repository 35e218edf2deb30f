import type { Backend } from '../backend.js';
import type { ParameterDecl } from '../parameter-store.js';
import { BatchBuffer, type Layer, RowBuffer } from './layer.js';

/** A parameter-free elementwise layer; subclasses give the forward map and its derivative loop. */
abstract class Elementwise implements Layer {
  abstract readonly type: string;
  readonly outputSize: number;
  protected x: Float32Array | null = null;
  protected y: Float32Array | null = null;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;

  constructor(
    readonly name: string,
    readonly inputSize: number,
    protected readonly backend: Backend,
  ) {
    this.outputSize = inputSize;
    this.out = new BatchBuffer(backend, inputSize);
    this.dx = new BatchBuffer(backend, inputSize);
  }

  parameters(): ParameterDecl[] {
    return [];
  }
  bind(): void {}
  initialize(): void {}

  forward(x: Float32Array, batch: number, _training: boolean): Float32Array {
    const n = batch * this.inputSize;
    const y = this.out.get(batch);
    this.apply(x, y, n);
    this.x = x;
    this.y = y;
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (!needInputGrad) return null;
    const dx = this.dx.get(batch);
    this.derive(this.x!, this.y!, dy, dx, batch * this.inputSize);
    return dx;
  }

  /** A row of a sequence (its length: the values per position). */
  step(x: Float32Array): Float32Array {
    this.row ??= new RowBuffer(this.backend, x.length);
    const y = this.row.get().subarray(0, x.length);
    this.apply(x, y, x.length);
    return y;
  }
  private row: RowBuffer | null = null;

  protected abstract apply(x: Float32Array, y: Float32Array, n: number): void;
  /** dx = dy · f'(x), with y = f(x) at hand. */
  protected abstract derive(x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void;
}

/** max(x, α·x); the hottest activation, so it runs on the backend's kernels. */
export class LeakyRelu extends Elementwise {
  readonly type: string = 'leaky_relu';
  constructor(name: string, inputSize: number, backend: Backend, readonly alpha: number) {
    super(name, inputSize, backend);
  }
  protected apply(x: Float32Array, y: Float32Array, n: number): void {
    this.backend.leakyRelu(x, y, n, this.alpha);
  }
  protected derive(x: Float32Array, _y: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    this.backend.leakyReluBackward(x, dy, dx, n, this.alpha);
  }
}

export class Relu extends LeakyRelu {
  override readonly type = 'relu';
  constructor(name: string, inputSize: number, backend: Backend) {
    super(name, inputSize, backend, 0);
  }
}

export class Tanh extends Elementwise {
  readonly type = 'tanh';
  protected apply(x: Float32Array, y: Float32Array, n: number): void {
    for (let i = 0; i < n; i++) y[i] = Math.tanh(x[i]);
  }
  protected derive(_x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    for (let i = 0; i < n; i++) dx[i] = dy[i] * (1 - y[i] * y[i]);
  }
}

export class Sigmoid extends Elementwise {
  readonly type = 'sigmoid';
  protected apply(x: Float32Array, y: Float32Array, n: number): void {
    for (let i = 0; i < n; i++) y[i] = 1 / (1 + Math.exp(-x[i]));
  }
  protected derive(_x: Float32Array, y: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    for (let i = 0; i < n; i++) dx[i] = dy[i] * y[i] * (1 - y[i]);
  }
}

/**
 * GELU, tanh approximation (Hendrycks & Gimpel; PyTorch's approximate='tanh'), on the backend's
 * kernel; the forward pass keeps tanh(u) for the backward one.
 */
export class Gelu extends Elementwise {
  readonly type = 'gelu';
  private readonly tanh = new BatchBuffer(this.backend, this.inputSize);
  protected apply(x: Float32Array, y: Float32Array, n: number): void {
    this.backend.gelu(x, y, this.tanh.get(Math.ceil(n / this.inputSize)), n);
  }
  protected derive(x: Float32Array, _y: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    this.backend.geluBackward(x, this.tanh.get(Math.ceil(n / this.inputSize)), dy, dx, n);
  }
}

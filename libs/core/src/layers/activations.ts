import type { Backend } from '../backend.js';
import type { ParameterDecl } from '../parameter-store.js';
import { BatchBuffer, type Layer } from './layer.js';

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

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_K = 0.044715;

/**
 * GELU, tanh approximation (Hendrycks & Gimpel; PyTorch's approximate='tanh'). tanh(u) is taken as
 * 1 − 2/(e^{2u} + 1) (Math.tanh costs V8 three times Math.exp: a GPT's MLP spent 70 ms a step
 * here), and the forward pass keeps it for the backward one.
 */
export class Gelu extends Elementwise {
  readonly type = 'gelu';
  private tanh = new Float32Array(0);
  protected apply(x: Float32Array, y: Float32Array, n: number): void {
    if (this.tanh.length < n) this.tanh = new Float32Array(n);
    const tanh = this.tanh;
    for (let i = 0; i < n; i++) {
      const v = x[i];
      const t = 1 - 2 / (Math.exp(2 * GELU_C * (v + GELU_K * v * v * v)) + 1);
      tanh[i] = t;
      y[i] = 0.5 * v * (1 + t);
    }
  }
  protected derive(x: Float32Array, _y: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    const tanh = this.tanh;
    for (let i = 0; i < n; i++) {
      const v = x[i];
      const t = tanh[i];
      dx[i] = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * v * v));
    }
  }
}

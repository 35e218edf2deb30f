import type { Backend, DirectConv } from '../backend.js';
import { CoreError } from '../errors.js';
import { type Initializer, initialize } from '../initializers.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { type Window, windowOver } from './conv-geometry.js';
import { BatchBuffer, type Layer } from './layer.js';

export interface Conv2dOptions {
  filters: number;
  kernelSize: number;
  stride: number;
  padding: 'same' | 'valid' | number;
  init: Initializer;
}

/**
 * A 2-D convolution over NCHW tensors, as PyTorch's nn.Conv2d (weight [F, C, kh, kw], bias [F],
 * so exported weights load there as they are). im2col turns each sample into one GEMM per pass:
 * forward W·col written straight into the NCHW output, weight gradient dY·colᵀ accumulated over the
 * batch, input gradient col2im(Wᵀ·dY). Per-sample GEMMs need no transposes, which cost more than
 * the GEMM call overhead they save (measured with --cpu-prof on the lenet job). Where the backend
 * convolves directly (stride 1), it does all three passes without im2col: lenet's second
 * convolution 12.3 → 7.7 ms a step, forward and backward, on AVX-512 (docs/core.md).
 */
export class Conv2d implements Layer {
  readonly type = 'conv2d';
  readonly inputSize: number;
  readonly outputSize: number;
  readonly window: Window;
  private readonly k: number;
  private weight!: Float32Array;
  private bias!: Float32Array;
  private gradWeight!: Float32Array;
  private gradBias!: Float32Array;
  /** im2col's columns, or the direct convolution's padded input. */
  private readonly col: BatchBuffer;
  private readonly direct: DirectConv | undefined;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;
  private batch = 0;

  constructor(
    readonly name: string,
    readonly inputShape: readonly [number, number, number],
    readonly options: Conv2dOptions,
    private readonly backend: Backend,
  ) {
    const [c, h, w] = inputShape;
    const { filters, kernelSize, stride, padding } = options;
    this.window = windowOver(h, w, kernelSize, kernelSize, stride, padding, `${name} (conv2d)`);
    this.k = c * kernelSize * kernelSize;
    this.inputSize = c * h * w;
    this.outputSize = filters * this.window.outH * this.window.outW;
    const plane = this.window.outH * this.window.outW;
    this.direct = stride === 1 ? backend.directConv : undefined;
    this.col = new BatchBuffer(backend, this.direct ? this.direct.paddedLength(1, c, this.window) : this.k * plane);
    this.out = new BatchBuffer(backend, this.outputSize);
    this.dx = new BatchBuffer(backend, this.inputSize);
  }

  get outputShape(): [number, number, number] {
    return [this.options.filters, this.window.outH, this.window.outW];
  }

  parameters(): ParameterDecl[] {
    const { filters, kernelSize } = this.options;
    return [
      { name: `${this.name}.weight`, shape: [filters, this.inputShape[0], kernelSize, kernelSize], role: 'weight' },
      { name: `${this.name}.bias`, shape: [filters], role: 'bias' },
    ];
  }

  bind(store: ParameterStore): void {
    this.weight = store.value(`${this.name}.weight`);
    this.bias = store.value(`${this.name}.bias`);
    this.gradWeight = store.grad(`${this.name}.weight`);
    this.gradBias = store.grad(`${this.name}.bias`);
  }

  initialize(rng: Rng): void {
    const { filters, kernelSize, init } = this.options;
    initialize(this.weight, init, this.k, filters * kernelSize * kernelSize, rng);
    this.bias.fill(0);
  }

  forward(x: Float32Array, batch: number, _training: boolean): Float32Array {
    if (x.length < batch * this.inputSize) {
      throw new CoreError('ERR_SHAPE', `${this.name} (conv2d): input has ${x.length} values, a batch of ${batch} needs ${batch}×${this.inputShape.join('×')}`);
    }
    const [c, h, w] = this.inputShape;
    const f = this.options.filters;
    const plane = this.window.outH * this.window.outW;
    const col = this.col.get(batch);
    const y = this.out.get(batch);
    this.batch = batch;
    if (this.direct) {
      this.direct.forward(x, batch, c, h, w, this.window, this.weight, f, this.bias, col, y);
      return y;
    }
    this.backend.im2col(x, batch, c, h, w, this.window, col);
    // Each sample's output starts as its bias, then W·col accumulates onto it, already NCHW.
    for (let n = 0; n < batch; n++) {
      for (let fi = 0; fi < f; fi++) y.fill(this.bias[fi], (n * f + fi) * plane, (n * f + fi + 1) * plane);
      this.backend.gemm(false, false, f, plane, this.k, this.weight, col.subarray(n * this.k * plane, (n + 1) * this.k * plane), y.subarray(n * f * plane, (n + 1) * f * plane), true);
    }
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (this.batch !== batch) throw new CoreError('ERR_STATE', `${this.name}: backward of a batch of ${batch} after a forward of ${this.batch}`);
    const [c, h, w] = this.inputShape;
    const f = this.options.filters;
    const plane = this.window.outH * this.window.outW;
    const k = this.k;
    const col = this.col.get(batch);
    if (this.direct) {
      this.direct.backwardFilter(dy, batch, c, this.window, f, col, this.gradWeight, this.gradBias);
      if (!needInputGrad) return null;
      const dx = this.dx.get(batch);
      this.direct.backwardData(dy, batch, c, h, w, this.window, this.weight, f, dx);
      return dx;
    }
    for (let fi = 0; fi < f; fi++) {
      let sum = 0;
      for (let n = 0; n < batch; n++) {
        const start = (n * f + fi) * plane;
        for (let p = start; p < start + plane; p++) sum += dy[p];
      }
      this.gradBias[fi] = sum;
    }
    // dW = Σₙ dYₙ·colₙᵀ; then colₙ, spent, takes Wᵀ·dYₙ, which col2im folds back onto the input.
    for (let n = 0; n < batch; n++) {
      const dyn = dy.subarray(n * f * plane, (n + 1) * f * plane);
      const coln = col.subarray(n * k * plane, (n + 1) * k * plane);
      this.backend.gemm(false, true, f, k, plane, dyn, coln, this.gradWeight, n > 0);
      if (needInputGrad) this.backend.gemm(true, false, k, plane, f, this.weight, dyn, coln);
    }
    if (!needInputGrad) return null;
    const dx = this.dx.get(batch);
    this.backend.col2im(col, batch, c, h, w, this.window, dx);
    return dx;
  }
}

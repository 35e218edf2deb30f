import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import { BatchBuffer, type Layer, RowBuffer } from './layer.js';

/**
 * Layer normalization over the last axis: each of a sample's `rows` rows of `width` values becomes
 * (x − mean)/√(var + eps)·gain + bias (biased variance, as PyTorch's nn.LayerNorm), the bias
 * optional. Gain starts at 1, bias at 0.
 */
export class LayerNorm implements Layer {
  readonly type = 'layernorm';
  readonly inputSize: number;
  readonly outputSize: number;
  private gain!: Float32Array;
  private bias: Float32Array | null = null;
  private gradGain!: Float32Array;
  private gradBias: Float32Array | null = null;
  private readonly out: BatchBuffer;
  private readonly dx: BatchBuffer;
  private readonly normalized: BatchBuffer;
  /** 1/√(var + eps) per row of the last forward pass. */
  private readonly rstd: BatchBuffer;
  private rowsSeen = 0;

  constructor(
    readonly name: string,
    readonly rows: number,
    readonly width: number,
    readonly eps: number,
    readonly hasBias: boolean,
    private readonly backend: Backend,
  ) {
    this.inputSize = rows * width;
    this.outputSize = this.inputSize;
    this.out = new BatchBuffer(backend, this.inputSize);
    this.dx = new BatchBuffer(backend, this.inputSize);
    this.normalized = new BatchBuffer(backend, this.inputSize);
    this.rstd = new BatchBuffer(backend, rows);
    this.row = new RowBuffer(backend, 2 * width + 1);
  }

  /** Its y, x̂ and rstd side by side in one buffer. */
  private readonly row: RowBuffer;

  step(x: Float32Array): Float32Array {
    const r = this.row.get();
    const C = this.width;
    const y = r.subarray(0, C);
    this.backend.layerNorm(x, 1, C, this.eps, this.gain, this.bias, r.subarray(C, 2 * C), r.subarray(2 * C, 2 * C + 1), y);
    return y;
  }

  parameters(): ParameterDecl[] {
    const gain: ParameterDecl = { name: `${this.name}.weight`, shape: [this.width], role: 'weight' };
    return this.hasBias ? [gain, { name: `${this.name}.bias`, shape: [this.width], role: 'bias' }] : [gain];
  }

  bind(store: ParameterStore): void {
    this.gain = store.value(`${this.name}.weight`);
    this.gradGain = store.grad(`${this.name}.weight`);
    if (this.hasBias) {
      this.bias = store.value(`${this.name}.bias`);
      this.gradBias = store.grad(`${this.name}.bias`);
    }
  }

  initialize(): void {
    this.gain.fill(1);
    this.bias?.fill(0);
  }

  forward(x: Float32Array, batch: number, _training: boolean): Float32Array {
    const n = batch * this.rows;
    if (x.length < n * this.width) throw new CoreError('ERR_SHAPE', `${this.name} (layernorm): input has ${x.length} values, a batch of ${batch} needs ${batch}×${this.inputSize}`);
    const y = this.out.get(batch);
    this.backend.layerNorm(x, n, this.width, this.eps, this.gain, this.bias, this.normalized.get(batch), this.rstd.get(batch), y);
    this.rowsSeen = n;
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    const n = batch * this.rows;
    if (n !== this.rowsSeen) throw new CoreError('ERR_STATE', `${this.name}: backward of a batch of ${batch} after a forward of ${this.rowsSeen / this.rows}`);
    const dx = needInputGrad ? this.dx.get(batch) : null;
    this.backend.layerNormBackward(dy, n, this.width, this.normalized.get(batch), this.rstd.get(batch), this.gain, this.gradGain, this.gradBias, dx);
    return dx;
  }
}

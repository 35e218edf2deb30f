import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import { BatchBuffer, type Layer } from './layer.js';

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
  private rstd = new Float32Array(0);
  private rowsSeen = 0;

  constructor(
    readonly name: string,
    readonly rows: number,
    readonly width: number,
    readonly eps: number,
    readonly hasBias: boolean,
    backend: Backend,
  ) {
    this.inputSize = rows * width;
    this.outputSize = this.inputSize;
    this.out = new BatchBuffer(backend, this.inputSize);
    this.dx = new BatchBuffer(backend, this.inputSize);
    this.normalized = new BatchBuffer(backend, this.inputSize);
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
    const C = this.width;
    const n = batch * this.rows;
    if (x.length < n * C) throw new CoreError('ERR_SHAPE', `${this.name} (layernorm): input has ${x.length} values, a batch of ${batch} needs ${batch}×${this.inputSize}`);
    const y = this.out.get(batch);
    const xhat = this.normalized.get(batch);
    if (this.rstd.length < n) this.rstd = new Float32Array(n);
    for (let r = 0; r < n; r++) {
      const o = r * C;
      let mean = 0;
      for (let c = 0; c < C; c++) mean += x[o + c];
      mean /= C;
      let variance = 0;
      for (let c = 0; c < C; c++) variance += (x[o + c] - mean) ** 2;
      const rstd = 1 / Math.sqrt(variance / C + this.eps);
      this.rstd[r] = rstd;
      for (let c = 0; c < C; c++) {
        const h = (x[o + c] - mean) * rstd;
        xhat[o + c] = h;
        y[o + c] = h * this.gain[c] + (this.bias ? this.bias[c] : 0);
      }
    }
    this.rowsSeen = n;
    return y;
  }

  /** dx = rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·gain; dgain = Σ dy·x̂, dbias = Σ dy. */
  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    const C = this.width;
    const n = batch * this.rows;
    if (n !== this.rowsSeen) throw new CoreError('ERR_STATE', `${this.name}: backward of a batch of ${batch} after a forward of ${this.rowsSeen / this.rows}`);
    const xhat = this.normalized.get(batch);
    this.gradGain.fill(0);
    this.gradBias?.fill(0);
    const dx = needInputGrad ? this.dx.get(batch) : null;
    for (let r = 0; r < n; r++) {
      const o = r * C;
      let sumG = 0;
      let sumGX = 0;
      for (let c = 0; c < C; c++) {
        const d = dy[o + c];
        this.gradGain[c] += d * xhat[o + c];
        if (this.gradBias) this.gradBias[c] += d;
        const g = d * this.gain[c];
        sumG += g;
        sumGX += g * xhat[o + c];
      }
      if (!dx) continue;
      const rstd = this.rstd[r];
      const meanG = sumG / C;
      const meanGX = sumGX / C;
      for (let c = 0; c < C; c++) dx[o + c] = rstd * (dy[o + c] * this.gain[c] - meanG - xhat[o + c] * meanGX);
    }
    return dx;
  }
}

import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import { BatchBuffer, type Layer } from './layer.js';

/**
 * Group normalization (Wu & He 2018), as PyTorch's nn.GroupNorm: each sample's channels in `groups`
 * groups, normalized by the group's own mean and variance, then scaled and shifted per channel
 * (weight γ = 1, bias β = 0 at the start). Chosen over batch normalization for data parallelism:
 * it depends on no other sample, so it keeps no running statistics to synchronise, N workers equal
 * one process with N·b exactly as for any other layer, and replicas stay bit-identical for free.
 */
export class GroupNorm implements Layer {
  readonly type = 'groupnorm';
  readonly inputSize: number;
  readonly outputSize: number;
  private gamma!: Float32Array;
  private beta!: Float32Array;
  private gradGamma!: Float32Array;
  private gradBeta!: Float32Array;
  private readonly out: BatchBuffer;
  private readonly normalized: BatchBuffer;
  private readonly dx: BatchBuffer;
  private invStd = new Float64Array(0);
  private batch = 0;

  constructor(
    readonly name: string,
    readonly inputShape: readonly [number, number, number],
    readonly groups: number,
    readonly eps: number,
    backend: Backend,
  ) {
    if (inputShape[0] % groups !== 0) throw new CoreError('ERR_SPEC', `${name} (groupnorm): ${inputShape[0]} channels do not split into ${groups} groups`);
    this.inputSize = inputShape[0] * inputShape[1] * inputShape[2];
    this.outputSize = this.inputSize;
    this.out = new BatchBuffer(backend, this.inputSize);
    this.normalized = new BatchBuffer(backend, this.inputSize);
    this.dx = new BatchBuffer(backend, this.inputSize);
  }

  parameters(): ParameterDecl[] {
    const c = this.inputShape[0];
    return [
      { name: `${this.name}.weight`, shape: [c], role: 'weight' },
      { name: `${this.name}.bias`, shape: [c], role: 'bias' },
    ];
  }

  bind(store: ParameterStore): void {
    this.gamma = store.value(`${this.name}.weight`);
    this.beta = store.value(`${this.name}.bias`);
    this.gradGamma = store.grad(`${this.name}.weight`);
    this.gradBeta = store.grad(`${this.name}.bias`);
  }

  initialize(): void {
    this.gamma.fill(1);
    this.beta.fill(0);
  }

  forward(x: Float32Array, batch: number): Float32Array {
    if (x.length < batch * this.inputSize) throw new CoreError('ERR_SHAPE', `${this.name} (groupnorm): input has ${x.length} values, a batch of ${batch} needs ${batch}×${this.inputShape.join('×')}`);
    const [c, h, w] = this.inputShape;
    const area = h * w;
    const perGroup = (c / this.groups) * area;
    const y = this.out.get(batch);
    const xhat = this.normalized.get(batch);
    if (this.invStd.length < batch * this.groups) this.invStd = new Float64Array(batch * this.groups);
    for (let gi = 0; gi < batch * this.groups; gi++) {
      const start = gi * perGroup;
      let sum = 0;
      for (let i = start; i < start + perGroup; i++) sum += x[i];
      const mean = sum / perGroup;
      let sq = 0;
      for (let i = start; i < start + perGroup; i++) sq += (x[i] - mean) ** 2;
      const inv = 1 / Math.sqrt(sq / perGroup + this.eps);
      this.invStd[gi] = inv;
      for (let i = start; i < start + perGroup; i++) xhat[i] = (x[i] - mean) * inv;
    }
    for (let p = 0; p < batch * c; p++) {
      const ch = p % c;
      const g = this.gamma[ch];
      const b = this.beta[ch];
      for (let i = p * area; i < (p + 1) * area; i++) y[i] = xhat[i] * g + b;
    }
    this.batch = batch;
    return y;
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (this.batch !== batch) throw new CoreError('ERR_STATE', `${this.name}: backward of a batch of ${batch} after a forward of ${this.batch}`);
    const [c, h, w] = this.inputShape;
    const area = h * w;
    const perGroup = (c / this.groups) * area;
    const xhat = this.normalized.get(batch);
    for (let ch = 0; ch < c; ch++) {
      let dg = 0;
      let db = 0;
      for (let n = 0; n < batch; n++) {
        const start = (n * c + ch) * area;
        for (let i = start; i < start + area; i++) {
          dg += dy[i] * xhat[i];
          db += dy[i];
        }
      }
      this.gradGamma[ch] = dg;
      this.gradBeta[ch] = db;
    }
    if (!needInputGrad) return null;
    // dx = inv/M · (M·d − Σd − x̂·Σ(d·x̂)) per group, with d = dy·γ.
    const dx = this.dx.get(batch);
    const channelsPerGroup = c / this.groups;
    for (let gi = 0; gi < batch * this.groups; gi++) {
      const start = gi * perGroup;
      const firstChannel = (gi % this.groups) * channelsPerGroup;
      let sumD = 0;
      let sumDX = 0;
      for (let i = 0; i < perGroup; i++) {
        const d = dy[start + i] * this.gamma[firstChannel + Math.floor(i / area)];
        sumD += d;
        sumDX += d * xhat[start + i];
      }
      const k = this.invStd[gi] / perGroup;
      for (let i = 0; i < perGroup; i++) {
        const d = dy[start + i] * this.gamma[firstChannel + Math.floor(i / area)];
        dx[start + i] = k * (perGroup * d - sumD - xhat[start + i] * sumDX);
      }
    }
    return dx;
  }
}

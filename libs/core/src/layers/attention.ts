import type { Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { Dense } from './dense.js';
import { BatchBuffer, type Layer } from './layer.js';

/**
 * Causal multi-head self-attention over a sample of `context` rows of `dim` values, as nanoGPT's
 * CausalSelfAttention: one fused projection to queries, keys and values ([T, 3C], parameters
 * `<name>.qkv`), per head h of `dim/heads` columns softmax(q·kᵀ/√d + causal mask)·v, then the
 * output projection (`<name>.proj`). The probabilities are kept for the backward pass.
 */
export class CausalSelfAttention implements Layer {
  readonly type = 'attention';
  readonly inputSize: number;
  readonly outputSize: number;
  readonly headDim: number;
  private readonly qkv: Dense;
  private readonly proj: Dense;
  private readonly heads_: BatchBuffer;
  private readonly dqkv: BatchBuffer;
  /** Softmax probabilities, [batch, heads, T, T] (the upper triangle unused). */
  private readonly probs: BatchBuffer;
  private qkvOut: Float32Array | null = null;
  private batchSeen = 0;

  constructor(
    readonly name: string,
    readonly context: number,
    readonly dim: number,
    readonly heads: number,
    backend: Backend,
  ) {
    if (dim % heads !== 0) throw new CoreError('ERR_SPEC', `${name} (attention): ${heads} heads do not divide the dimension ${dim}`);
    this.headDim = dim / heads;
    this.inputSize = context * dim;
    this.outputSize = context * dim;
    this.qkv = new Dense(`${name}.qkv`, dim, 3 * dim, 'gpt_normal', backend);
    this.proj = new Dense(`${name}.proj`, dim, dim, 'gpt_normal', backend);
    this.heads_ = new BatchBuffer(backend, context * dim);
    this.dqkv = new BatchBuffer(backend, context * 3 * dim);
    this.probs = new BatchBuffer(backend, heads * context * context);
  }

  parameters(): ParameterDecl[] {
    return [...this.qkv.parameters(), ...this.proj.parameters()];
  }
  bind(store: ParameterStore): void {
    this.qkv.bind(store);
    this.proj.bind(store);
  }
  initialize(rng: Rng): void {
    this.qkv.initialize(rng);
    this.proj.initialize(rng);
  }

  forward(x: Float32Array, batch: number, training: boolean): Float32Array {
    const { context: T, dim: C, heads: H, headDim: D } = this;
    const qkv = this.qkv.forward(x, batch * T, training);
    const att = this.heads_.get(batch);
    const P = this.probs.get(batch);
    const scale = 1 / Math.sqrt(D);
    const row = 3 * C;
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < H; h++) {
        const pBase = (b * H + h) * T * T;
        for (let t = 0; t < T; t++) {
          const q = (b * T + t) * row + h * D;
          const p = pBase + t * T;
          let max = -Infinity;
          for (let s = 0; s <= t; s++) {
            const k = (b * T + s) * row + C + h * D;
            let dot = 0;
            for (let d = 0; d < D; d++) dot += qkv[q + d] * qkv[k + d];
            const score = dot * scale;
            P[p + s] = score;
            if (score > max) max = score;
          }
          let sum = 0;
          for (let s = 0; s <= t; s++) {
            const e = Math.exp(P[p + s] - max);
            P[p + s] = e;
            sum += e;
          }
          const o = (b * T + t) * C + h * D;
          for (let d = 0; d < D; d++) att[o + d] = 0;
          for (let s = 0; s <= t; s++) {
            const w = P[p + s] / sum;
            P[p + s] = w;
            const v = (b * T + s) * row + 2 * C + h * D;
            for (let d = 0; d < D; d++) att[o + d] += w * qkv[v + d];
          }
        }
      }
    }
    this.qkvOut = qkv;
    this.batchSeen = batch;
    return this.proj.forward(att, batch * T, training);
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (!this.qkvOut || batch !== this.batchSeen) throw new CoreError('ERR_STATE', `${this.name}: backward without a forward of the same batch`);
    const { context: T, dim: C, heads: H, headDim: D } = this;
    const datt = this.proj.backward(dy, batch * T, true)!;
    const qkv = this.qkvOut;
    const P = this.probs.get(batch);
    const dqkv = this.dqkv.get(batch);
    dqkv.fill(0);
    const scale = 1 / Math.sqrt(D);
    const row = 3 * C;
    const dP = new Float32Array(T);
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < H; h++) {
        const pBase = (b * H + h) * T * T;
        for (let t = 0; t < T; t++) {
          const o = (b * T + t) * C + h * D;
          const p = pBase + t * T;
          // dP[s] = datt_t · v_s, and dv_s += P[t, s]·datt_t
          let dot = 0;
          for (let s = 0; s <= t; s++) {
            const v = (b * T + s) * row + 2 * C + h * D;
            let g = 0;
            for (let d = 0; d < D; d++) {
              g += datt[o + d] * qkv[v + d];
              dqkv[v + d] += P[p + s] * datt[o + d];
            }
            dP[s] = g;
            dot += P[p + s] * g;
          }
          // dscore[s] = P[t, s]·(dP[s] − Σ P·dP); dq_t += Σ dscore·k_s/√d, dk_s += dscore·q_t/√d
          const q = (b * T + t) * row + h * D;
          for (let s = 0; s <= t; s++) {
            const ds = P[p + s] * (dP[s] - dot) * scale;
            if (ds === 0) continue;
            const k = (b * T + s) * row + C + h * D;
            for (let d = 0; d < D; d++) {
              dqkv[q + d] += ds * qkv[k + d];
              dqkv[k + d] += ds * qkv[q + d];
            }
          }
        }
      }
    }
    return this.qkv.backward(dqkv, batch * T, needInputGrad);
  }
}

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
 * output projection (`<name>.proj`). Each head's products are GEMMs on the backend (T×T scores
 * from T×d rows); the probabilities are kept for the backward pass.
 */
export class CausalSelfAttention implements Layer {
  readonly type = 'attention';
  readonly inputSize: number;
  readonly outputSize: number;
  readonly headDim: number;
  private readonly qkv: Dense;
  private readonly proj: Dense;
  /** Queries, keys, values and outputs per head, [batch, heads, T, headDim]: contiguous for the GEMMs. */
  private readonly q: BatchBuffer;
  private readonly k: BatchBuffer;
  private readonly v: BatchBuffer;
  private readonly o: BatchBuffer;
  private readonly dq: BatchBuffer;
  private readonly dk: BatchBuffer;
  private readonly dv: BatchBuffer;
  /** The heads' outputs side by side, [batch·T, C], into the output projection. */
  private readonly merged: BatchBuffer;
  private readonly dqkv: BatchBuffer;
  /** Softmax probabilities, [batch, heads, T, T] (zero above the diagonal), and their gradients. */
  private readonly probs: BatchBuffer;
  private readonly dprobs: BatchBuffer;
  private batchSeen = -1;

  constructor(
    readonly name: string,
    readonly context: number,
    readonly dim: number,
    readonly heads: number,
    private readonly backend: Backend,
  ) {
    if (dim % heads !== 0) throw new CoreError('ERR_SPEC', `${name} (attention): ${heads} heads do not divide the dimension ${dim}`);
    this.headDim = dim / heads;
    this.inputSize = context * dim;
    this.outputSize = context * dim;
    this.qkv = new Dense(`${name}.qkv`, dim, 3 * dim, 'gpt_normal', backend);
    this.proj = new Dense(`${name}.proj`, dim, dim, 'gpt_normal', backend);
    const perSample = (n: number): BatchBuffer => new BatchBuffer(backend, n);
    [this.q, this.k, this.v, this.o, this.dq, this.dk, this.dv, this.merged] = Array.from({ length: 8 }, () => perSample(context * dim));
    this.dqkv = perSample(context * 3 * dim);
    this.probs = perSample(heads * context * context);
    this.dprobs = perSample(heads * context * context);
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
    const [q, k, v, o] = [this.q.get(batch), this.k.get(batch), this.v.get(batch), this.o.get(batch)];
    this.split(qkv, batch, q, k, v);
    const P = this.probs.get(batch);
    const scale = 1 / Math.sqrt(D);
    const be = this.backend;
    for (let bh = 0; bh < batch * H; bh++) {
      const head = bh * T * D;
      const p = P.subarray(bh * T * T, (bh + 1) * T * T);
      // Scores for every pair, then each row's softmax over its first t + 1 (the causal mask): the
      // masked entries become exact zeros, so P·V reads only the past.
      be.gemm(false, true, T, T, D, q.subarray(head, head + T * D), k.subarray(head, head + T * D), p);
      for (let t = 0; t < T; t++) {
        const r = t * T;
        let max = -Infinity;
        for (let s = 0; s <= t; s++) if (p[r + s] > max) max = p[r + s];
        let sum = 0;
        for (let s = 0; s <= t; s++) {
          const e = Math.exp((p[r + s] - max) * scale);
          p[r + s] = e;
          sum += e;
        }
        const inv = 1 / sum;
        for (let s = 0; s <= t; s++) p[r + s] *= inv;
        for (let s = t + 1; s < T; s++) p[r + s] = 0;
      }
      be.gemm(false, false, T, D, T, p, v.subarray(head, head + T * D), o.subarray(head, head + T * D));
    }
    const att = this.merged.get(batch);
    this.merge(o, batch, att);
    this.batchSeen = batch;
    return this.proj.forward(att, batch * T, training);
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (batch !== this.batchSeen) throw new CoreError('ERR_STATE', `${this.name}: backward without a forward of the same batch`);
    const { context: T, heads: H, headDim: D } = this;
    const datt = this.proj.backward(dy, batch * T, true)!;
    const [q, k, v] = [this.q.get(batch), this.k.get(batch), this.v.get(batch)];
    const [dq, dk, dv, dO] = [this.dq.get(batch), this.dk.get(batch), this.dv.get(batch), this.o.get(batch)];
    this.split3(datt, batch, dO);
    const P = this.probs.get(batch);
    const dP = this.dprobs.get(batch);
    const scale = 1 / Math.sqrt(D);
    const be = this.backend;
    for (let bh = 0; bh < batch * H; bh++) {
      const head = bh * T * D;
      const rows = (m: Float32Array): Float32Array => m.subarray(head, head + T * D);
      const p = P.subarray(bh * T * T, (bh + 1) * T * T);
      const dp = dP.subarray(bh * T * T, (bh + 1) * T * T);
      // dV = Pᵀ·dO, dP = dO·Vᵀ; then the softmax's Jacobian: dS = P ∘ (dP − Σ_s P·dP)/√d
      be.gemm(true, false, T, D, T, p, rows(dO), rows(dv));
      be.gemm(false, true, T, T, D, rows(dO), rows(v), dp);
      for (let t = 0; t < T; t++) {
        const r = t * T;
        let dot = 0;
        for (let s = 0; s <= t; s++) dot += p[r + s] * dp[r + s];
        for (let s = 0; s <= t; s++) dp[r + s] = p[r + s] * (dp[r + s] - dot) * scale;
        for (let s = t + 1; s < T; s++) dp[r + s] = 0;
      }
      // dQ = dS·K, dK = dSᵀ·Q
      be.gemm(false, false, T, D, T, dp, rows(k), rows(dq));
      be.gemm(true, false, T, D, T, dp, rows(q), rows(dk));
    }
    const dqkv = this.dqkv.get(batch);
    this.join(dq, dk, dv, batch, dqkv);
    return this.qkv.backward(dqkv, batch * T, needInputGrad);
  }

  /** [B·T, 3C] rows of q|k|v into three [B, H, T, D] buffers: each head's rows contiguous, for the GEMMs. */
  private split(qkv: Float32Array, batch: number, q: Float32Array, k: Float32Array, v: Float32Array): void {
    const { context: T, dim: C, heads: H, headDim: D } = this;
    for (let b = 0; b < batch; b++)
      for (let t = 0; t < T; t++) {
        const src = (b * T + t) * 3 * C;
        for (let h = 0; h < H; h++) {
          const dst = ((b * H + h) * T + t) * D;
          const at = src + h * D;
          q.set(qkv.subarray(at, at + D), dst);
          k.set(qkv.subarray(at + C, at + C + D), dst);
          v.set(qkv.subarray(at + 2 * C, at + 2 * C + D), dst);
        }
      }
  }

  /** [B·T, C] rows (heads side by side) into [B, H, T, D]. */
  private split3(x: Float32Array, batch: number, out: Float32Array): void {
    const { context: T, dim: C, heads: H, headDim: D } = this;
    for (let b = 0; b < batch; b++)
      for (let t = 0; t < T; t++)
        for (let h = 0; h < H; h++) {
          const at = (b * T + t) * C + h * D;
          out.set(x.subarray(at, at + D), ((b * H + h) * T + t) * D);
        }
  }

  /** [B, H, T, D] back into [B·T, C] rows. */
  private merge(o: Float32Array, batch: number, out: Float32Array): void {
    const { context: T, dim: C, heads: H, headDim: D } = this;
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < H; h++)
        for (let t = 0; t < T; t++) {
          const src = ((b * H + h) * T + t) * D;
          out.set(o.subarray(src, src + D), (b * T + t) * C + h * D);
        }
  }

  /** Three [B, H, T, D] gradients back into [B·T, 3C] rows of dq|dk|dv. */
  private join(dq: Float32Array, dk: Float32Array, dv: Float32Array, batch: number, out: Float32Array): void {
    const { context: T, dim: C, heads: H, headDim: D } = this;
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < H; h++)
        for (let t = 0; t < T; t++) {
          const src = ((b * H + h) * T + t) * D;
          const dst = (b * T + t) * 3 * C + h * D;
          out.set(dq.subarray(src, src + D), dst);
          out.set(dk.subarray(src, src + D), dst + C);
          out.set(dv.subarray(src, src + D), dst + 2 * C);
        }
  }
}

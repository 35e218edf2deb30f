import type { AttentionShape, Backend } from '../backend.js';
import { CoreError } from '../errors.js';
import type { ParameterDecl, ParameterStore } from '../parameter-store.js';
import type { Rng } from '../rng.js';
import { Dense } from './dense.js';
import { BatchBuffer, type Layer } from './layer.js';

/**
 * Causal multi-head self-attention over a sample of `context` rows of `dim` values, as nanoGPT's
 * CausalSelfAttention: one fused projection to queries, keys and values ([T, 3C], parameters
 * `<name>.qkv`), per head h of `dim/heads` columns softmax(q·kᵀ/√d + causal mask)·v (the backend's
 * `causalAttention`), then the output projection (`<name>.proj`). The probabilities are kept for
 * the backward pass.
 */
export class CausalSelfAttention implements Layer {
  readonly type = 'attention';
  readonly inputSize: number;
  readonly outputSize: number;
  readonly headDim: number;
  private readonly qkv: Dense;
  private readonly proj: Dense;
  /** The heads' outputs side by side, [batch·T, C], into the output projection. */
  private readonly merged: BatchBuffer;
  private readonly dqkv: BatchBuffer;
  /** Softmax probabilities, [batch, heads, T, T] (zero above the diagonal). */
  private readonly probs: BatchBuffer;
  /** The fused rows of the last forward pass. */
  private qkvRows: Float32Array | null = null;
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
    this.merged = new BatchBuffer(backend, context * dim);
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
    const qkv = this.qkv.forward(x, batch * this.context, training);
    const att = this.merged.get(batch);
    this.backend.causalAttention(qkv, this.shape(batch), this.probs.get(batch), att);
    this.qkvRows = qkv;
    this.batchSeen = batch;
    return this.proj.forward(att, batch * this.context, training);
  }

  backward(dy: Float32Array, batch: number, needInputGrad: boolean): Float32Array | null {
    if (batch !== this.batchSeen || !this.qkvRows) throw new CoreError('ERR_STATE', `${this.name}: backward without a forward of the same batch`);
    const datt = this.proj.backward(dy, batch * this.context, true)!;
    const dqkv = this.dqkv.get(batch);
    this.backend.causalAttentionBackward(this.qkvRows, this.shape(batch), this.probs.get(batch), datt, dqkv);
    return this.qkv.backward(dqkv, batch * this.context, needInputGrad);
  }

  /**
   * One position of generation: its q, k and v; k and v join the cache of the earlier positions
   * (so a token costs one position, not the whole context), and the heads attend over them.
   */
  step(x: Float32Array, position: number): Float32Array {
    const { context: T, dim: C, heads: H, headDim: D } = this;
    if (!(Number.isInteger(position) && position >= 0 && position < T)) throw new CoreError('ERR_SHAPE', `${this.name} (attention): position ${position} is outside the context 0..${T - 1}`);
    this.cache ??= { keys: new Float32Array(T * C), values: new Float32Array(T * C), scores: new Float64Array(T), out: this.backend.alloc(C) };
    const { keys, values, scores, out } = this.cache;
    const qkv = this.qkv.forward(x, 1, false);
    keys.set(qkv.subarray(C, 2 * C), position * C);
    values.set(qkv.subarray(2 * C, 3 * C), position * C);
    const scale = 1 / Math.sqrt(D);
    for (let h = 0; h < H; h++) {
      const o = h * D;
      let max = -Infinity;
      for (let s = 0; s <= position; s++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += qkv[o + d] * keys[s * C + o + d];
        scores[s] = dot * scale;
        if (scores[s] > max) max = scores[s];
      }
      let sum = 0;
      for (let s = 0; s <= position; s++) sum += scores[s] = Math.exp(scores[s] - max);
      for (let d = 0; d < D; d++) out[o + d] = 0;
      for (let s = 0; s <= position; s++) {
        const w = scores[s] / sum;
        for (let d = 0; d < D; d++) out[o + d] += w * values[s * C + o + d];
      }
    }
    return this.proj.forward(out, 1, false);
  }
  /** Keys and values of the positions stepped so far, [T, C] each; scratch for one row. */
  private cache: { keys: Float32Array; values: Float32Array; scores: Float64Array; out: Float32Array } | null = null;

  private shape(batch: number): AttentionShape {
    return { batch, context: this.context, heads: this.heads, headDim: this.headDim };
  }
}

import { CoreError } from './errors.js';
import type { Window } from './layers/conv-geometry.js';

export type BackendName = 'reference' | 'wasm' | 'native';

/**
 * Where the heavy arithmetic runs. A backend owns the memory of every buffer it computes on
 * (the WASM backend keeps them in its linear memory, so calls copy nothing), hence `alloc`.
 */
export interface Backend {
  readonly name: BackendName;
  /** One line for start-up logs: what runs and where. */
  readonly description: string;
  /** A zero-filled buffer of `length` floats that this backend can compute on. */
  alloc(length: number): Float32Array;
  /** Returns a buffer from `alloc` for reuse. */
  free(buffer: Float32Array): void;
  /**
   * Row-major C(m×n) = op(A)·op(B), or C += op(A)·op(B) when `accumulate`.
   * op(A) is m×k (A stored k×m when transA); op(B) is k×n (B stored n×k when transB).
   */
  gemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    a: Float32Array,
    b: Float32Array,
    c: Float32Array,
    accumulate?: boolean,
  ): void;
  /** y[r, :] += bias for each of `rows` rows of `cols`. */
  addBiasRows(y: Float32Array, bias: Float32Array, rows: number, cols: number): void;
  /** out[c] = Σ_r x[r, c] (the bias gradient). */
  sumRows(x: Float32Array, rows: number, cols: number, out: Float32Array): void;
  /** y = x > 0 ? x : α·x over n elements (ReLU when α = 0). */
  leakyRelu(x: Float32Array, y: Float32Array, n: number, alpha: number): void;
  /** dx = x > 0 ? dy : α·dy over n elements. */
  leakyReluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array, n: number, alpha: number): void;
  /** Unfolds a batch of NCHW images for a convolution (the layout: layers/conv-geometry.ts). */
  im2col(x: Float32Array, batch: number, c: number, h: number, w: number, g: Window, col: Float32Array): void;
  /** The adjoint of im2col: dx (zeroed first) collects every entry of col. */
  col2im(col: Float32Array, batch: number, c: number, h: number, w: number, g: Window, dx: Float32Array): void;
  /**
   * Max pooling over `planes` H×W planes (no padding): y, and per output the index in x of its
   * maximum (the first on a tie). `argmax` is a backend buffer read as int32.
   */
  maxPool(x: Float32Array, planes: number, h: number, w: number, g: Window, y: Float32Array, argmax: Float32Array): void;
  /** dx (`inputs` values, zeroed first) gets each of the n outputs' gradients where its maximum was. */
  maxPoolBackward(dy: Float32Array, argmax: Float32Array, n: number, dx: Float32Array, inputs: number): void;
  /** One SGD step over flat buffers, in place (`velocity` null without momentum). */
  sgdUpdate(params: Float32Array, grads: Float32Array, velocity: Float32Array | null, h: SgdHyper): void;
  /** One Adam/AdamW step over flat buffers, in place. */
  adamUpdate(params: Float32Array, grads: Float32Array, expAvg: Float32Array, expAvgSq: Float32Array, h: AdamHyper): void;
  /**
   * Softmax cross-entropy of `rows` rows of `classes` logits against `labels` (already checked to
   * be in range): returns the rows' summed loss; with `grad`, writes scale·(softmax − one-hot)
   * there. Where a backend has no kernel of its own, the loss computes it in TypeScript.
   */
  softmaxCrossEntropy?(logits: Float32Array, labels: Int32Array, rows: number, classes: number, grad: Float32Array | null, scale: number): number;
  /** Deterministic mode's exact sums (fixed-point.ts has them in TypeScript, with the same bits): where a backend has them natively. */
  fixedPointHalves?(micro: Float32Array, count: number, p: number, offsets: Int32Array, perQ: Float64Array, halves: Float32Array): void;
  fixedPointMean?(halves: Float32Array, p: number, offsets: Int32Array, perMicro: Float64Array, grads: Float32Array): void;
  absMax?(x: Float32Array, n: number): number;
  /** GELU (tanh form) over n values; `tanh` keeps tanh(√(2/π)(x + 0.044715x³)) for the backward pass. */
  gelu(x: Float32Array, y: Float32Array, tanh: Float32Array, n: number): void;
  /** dx = dy·GELU'(x), from the kept tanh. */
  geluBackward(x: Float32Array, tanh: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void;
  /**
   * LayerNorm of `rows` rows of `width`: x̂ = (x − mean)·rstd, rstd = 1/√(var + eps) (biased
   * variance), y = x̂·gain + bias (no bias when null); x̂ and rstd are kept for the backward pass.
   */
  layerNorm(x: Float32Array, rows: number, width: number, eps: number, gain: Float32Array, bias: Float32Array | null, xhat: Float32Array, rstd: Float32Array, y: Float32Array): void;
  /** dgain and dbias written (dbias null without a bias); dx written unless null. */
  layerNormBackward(dy: Float32Array, rows: number, width: number, xhat: Float32Array, rstd: Float32Array, gain: Float32Array, dgain: Float32Array, dbias: Float32Array | null, dx: Float32Array | null): void;
  /**
   * The core of causal self-attention. `qkv` holds batch·T rows of q|k|v (3·heads·d values); per
   * head, probs ([batch, heads, T, T], zero above the diagonal) = softmax(q·kᵀ/√d + causal mask),
   * and its d columns of `out` ([batch·T, heads·d]) = probs·v.
   */
  causalAttention(qkv: Float32Array, shape: AttentionShape, probs: Float32Array, out: Float32Array): void;
  /** dqkv (written) from dout and the probabilities the forward pass kept. */
  causalAttentionBackward(qkv: Float32Array, shape: AttentionShape, probs: Float32Array, dout: Float32Array, dqkv: Float32Array): void;
  /** Stride-1 convolutions without im2col, where the backend has them (the native one on AVX-512 CPUs). */
  readonly directConv?: DirectConv;
}

/**
 * Stride-1 convolutions of NCHW batches with square kernels (g.kh = g.kw, g.stride = 1), weights
 * [F, C, k, k]. The forward pass keeps each sample's zero-padded input planes (`xpad`,
 * `paddedLength` floats) for the weight gradient.
 */
export interface DirectConv {
  paddedLength(batch: number, c: number, g: Window): number;
  /** y = bias + W ⋆ x (written). */
  forward(x: Float32Array, batch: number, c: number, h: number, w: number, g: Window, weight: Float32Array, filters: number, bias: Float32Array, xpad: Float32Array, y: Float32Array): void;
  /** dx = the input gradient of dy (written). */
  backwardData(dy: Float32Array, batch: number, c: number, h: number, w: number, g: Window, weight: Float32Array, filters: number, dx: Float32Array): void;
  /** dw = Σ over the batch of dy ⋆ xpad, db = Σ dy per filter (both written). */
  backwardFilter(dy: Float32Array, batch: number, c: number, g: Window, filters: number, xpad: Float32Array, dw: Float32Array, db: Float32Array): void;
}

/** Sizes of one attention call: samples, positions per sample, heads, and each head's width. */
export interface AttentionShape {
  batch: number;
  context: number;
  heads: number;
  headDim: number;
}

/** v = μ·v + g + wd·p; p -= lr·(nesterov ? g + wd·p + μ·v : v); without momentum p -= lr·(g + wd·p). */
export interface SgdHyper {
  lr: number;
  momentum: number;
  weightDecay: number;
  nesterov: boolean;
}

/**
 * g' = g + l2·p; m = β1·m + (1−β1)·g'; v = β2·v + (1−β2)·g'²;
 * p = p·shrink − stepSize·m / (√v / rootCorrection + eps). Bias corrections are folded into
 * stepSize = lr/(1−β1ᵗ) and rootCorrection = √(1−β2ᵗ); AdamW decays through shrink = 1 − lr·wd.
 */
export interface AdamHyper {
  stepSize: number;
  beta1: number;
  beta2: number;
  eps: number;
  rootCorrection: number;
  l2: number;
  shrink: number;
}

/** Every flat buffer of an update must have the parameters' length. */
export function checkSameLength(what: string, params: Float32Array, ...others: (Float32Array | null)[]): void {
  for (const o of others) {
    if (o && o.length !== params.length) throw new CoreError('ERR_SHAPE', `${what}: buffers of ${params.length} and ${o.length} elements`);
  }
}

/** The image and unfolded buffers must hold what the geometry says, before a kernel touches memory. */
export function checkUnfold(what: string, images: Float32Array, col: Float32Array, batch: number, c: number, h: number, w: number, g: Window): void {
  const need = batch * c * h * w;
  const unfolded = batch * c * g.kh * g.kw * g.outH * g.outW;
  if (images.length < need || col.length < unfolded) throw new CoreError('ERR_SHAPE', `${what}: buffers of ${images.length} and ${col.length} floats, a batch of ${batch}×${c}×${h}×${w} needs ${need} and ${unfolded}`);
}

/** Max pooling's buffers must hold what the geometry says (every argmax then points inside x). */
export function checkPool(x: Float32Array, planes: number, h: number, w: number, g: Window, y: Float32Array, argmax: Float32Array): void {
  const outputs = planes * g.outH * g.outW;
  if (x.length < planes * h * w || y.length < outputs || argmax.length < outputs || (g.outH - 1) * g.stride + g.kh > h || (g.outW - 1) * g.stride + g.kw > w) {
    throw new CoreError('ERR_SHAPE', `maxPool: buffers of ${x.length}, ${y.length} and ${argmax.length} for ${planes} planes of ${h}×${w} into ${g.outH}×${g.outW}`);
  }
}

export function checkPoolBackward(dy: Float32Array, argmax: Float32Array, n: number, dx: Float32Array, inputs: number): void {
  if (dy.length < n || argmax.length < n || dx.length < inputs) throw new CoreError('ERR_SHAPE', `maxPoolBackward: buffers of ${dy.length}, ${argmax.length} and ${dx.length} for ${n} outputs and ${inputs} inputs`);
}

/** Shape checks every backend runs before it touches memory. */
export function checkGemm(m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array): void {
  for (const [name, v] of [['m', m], ['n', n], ['k', k]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new CoreError('ERR_SHAPE', `gemm: ${name} must be a non-negative integer, got ${v}`);
  }
  if (a.length < m * k) throw new CoreError('ERR_SHAPE', `gemm: A has ${a.length} elements, needs m·k = ${m}·${k} = ${m * k}`);
  if (b.length < k * n) throw new CoreError('ERR_SHAPE', `gemm: B has ${b.length} elements, needs k·n = ${k}·${n} = ${k * n}`);
  if (c.length < m * n) throw new CoreError('ERR_SHAPE', `gemm: C has ${c.length} elements, needs m·n = ${m}·${n} = ${m * n}`);
}

/** Floats of attention's fused q|k|v rows, of its probabilities, and of its output. */
export function attentionSizes(s: AttentionShape): { qkv: number; probs: number; out: number } {
  const rows = s.batch * s.context;
  const dim = s.heads * s.headDim;
  return { qkv: rows * 3 * dim, probs: s.batch * s.heads * s.context * s.context, out: rows * dim };
}

/** Every buffer of an attention call must hold what its shape says, before a kernel touches memory. */
export function checkAttention(what: string, s: AttentionShape, buffers: Record<string, [Float32Array, 'qkv' | 'probs' | 'out']>): void {
  for (const v of [s.batch, s.context, s.heads, s.headDim]) {
    if (!Number.isInteger(v) || v < 1) throw new CoreError('ERR_SHAPE', `${what}: sizes must be positive integers, got ${JSON.stringify(s)}`);
  }
  const need = attentionSizes(s);
  for (const [name, [a, kind]] of Object.entries(buffers)) {
    if (a.length < need[kind]) throw new CoreError('ERR_SHAPE', `${what}: ${name} has ${a.length} floats, ${JSON.stringify(s)} needs ${need[kind]}`);
  }
}

/** Every buffer of an elementwise call holds its n values. */
export function checkLengths(what: string, n: number, ...arrays: Float32Array[]): void {
  if (!Number.isInteger(n) || n < 0) throw new CoreError('ERR_SHAPE', `${what}: the count must be a non-negative integer, got ${n}`);
  for (const a of arrays) if (a.length < n) throw new CoreError('ERR_SHAPE', `${what}: ${n} elements requested, an array has ${a.length}`);
}

/** LayerNorm's buffers hold rows×width values, rows statistics, and width gains and biases. */
export function checkLayerNorm(what: string, rows: number, width: number, full: Float32Array[], perRow: Float32Array, perColumn: (Float32Array | null)[]): void {
  checkLengths(what, rows * width, ...full);
  checkLengths(what, rows, perRow);
  checkLengths(what, width, ...perColumn.filter((a) => a !== null));
  if (rows < 1 || width < 1) throw new CoreError('ERR_SHAPE', `${what}: needs at least one row of one value, got ${rows}×${width}`);
}

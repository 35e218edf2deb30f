// A transformer's kernels after the GEMMs, in TypeScript: the reference and WASM backends run
// these; the native backend has them in C (native/transformer.c), checked against these.
import { type AttentionShape, type Backend, checkAttention, checkLayerNorm, checkLengths } from './backend.js';

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_K = 0.044715;

/**
 * GELU, tanh form: y = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³); tanh u kept for the backward
 * pass. tanh u is taken as 1 − 2/(e^{2u} + 1): Math.tanh costs V8 three times Math.exp.
 */
export function gelu(x: Float32Array, y: Float32Array, tanh: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = x[i];
    const t = 1 - 2 / (Math.exp(2 * GELU_C * (v + GELU_K * v * v * v)) + 1);
    tanh[i] = t;
    y[i] = 0.5 * v * (1 + t);
  }
}

export function geluBackward(x: Float32Array, tanh: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) {
    const v = x[i];
    const t = tanh[i];
    dx[i] = dy[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * GELU_C * (1 + 3 * GELU_K * v * v));
  }
}

/** Each row: x̂ = (x − mean)·rstd with rstd = 1/√(var + eps) (biased variance), y = x̂·gain + bias. */
export function layerNorm(x: Float32Array, rows: number, width: number, eps: number, gain: Float32Array, bias: Float32Array | null, xhat: Float32Array, rstd: Float32Array, y: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    let mean = 0;
    for (let c = 0; c < width; c++) mean += x[o + c];
    mean /= width;
    let variance = 0;
    for (let c = 0; c < width; c++) variance += (x[o + c] - mean) ** 2;
    const s = 1 / Math.sqrt(variance / width + eps);
    rstd[r] = s;
    for (let c = 0; c < width; c++) {
      const h = (x[o + c] - mean) * s;
      xhat[o + c] = h;
      y[o + c] = h * gain[c] + (bias ? bias[c] : 0);
    }
  }
}

/** dgain = Σ dy·x̂, dbias = Σ dy (written); dx = rstd·(g − mean(g) − x̂·mean(g·x̂)), g = dy·gain. */
export function layerNormBackward(dy: Float32Array, rows: number, width: number, xhat: Float32Array, rstd: Float32Array, gain: Float32Array, dgain: Float32Array, dbias: Float32Array | null, dx: Float32Array | null): void {
  dgain.fill(0, 0, width);
  dbias?.fill(0, 0, width);
  for (let r = 0; r < rows; r++) {
    const o = r * width;
    let sumG = 0;
    let sumGX = 0;
    for (let c = 0; c < width; c++) {
      const d = dy[o + c];
      dgain[c] += d * xhat[o + c];
      if (dbias) dbias[c] += d;
      const g = d * gain[c];
      sumG += g;
      sumGX += g * xhat[o + c];
    }
    if (!dx) continue;
    const meanG = sumG / width;
    const meanGX = sumGX / width;
    for (let c = 0; c < width; c++) dx[o + c] = rstd[r] * (dy[o + c] * gain[c] - meanG - xhat[o + c] * meanGX);
  }
}

/**
 * Causal attention by the backend's GEMMs on contiguous copies of each head's rows (its q, k, v
 * are strided inside the fused rows): the backends whose GEMM takes no strides.
 */
class GemmAttention {
  private work: Float32Array = new Float32Array(0);
  constructor(private readonly backend: Backend) {}

  /** Five T×d blocks and one T×T, from the backend, kept for the next call. */
  private blocks(T: number, d: number): Float32Array[] {
    const need = 5 * T * d + T * T;
    if (this.work.length < need) {
      if (this.work.length) this.backend.free(this.work);
      this.work = this.backend.alloc(need);
    }
    const at = (i: number): Float32Array => this.work.subarray(i * T * d, (i + 1) * T * d);
    return [at(0), at(1), at(2), at(3), at(4), this.work.subarray(5 * T * d, need)];
  }

  forward(qkv: Float32Array, s: AttentionShape, probs: Float32Array, out: Float32Array): void {
    const { batch, context: T, heads, headDim: d } = s;
    const C = heads * d;
    const scale = 1 / Math.sqrt(d);
    const [q, k, v, o] = this.blocks(T, d);
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < heads; h++) {
        const at = b * T * 3 * C + h * d;
        gatherHead(qkv, at, C, T, d, q, k, v);
        const p = probs.subarray((b * heads + h) * T * T, (b * heads + h + 1) * T * T);
        this.backend.gemm(false, true, T, T, d, q, k, p);
        causalSoftmax(p, T, scale);
        this.backend.gemm(false, false, T, d, T, p, v, o);
        scatter(o, T, d, out, b * T * C + h * d, C);
      }
  }

  backward(qkv: Float32Array, s: AttentionShape, probs: Float32Array, dout: Float32Array, dqkv: Float32Array): void {
    const { batch, context: T, heads, headDim: d } = s;
    const C = heads * d;
    const scale = 1 / Math.sqrt(d);
    const [q, k, v, dO, g, dp] = this.blocks(T, d);
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < heads; h++) {
        const at = b * T * 3 * C + h * d;
        gatherHead(qkv, at, C, T, d, q, k, v);
        gather(dout, b * T * C + h * d, C, T, d, dO);
        const p = probs.subarray((b * heads + h) * T * T, (b * heads + h + 1) * T * T);
        this.backend.gemm(true, false, T, d, T, p, dO, g); // dV = Pᵀ·dO
        scatter(g, T, d, dqkv, at + 2 * C, 3 * C);
        this.backend.gemm(false, true, T, T, d, dO, v, dp); // dP = dO·Vᵀ
        causalSoftmaxBackward(p, dp, T, scale);
        this.backend.gemm(false, false, T, d, T, dp, k, g); // dQ = dS·K
        scatter(g, T, d, dqkv, at, 3 * C);
        this.backend.gemm(true, false, T, d, T, dp, q, g); // dK = dSᵀ·Q
        scatter(g, T, d, dqkv, at + C, 3 * C);
      }
  }
}

/**
 * The base of a backend whose transformer kernels are TypeScript (the reference and WASM ones):
 * shape checks, then the functions above; attention's products on the backend's own GEMM.
 */
export abstract class TransformerKernels implements Pick<Backend, 'gelu' | 'geluBackward' | 'layerNorm' | 'layerNormBackward' | 'causalAttention' | 'causalAttentionBackward'> {
  private gemmAttention: GemmAttention | null = null;
  private get attention(): GemmAttention {
    // Made at its first use: the backend (this object) is whole by then.
    return (this.gemmAttention ??= new GemmAttention(this as unknown as Backend));
  }

  gelu(x: Float32Array, y: Float32Array, tanh: Float32Array, n: number): void {
    checkLengths('gelu', n, x, y, tanh);
    gelu(x, y, tanh, n);
  }

  geluBackward(x: Float32Array, tanh: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    checkLengths('geluBackward', n, x, tanh, dy, dx);
    geluBackward(x, tanh, dy, dx, n);
  }

  layerNorm(x: Float32Array, rows: number, width: number, eps: number, gain: Float32Array, bias: Float32Array | null, xhat: Float32Array, rstd: Float32Array, y: Float32Array): void {
    checkLayerNorm('layerNorm', rows, width, [x, xhat, y], rstd, [gain, bias]);
    layerNorm(x, rows, width, eps, gain, bias, xhat, rstd, y);
  }

  layerNormBackward(dy: Float32Array, rows: number, width: number, xhat: Float32Array, rstd: Float32Array, gain: Float32Array, dgain: Float32Array, dbias: Float32Array | null, dx: Float32Array | null): void {
    checkLayerNorm('layerNormBackward', rows, width, dx ? [dy, xhat, dx] : [dy, xhat], rstd, [gain, dgain, dbias]);
    layerNormBackward(dy, rows, width, xhat, rstd, gain, dgain, dbias, dx);
  }

  causalAttention(qkv: Float32Array, shape: AttentionShape, probs: Float32Array, out: Float32Array): void {
    checkAttention('causalAttention', shape, { qkv: [qkv, 'qkv'], probs: [probs, 'probs'], out: [out, 'out'] });
    this.attention.forward(qkv, shape, probs, out);
  }

  causalAttentionBackward(qkv: Float32Array, shape: AttentionShape, probs: Float32Array, dout: Float32Array, dqkv: Float32Array): void {
    checkAttention('causalAttentionBackward', shape, { qkv: [qkv, 'qkv'], probs: [probs, 'probs'], dout: [dout, 'out'], dqkv: [dqkv, 'qkv'] });
    this.attention.backward(qkv, shape, probs, dout, dqkv);
  }
}

/** Each row t of the T×T scores becomes softmax(scale·s) over its first t + 1 entries, the rest exact zeros. */
function causalSoftmax(p: Float32Array, T: number, scale: number): void {
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
}

/** dP into dS = scale·P ∘ (dP − Σ_s P·dP), in place. */
function causalSoftmaxBackward(p: Float32Array, dp: Float32Array, T: number, scale: number): void {
  for (let t = 0; t < T; t++) {
    const r = t * T;
    let dot = 0;
    for (let s = 0; s <= t; s++) dot += p[r + s] * dp[r + s];
    for (let s = 0; s <= t; s++) dp[r + s] = p[r + s] * (dp[r + s] - dot) * scale;
    for (let s = t + 1; s < T; s++) dp[r + s] = 0;
  }
}

/** One head's q, k and v (d columns each, at `at`, `at + C`, `at + 2C` of rows 3C wide) as contiguous blocks. */
function gatherHead(qkv: Float32Array, at: number, C: number, T: number, d: number, q: Float32Array, k: Float32Array, v: Float32Array): void {
  gather(qkv, at, 3 * C, T, d, q);
  gather(qkv, at + C, 3 * C, T, d, k);
  gather(qkv, at + 2 * C, 3 * C, T, d, v);
}

/** rows×d values, each row `d` wide at `at + r·stride` of src, into a contiguous block. */
function gather(src: Float32Array, at: number, stride: number, rows: number, d: number, block: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const o = at + r * stride;
    for (let c = 0; c < d; c++) block[r * d + c] = src[o + c];
  }
}

/** The inverse of gather. */
function scatter(block: Float32Array, rows: number, d: number, dst: Float32Array, at: number, stride: number): void {
  for (let r = 0; r < rows; r++) {
    const o = at + r * stride;
    for (let c = 0; c < d; c++) dst[o + c] = block[r * d + c];
  }
}

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { type AttentionShape, checkAttention, checkGemm, checkLayerNorm, checkLengths, type DirectConv } from '../backend.js';
import type { Window } from '../layers/conv-geometry.js';
import { CoreError } from '../errors.js';
import { WasmBackend, type WasmBackendOptions } from './wasm-backend.js';

interface Addon {
  gemm(ta: boolean, tb: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, acc: boolean): void;
  setThreads(n: number): void;
  config(): string;
  /** The best instruction set the CPU runs the direct convolutions with: 2 AVX-512, 1 AVX2 + FMA, 0 none. */
  directConvIsa: number;
  /** Each conv call: its geometry (`ConvInts`), then its arrays. */
  convForward(...args: [...ConvInts, x: Float32Array, weight: Float32Array, bias: Float32Array, xpad: Float32Array, y: Float32Array]): void;
  convBackwardData(...args: [...ConvInts, dy: Float32Array, weight: Float32Array, dx: Float32Array]): void;
  convBackwardFilter(...args: [...ConvInts, dy: Float32Array, xpad: Float32Array, dw: Float32Array, db: Float32Array]): void;
  gelu(n: number, x: Float32Array, y: Float32Array, tanh: Float32Array): void;
  geluBackward(n: number, x: Float32Array, tanh: Float32Array, dy: Float32Array, dx: Float32Array): void;
  layerNorm(rows: number, width: number, eps: number, x: Float32Array, gain: Float32Array, bias: Float32Array | null, xhat: Float32Array, rstd: Float32Array, y: Float32Array): void;
  softmaxCrossEntropy(rows: number, classes: number, logits: Float32Array, labels: Int32Array, grad: Float32Array | null, scale: number): number;
  fixedPointHalves(count: number, p: number, micro: Float32Array, offsets: Int32Array, perQ: Float64Array, halves: Float32Array): void;
  fixedPointMean(p: number, offsets: Int32Array, perMicro: Float64Array, halves: Float32Array, grads: Float32Array): void;
  absMax(n: number, x: Float32Array): number;
  layerNormBackward(rows: number, width: number, dy: Float32Array, xhat: Float32Array, rstd: Float32Array, gain: Float32Array, dgain: Float32Array, dbias: Float32Array | null, dx: Float32Array | null): void;
  attention(batch: number, context: number, heads: number, headDim: number, qkv: Float32Array, probs: Float32Array, out: Float32Array): void;
  attentionBackward(batch: number, context: number, heads: number, headDim: number, qkv: Float32Array, probs: Float32Array, dout: Float32Array, dqkv: Float32Array): void;
}

/** batch, c, h, w, k, outH, outW, filters, padTop, padLeft, instruction set (ringtrain_blas.c). */
type ConvInts = [batch: number, c: number, h: number, w: number, k: number, outH: number, outW: number, filters: number, padTop: number, padLeft: number, isa: number];

const addonPath = fileURLToPath(new URL('../../native/build/Release/ringtrain_blas.node', import.meta.url));

/** Loads the OpenBLAS addon, or says why it cannot. */
export function loadNativeAddon(): { addon: Addon } | { reason: string } {
  if (process.env.RINGTRAIN_DISABLE_NATIVE === '1') return { reason: 'disabled by RINGTRAIN_DISABLE_NATIVE=1' };
  if (!existsSync(addonPath)) return { reason: `addon not built (${addonPath} is missing)` };
  try {
    return { addon: createRequire(import.meta.url)(addonPath) as Addon };
  } catch (err) {
    return { reason: `addon failed to load: ${(err as Error).message}` };
  }
}

export interface NativeBackendOptions extends WasmBackendOptions {
  /** The direct convolutions' instruction set (default: RINGTRAIN_DIRECT_CONV, else the best the CPU has); '0' for none. */
  directConv?: '0' | 'avx2' | 'avx512';
}

/**
 * GEMM by the system's OpenBLAS `cblas_sgemm` through the project's N-API addon, pinned to one
 * thread, and a transformer's GELU, LayerNorm and attention in C (native/transformer.c);
 * everything else (memory, optimizer updates) as the WASM backend, whose SIMD loops beat plain JS
 * on the elementwise work. The addon reads the WASM memory in place: no copies.
 */
export class NativeBackend extends WasmBackend {
  override readonly name = 'native' as const;
  override readonly description: string;
  readonly directConv?: DirectConv;
  private readonly addon: Addon;

  constructor(options: NativeBackendOptions = {}) {
    super(options);
    const loaded = loadNativeAddon();
    if ('reason' in loaded) throw new CoreError('ERR_BACKEND', `native backend unavailable: ${loaded.reason}`);
    this.addon = loaded.addon;
    const isa = directConvIsa(this.addon.directConvIsa, options.directConv ?? process.env.RINGTRAIN_DIRECT_CONV);
    if (isa) this.directConv = nativeDirectConv(this.addon, ISA_CODES[isa], (a, what) => this.offset(a, what));
    this.description = `native (${this.addon.config().trim()}, 1 thread; ${isa ? `stride-1 convolutions direct on ${isa.toUpperCase()}; ` : ''}GELU, LayerNorm and attention in C; other elementwise on WASM SIMD)`;
  }

  override gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, accumulate = false): void {
    checkGemm(m, n, k, a, b, c);
    this.offset(a, 'A');
    this.offset(b, 'B');
    this.offset(c, 'C');
    this.addon.gemm(transA, transB, m, n, k, a, b, c, accumulate);
  }

  softmaxCrossEntropy(logits: Float32Array, labels: Int32Array, rows: number, classes: number, grad: Float32Array | null, scale: number): number {
    checkLengths('softmaxCrossEntropy', rows * classes, logits, ...(grad ? [grad] : []));
    return rows > 0 ? this.addon.softmaxCrossEntropy(rows, classes, logits, labels, grad, scale) : 0;
  }

  fixedPointHalves(micro: Float32Array, count: number, p: number, offsets: Int32Array, perQ: Float64Array, halves: Float32Array): void {
    if (count > 0 && p > 0) this.addon.fixedPointHalves(count, p, micro, offsets, perQ, halves);
    else if (p > 0) halves.fill(0, 0, 2 * p);
  }

  fixedPointMean(halves: Float32Array, p: number, offsets: Int32Array, perMicro: Float64Array, grads: Float32Array): void {
    if (p > 0) this.addon.fixedPointMean(p, offsets, perMicro, halves, grads);
  }

  absMax(x: Float32Array, n: number): number {
    return n > 0 ? this.addon.absMax(n, x) : 0;
  }

  override gelu(x: Float32Array, y: Float32Array, tanh: Float32Array, n: number): void {
    checkLengths('gelu', n, x, y, tanh);
    if (n > 0) this.addon.gelu(n, x, y, tanh);
  }

  override geluBackward(x: Float32Array, tanh: Float32Array, dy: Float32Array, dx: Float32Array, n: number): void {
    checkLengths('geluBackward', n, x, tanh, dy, dx);
    if (n > 0) this.addon.geluBackward(n, x, tanh, dy, dx);
  }

  override layerNorm(x: Float32Array, rows: number, width: number, eps: number, gain: Float32Array, bias: Float32Array | null, xhat: Float32Array, rstd: Float32Array, y: Float32Array): void {
    checkLayerNorm('layerNorm', rows, width, [x, xhat, y], rstd, [gain, bias]);
    this.addon.layerNorm(rows, width, eps, x, gain, bias, xhat, rstd, y);
  }

  override layerNormBackward(dy: Float32Array, rows: number, width: number, xhat: Float32Array, rstd: Float32Array, gain: Float32Array, dgain: Float32Array, dbias: Float32Array | null, dx: Float32Array | null): void {
    checkLayerNorm('layerNormBackward', rows, width, dx ? [dy, xhat, dx] : [dy, xhat], rstd, [gain, dgain, dbias]);
    this.addon.layerNormBackward(rows, width, dy, xhat, rstd, gain, dgain, dbias, dx);
  }

  override causalAttention(qkv: Float32Array, s: AttentionShape, probs: Float32Array, out: Float32Array): void {
    checkAttention('causalAttention', s, { qkv: [qkv, 'qkv'], probs: [probs, 'probs'], out: [out, 'out'] });
    this.addon.attention(s.batch, s.context, s.heads, s.headDim, qkv, probs, out);
  }

  override causalAttentionBackward(qkv: Float32Array, s: AttentionShape, probs: Float32Array, dout: Float32Array, dqkv: Float32Array): void {
    checkAttention('causalAttentionBackward', s, { qkv: [qkv, 'qkv'], probs: [probs, 'probs'], dout: [dout, 'out'], dqkv: [dqkv, 'qkv'] });
    this.addon.attentionBackward(s.batch, s.context, s.heads, s.headDim, qkv, probs, dout, dqkv);
  }
}

const ISA_CODES = { avx2: 1, avx512: 2 } as const;
type Isa = keyof typeof ISA_CODES;

/**
 * The direct convolutions' instruction set: the best the CPU has, or the one asked for
 * (`RINGTRAIN_DIRECT_CONV=avx2` to compare, `0` for im2col + GEMM), never one it lacks.
 */
function directConvIsa(available: number, asked: string | undefined): Isa | null {
  if (asked === '0' || available < ISA_CODES.avx2) return null;
  if (asked === 'avx2') return 'avx2';
  if (asked !== undefined && asked !== '' && asked !== 'avx512') throw new CoreError('ERR_BACKEND', `RINGTRAIN_DIRECT_CONV must be 0, avx2 or avx512, got ${JSON.stringify(asked)}`);
  return available >= ISA_CODES.avx512 ? 'avx512' : 'avx2';
}

/** Floats of one sample's padded planes: the addon's DC_PAD_H × DC_PAD_W (direct_conv.h) per channel. */
const paddedPlane = (g: Window): number => (g.outH + g.kh) * (g.outW + g.kw + 4);

function nativeDirectConv(addon: Addon, isa: number, inMemory: (a: Float32Array, what: string) => void): DirectConv {
  const ints = (batch: number, c: number, h: number, w: number, g: Window, filters: number): ConvInts => [batch, c, h, w, g.kh, g.outH, g.outW, filters, g.padTop, g.padLeft, isa];
  return {
    paddedLength: (batch, c, g) => batch * c * paddedPlane(g),
    forward(x, batch, c, h, w, g, weight, filters, bias, xpad, y) {
      for (const [a, what] of [[x, 'x'], [weight, 'weight'], [bias, 'bias'], [xpad, 'xpad'], [y, 'y']] as const) inMemory(a, what);
      addon.convForward(...ints(batch, c, h, w, g, filters), x, weight, bias, xpad, y);
    },
    backwardData(dy, batch, c, h, w, g, weight, filters, dx) {
      for (const [a, what] of [[dy, 'dy'], [weight, 'weight'], [dx, 'dx']] as const) inMemory(a, what);
      addon.convBackwardData(...ints(batch, c, h, w, g, filters), dy, weight, dx);
    },
    // The weight gradient needs no input size: the padded input's size follows from the output's.
    backwardFilter(dy, batch, c, g, filters, xpad, dw, db) {
      for (const [a, what] of [[dy, 'dy'], [xpad, 'xpad'], [dw, 'dw'], [db, 'db']] as const) inMemory(a, what);
      addon.convBackwardFilter(...ints(batch, c, g.outH, g.outW, g, filters), dy, xpad, dw, db);
    },
  };
}

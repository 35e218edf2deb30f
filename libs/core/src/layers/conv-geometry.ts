import { CoreError } from '../errors.js';

/** A tensor shape without the batch: [C, H, W] for images, [F] for flat features. */
export type Shape = readonly number[];

/** How a 2-D window (a kernel or a pool) slides over an H×W plane; padding may be uneven ("same"). */
export interface Window {
  kh: number;
  kw: number;
  stride: number;
  padTop: number;
  padLeft: number;
  outH: number;
  outW: number;
}

/**
 * The window's geometry over an input of `h`×`w`. Padding "same" is TensorFlow's: the output is
 * ⌈h/stride⌉ × ⌈w/stride⌉, the extra row or column of an odd total goes to the bottom and right.
 */
export function windowOver(h: number, w: number, kh: number, kw: number, stride: number, padding: 'same' | 'valid' | number, what: string): Window {
  let padTop = 0;
  let padLeft = 0;
  let outH: number;
  let outW: number;
  if (padding === 'same') {
    outH = Math.ceil(h / stride);
    outW = Math.ceil(w / stride);
    padTop = Math.floor(Math.max(0, (outH - 1) * stride + kh - h) / 2);
    padLeft = Math.floor(Math.max(0, (outW - 1) * stride + kw - w) / 2);
  } else {
    const p = padding === 'valid' ? 0 : padding;
    padTop = p;
    padLeft = p;
    outH = Math.floor((h + 2 * p - kh) / stride) + 1;
    outW = Math.floor((w + 2 * p - kw) / stride) + 1;
  }
  if (!(outH > 0 && outW > 0)) throw new CoreError('ERR_SPEC', `${what}: a ${kh}×${kw} window with stride ${stride} and padding ${padding} does not fit a ${h}×${w} input`);
  return { kh, kw, stride, padTop, padLeft, outH, outW };
}

/** For kernel column j: the output columns whose input column lies inside the image, [lo, hi). */
function validColumns(g: Window, w: number, j: number): [number, number] {
  const lo = Math.max(0, Math.ceil((g.padLeft - j) / g.stride));
  const hi = Math.min(g.outW, Math.floor((w - 1 + g.padLeft - j) / g.stride) + 1);
  return [lo, Math.max(lo, hi)];
}

/**
 * im2col for a batch: sample n's block of `col` is [C·kh·kw, outH·outW], one row per (channel,
 * kernel row, kernel column), one column per output pixel, zero where the window covers padding.
 * Then sample n's convolution is one GEMM, W[F, C·kh·kw] · block, written straight into its NCHW
 * output. Loops run sample by sample, channel by channel (the plane read stays in cache) and over
 * the valid columns only: no bounds test per element. The WASM kernel (assembly/kernels.ts) is the
 * same loop nest.
 */
export function im2col(x: Float32Array, batch: number, c: number, h: number, w: number, g: Window, col: Float32Array): void {
  const { kh, kw, stride, padTop, outH, outW } = g;
  const plane = outH * outW;
  for (let n = 0; n < batch; n++) {
    for (let ch = 0; ch < c; ch++) {
      const src = (n * c + ch) * h * w;
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const [lo, hi] = validColumns(g, w, j);
          const first = lo * stride - g.padLeft + j;
          let o = (((n * c + ch) * kh + i) * kw + j) * plane;
          for (let oy = 0; oy < outH; oy++, o += outW) {
            const y = oy * stride - padTop + i;
            // Plain loops, not fill(): a builtin call per short row costs more than the row.
            if (y < 0 || y >= h) {
              for (let ox = 0; ox < outW; ox++) col[o + ox] = 0;
              continue;
            }
            for (let ox = 0; ox < lo; ox++) col[o + ox] = 0;
            let at = src + y * w + first;
            for (let ox = lo; ox < hi; ox++, at += stride) col[o + ox] = x[at];
            for (let ox = hi; ox < outW; ox++) col[o + ox] = 0;
          }
        }
      }
    }
  }
}

/** The adjoint of im2col: dx (zeroed first) collects every entry of `col` at the pixel it came from. */
export function col2im(col: Float32Array, batch: number, c: number, h: number, w: number, g: Window, dx: Float32Array): void {
  const { kh, kw, stride, padTop, outH, outW } = g;
  const plane = outH * outW;
  for (let n = 0; n < batch; n++) {
    for (let ch = 0; ch < c; ch++) {
      const dst = (n * c + ch) * h * w;
      for (let p = dst; p < dst + h * w; p++) dx[p] = 0;
      for (let i = 0; i < kh; i++) {
        for (let j = 0; j < kw; j++) {
          const [lo, hi] = validColumns(g, w, j);
          const first = lo * stride - g.padLeft + j;
          let o = (((n * c + ch) * kh + i) * kw + j) * plane;
          for (let oy = 0; oy < outH; oy++, o += outW) {
            const y = oy * stride - padTop + i;
            if (y < 0 || y >= h) continue;
            let at = dst + y * w + first;
            for (let ox = lo; ox < hi; ox++, at += stride) dx[at] += col[o + ox];
          }
        }
      }
    }
  }
}

/** Max pooling over NCHW planes (the reference of the backends' kernel): y, and each maximum's index in x (first on a tie). */
export function maxPool(x: Float32Array, planes: number, h: number, w: number, g: Window, y: Float32Array, argmax: Float32Array): void {
  const { kh, kw, stride, outH, outW } = g;
  const index = new Int32Array(argmax.buffer, argmax.byteOffset, argmax.length);
  let o = 0;
  for (let plane = 0; plane < planes; plane++) {
    const base = plane * h * w;
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++, o++) {
        const top = base + oy * stride * w + ox * stride;
        let best = top;
        for (let i = 0; i < kh; i++) for (let j = 0; j < kw; j++) if (x[top + i * w + j] > x[best]) best = top + i * w + j;
        y[o] = x[best];
        index[o] = best;
      }
    }
  }
}

/** dx (zeroed first) gets each output's gradient where its maximum was. */
export function maxPoolBackward(dy: Float32Array, argmax: Float32Array, n: number, dx: Float32Array, inputs: number): void {
  const index = new Int32Array(argmax.buffer, argmax.byteOffset, argmax.length);
  dx.fill(0, 0, inputs);
  for (let o = 0; o < n; o++) dx[index[o]] += dy[o];
}

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

/**
 * im2col for a batch: `col` is [C·kh·kw, N·outH·outW], one row per (channel, kernel row, kernel
 * column), one column per output pixel of every sample, zero where the window covers padding. Then
 * a convolution is one GEMM, W[F, C·kh·kw] · col.
 */
export function im2col(x: Float32Array, batch: number, c: number, h: number, w: number, g: Window, col: Float32Array): void {
  const { kh, kw, stride, padTop, padLeft, outH, outW } = g;
  const plane = outH * outW;
  const cols = batch * plane;
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const row = ((ch * kh + i) * kw + j) * cols;
        for (let n = 0; n < batch; n++) {
          const src = (n * c + ch) * h * w;
          let o = row + n * plane;
          for (let oy = 0; oy < outH; oy++) {
            const y = oy * stride - padTop + i;
            if (y < 0 || y >= h) {
              col.fill(0, o, o + outW);
              o += outW;
              continue;
            }
            const line = src + y * w;
            for (let ox = 0; ox < outW; ox++, o++) {
              const xx = ox * stride - padLeft + j;
              col[o] = xx >= 0 && xx < w ? x[line + xx] : 0;
            }
          }
        }
      }
    }
  }
}

/** The adjoint of im2col: adds every entry of `col` back to the input pixel it came from (dx = 0 first). */
export function col2im(col: Float32Array, batch: number, c: number, h: number, w: number, g: Window, dx: Float32Array): void {
  const { kh, kw, stride, padTop, padLeft, outH, outW } = g;
  const plane = outH * outW;
  const cols = batch * plane;
  dx.fill(0, 0, batch * c * h * w);
  for (let ch = 0; ch < c; ch++) {
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const row = ((ch * kh + i) * kw + j) * cols;
        for (let n = 0; n < batch; n++) {
          const dst = (n * c + ch) * h * w;
          let o = row + n * plane;
          for (let oy = 0; oy < outH; oy++) {
            const y = oy * stride - padTop + i;
            if (y < 0 || y >= h) {
              o += outW;
              continue;
            }
            const line = dst + y * w;
            for (let ox = 0; ox < outW; ox++, o++) {
              const xx = ox * stride - padLeft + j;
              if (xx >= 0 && xx < w) dx[line + xx] += col[o];
            }
          }
        }
      }
    }
  }
}

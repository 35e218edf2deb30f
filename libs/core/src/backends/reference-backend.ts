import { type AdamHyper, type AttentionShape, type Backend, checkGemm, checkPool, checkPoolBackward, checkSameLength, checkUnfold, type SgdHyper } from '../backend.js';
import { col2im, im2col, maxPool, maxPoolBackward, type Window } from '../layers/conv-geometry.js';
import { addBiasRows, leakyRelu, leakyReluBackward, sumRows } from '../ops.js';
import { TransformerKernels } from '../transformer-ops.js';

/** Plain loops with float64 accumulation: slow, obviously right, the yardstick for the others. */
export class ReferenceBackend extends TransformerKernels implements Backend {
  readonly name = 'reference' as const;
  readonly description = 'reference (plain TypeScript loops)';

  alloc(length: number): Float32Array {
    return new Float32Array(length);
  }

  free(): void {}

  gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, a: Float32Array, b: Float32Array, c: Float32Array, accumulate = false): void {
    checkGemm(m, n, k, a, b, c);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = accumulate ? c[i * n + j] : 0;
        for (let p = 0; p < k; p++) {
          sum += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
        }
        c[i * n + j] = sum;
      }
    }
  }

  addBiasRows(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
    addBiasRows(y, bias, rows, cols);
  }

  sumRows(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
    sumRows(x, rows, cols, out);
  }

  im2col(x: Float32Array, batch: number, c: number, h: number, w: number, g: Window, col: Float32Array): void {
    checkUnfold('im2col', x, col, batch, c, h, w, g);
    im2col(x, batch, c, h, w, g, col);
  }

  col2im(col: Float32Array, batch: number, c: number, h: number, w: number, g: Window, dx: Float32Array): void {
    checkUnfold('col2im', dx, col, batch, c, h, w, g);
    col2im(col, batch, c, h, w, g, dx);
  }

  maxPool(x: Float32Array, planes: number, h: number, w: number, g: Window, y: Float32Array, argmax: Float32Array): void {
    checkPool(x, planes, h, w, g, y, argmax);
    maxPool(x, planes, h, w, g, y, argmax);
  }

  maxPoolBackward(dy: Float32Array, argmax: Float32Array, n: number, dx: Float32Array, inputs: number): void {
    checkPoolBackward(dy, argmax, n, dx, inputs);
    maxPoolBackward(dy, argmax, n, dx, inputs);
  }

  leakyRelu(x: Float32Array, y: Float32Array, n: number, alpha: number): void {
    leakyRelu(x, y, n, alpha);
  }

  leakyReluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array, n: number, alpha: number): void {
    leakyReluBackward(x, dy, dx, n, alpha);
  }

  sgdUpdate(p: Float32Array, g: Float32Array, v: Float32Array | null, h: SgdHyper): void {
    checkSameLength('sgdUpdate', p, g, v);
    for (let i = 0; i < p.length; i++) {
      const gi = g[i] + h.weightDecay * p[i];
      let step = gi;
      if (v) {
        v[i] = h.momentum * v[i] + gi;
        step = h.nesterov ? gi + h.momentum * v[i] : v[i];
      }
      p[i] -= h.lr * step;
    }
  }

  adamUpdate(p: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, h: AdamHyper): void {
    checkSameLength('adamUpdate', p, g, m, v);
    for (let i = 0; i < p.length; i++) {
      const gi = g[i] + h.l2 * p[i];
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
      p[i] = p[i] * h.shrink - (h.stepSize * m[i]) / (Math.sqrt(v[i]) / h.rootCorrection + h.eps);
    }
  }
}

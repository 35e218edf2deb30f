import { type Backend, checkGemm } from '../backend.js';

/** Plain loops with float64 accumulation: slow, obviously right, the yardstick for the others. */
export class ReferenceBackend implements Backend {
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
}

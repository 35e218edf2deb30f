import { CoreError } from './errors.js';

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

// Elementwise kernels and reductions shared by every backend. Rows are samples, columns features;
// all buffers are row-major and may be longer than rows·cols (reused capacity).

/** y[r, :] += bias for each row. */
export function addBiasRows(y: Float32Array, bias: Float32Array, rows: number, cols: number): void {
  for (let r = 0, o = 0; r < rows; r++, o += cols) {
    for (let c = 0; c < cols; c++) y[o + c] += bias[c];
  }
}

/** out[c] = Σ_r x[r, c] (the bias gradient). */
export function sumRows(x: Float32Array, rows: number, cols: number, out: Float32Array): void {
  out.fill(0, 0, cols);
  for (let r = 0, o = 0; r < rows; r++, o += cols) {
    for (let c = 0; c < cols; c++) out[c] += x[o + c];
  }
}

/** y = x > 0 ? x : α·x */
export function leakyRelu(x: Float32Array, y: Float32Array, n: number, alpha: number): void {
  for (let i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : alpha * x[i];
}

/** dx = x > 0 ? dy : α·dy */
export function leakyReluBackward(x: Float32Array, dy: Float32Array, dx: Float32Array, n: number, alpha: number): void {
  for (let i = 0; i < n; i++) dx[i] = x[i] > 0 ? dy[i] : alpha * dy[i];
}

/** Sum of squares, accumulated in float64 (four accumulators: ~4× faster than one in V8). */
export function sumSquares(x: Float32Array): number {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n = x.length & ~3;
  for (let i = 0; i < n; i += 4) {
    s0 += x[i] * x[i];
    s1 += x[i + 1] * x[i + 1];
    s2 += x[i + 2] * x[i + 2];
    s3 += x[i + 3] * x[i + 3];
  }
  for (let i = n; i < x.length; i++) s0 += x[i] * x[i];
  return s0 + s1 + s2 + s3;
}

/**
 * True when every element is finite. The float64 sum of float32 values cannot overflow, so it is
 * NaN or ±Inf exactly when an element is; four accumulators let V8 keep up with memory (~25 µs
 * for 100k floats).
 */
export function allFinite(x: Float32Array): boolean {
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  const n = x.length & ~3;
  for (let i = 0; i < n; i += 4) {
    s0 += x[i];
    s1 += x[i + 1];
    s2 += x[i + 2];
    s3 += x[i + 3];
  }
  for (let i = n; i < x.length; i++) s0 += x[i];
  const s = s0 + s1 + s2 + s3;
  return s - s === 0;
}

/** Index of the first NaN or ±Inf element, or -1. */
export function firstNonFinite(x: Float32Array): number {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return i;
  return -1;
}

/** x *= s in place. */
export function scale(x: Float32Array, s: number): void {
  for (let i = 0; i < x.length; i++) x[i] *= s;
}

/** Index of the largest value in row r. */
export function argmaxRow(x: Float32Array, r: number, cols: number): number {
  const o = r * cols;
  let best = 0;
  for (let c = 1; c < cols; c++) if (x[o + c] > x[o + best]) best = c;
  return best;
}

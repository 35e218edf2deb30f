import { CoreError } from './errors.js';

/** Weights of one [rows, cols] matrix quantized symmetrically per row (per output channel). */
export interface QuantizedRows {
  bits: 8 | 4;
  rows: number;
  cols: number;
  /** One value per element in [−(2^(bits−1)−1), 2^(bits−1)−1]. */
  values: Int8Array;
  /** Per row: the float that one quantization step stands for (w ≈ q · scale). */
  scales: Float32Array;
}

/** Symmetric per-row quantization: scale = max|w| / (2^(bits−1) − 1), q = round(w / scale). */
export function quantizeRows(w: Float32Array, rows: number, cols: number, bits: 8 | 4): QuantizedRows {
  if (w.length !== rows * cols) throw new CoreError('ERR_SHAPE', `quantizeRows: ${w.length} values for [${rows}, ${cols}]`);
  const qmax = bits === 8 ? 127 : 7;
  const values = new Int8Array(w.length);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let max = 0;
    for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(w[r * cols + c]));
    const scale = max > 0 ? max / qmax : 1;
    scales[r] = scale;
    for (let c = 0; c < cols; c++) values[r * cols + c] = Math.max(-qmax, Math.min(qmax, Math.round(w[r * cols + c] / scale)));
  }
  return { bits, rows, cols, values, scales };
}

export function dequantizeRows(q: QuantizedRows, out: Float32Array = new Float32Array(q.values.length)): Float32Array {
  for (let r = 0; r < q.rows; r++) for (let c = 0; c < q.cols; c++) out[r * q.cols + c] = q.values[r * q.cols + c] * q.scales[r];
  return out;
}

/** Two 4-bit values per byte, low nibble first, each row padded to whole bytes (two's complement nibbles). */
export function packInt4(q: QuantizedRows): Uint8Array {
  const bytesPerRow = Math.ceil(q.cols / 2);
  const out = new Uint8Array(q.rows * bytesPerRow);
  for (let r = 0; r < q.rows; r++) {
    for (let c = 0; c < q.cols; c++) {
      const nibble = q.values[r * q.cols + c] & 0x0f;
      out[r * bytesPerRow + (c >> 1)] |= c & 1 ? nibble << 4 : nibble;
    }
  }
  return out;
}

export function unpackInt4(packed: Uint8Array, rows: number, cols: number): Int8Array {
  const bytesPerRow = Math.ceil(cols / 2);
  const out = new Int8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const b = packed[r * bytesPerRow + (c >> 1)];
      const nibble = c & 1 ? b >> 4 : b & 0x0f;
      out[r * cols + c] = nibble & 0x08 ? nibble - 16 : nibble;
    }
  }
  return out;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** IEEE half-precision bits of `x`, rounded to nearest even (overflow to ±Inf, NaN kept). */
export function toFloat16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && m & 1)) m++;
    return sign | m;
  }
  let m = mant >>> 13;
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && m & 1)) {
    m++;
    if (m === 0x400) {
      m = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | m;
}

export function fromFloat16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

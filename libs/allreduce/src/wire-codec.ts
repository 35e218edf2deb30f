import { Dtype, payloadBytes } from '@ringtrain/protocol';
import { nativeCodecs } from './reduce-kernel.js';

/** How an all-reduce puts its floats on the wire: as they are, or compressed. */
export type WireFormat = 'float32' | 'fp16' | 'bf16' | 'int8';

/**
 * One wire format: encodes a run of float32s into payload bytes and decodes them back. Decoding
 * is a pure function of the bytes, so every rank that decodes the same payload holds the same
 * floats; that is what keeps compressed replicas bit-identical.
 */
export interface WireCodec {
  readonly format: WireFormat;
  readonly dtype: Dtype;
  /** Payload bytes for `count` floats. */
  bytes(count: number): number;
  encode(src: Float32Array, out: Uint8Array): void;
  decode(payload: Uint8Array, out: Float32Array): void;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 bits → IEEE half bits, rounding to nearest even; overflow goes to ±Inf, NaN stays NaN. */
export function halfBits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const e = (bits >>> 23) & 0xff;
  let m = bits & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const exp = e - 112; // rebias 127 → 15
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign; // below half the smallest subnormal: zero
    m |= 0x800000;
    const shift = 14 - exp;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rest > mid || (rest === mid && half & 1)) half++;
    return sign | half;
  }
  let half = sign | (exp << 10) | (m >>> 13);
  const rest = m & 0x1fff;
  // A carry out of the mantissa rolls into the exponent: the next binade, or Inf past 65504.
  if (rest > 0x1000 || (rest === 0x1000 && half & 1)) half++;
  return half;
}

/** Every half's float32 value, indexed by its bits: decoding is one table lookup. Made on first use (start-up). */
let halfTable: Float32Array | null = null;
function halfValues(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? sign * m * 2 ** -24 : e === 0x1f ? (m ? Number.NaN : sign * Number.POSITIVE_INFINITY) : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  return (halfTable = t);
}

/** float32 bits → bfloat16 bits (the top half), rounding to nearest even; NaN stays NaN. */
export function bfloatBits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) & 0x8000) | 0x7fc0;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

const u16 = (bytes: Uint8Array): Uint16Array => new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);

const float32: WireCodec = {
  format: 'float32',
  dtype: Dtype.float32,
  bytes: (n) => n * 4,
  encode: (src, out) => out.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength)),
  decode: (payload, out) => new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(payload.subarray(0, out.byteLength)),
};

const fp16: WireCodec = {
  format: 'fp16',
  dtype: Dtype.float16,
  bytes: (n) => n * 2,
  encode(src, out) {
    const h = u16(out);
    for (let i = 0; i < src.length; i++) {
      f32[0] = src[i];
      h[i] = halfBits(u32[0]);
    }
  },
  decode(payload, out) {
    const h = u16(payload);
    const values = halfValues();
    for (let i = 0; i < out.length; i++) out[i] = values[h[i]];
  },
};

const bf16: WireCodec = {
  format: 'bf16',
  dtype: Dtype.bfloat16,
  bytes: (n) => n * 2,
  encode(src, out) {
    const h = u16(out);
    for (let i = 0; i < src.length; i++) {
      f32[0] = src[i];
      h[i] = bfloatBits(u32[0]);
    }
  },
  decode(payload, out) {
    const h = u16(payload);
    for (let i = 0; i < out.length; i++) {
      u32[0] = h[i] << 16;
      out[i] = f32[0];
    }
  },
};

/**
 * int8 with one scale per payload (per segment: the bucket): scale = max|x| / 127, and q is
 * x × (127 / max|x|) in float32, rounded to the nearest integer (ties up) and clamped to ±127. A
 * segment with a NaN or ±Inf gets a NaN scale, so that every value decodes to NaN and the ring's
 * finiteness check still sees it.
 */
const int8: WireCodec = {
  format: 'int8',
  dtype: Dtype.int8,
  bytes: (n) => payloadBytes(Dtype.int8, n),
  encode(src, out) {
    let max = 0;
    let finite = true;
    for (let i = 0; i < src.length; i++) {
      const a = Math.abs(src[i]);
      if (a > max) max = a;
      else if (!(a <= max)) finite = false; // NaN compares false both ways
    }
    if (max === Number.POSITIVE_INFINITY) finite = false;
    const inv = Math.fround(127 / max);
    // Below 1e-40 or so, 127 / max overflows float32: such a segment is sent as zeros.
    const scale = !finite ? Number.NaN : inv === Number.POSITIVE_INFINITY ? 0 : Math.fround(max / 127);
    new DataView(out.buffer, out.byteOffset, 4).setFloat32(0, scale, true);
    const q = new Int8Array(out.buffer, out.byteOffset + 4, src.length);
    if (!(scale > 0)) return void q.fill(0);
    for (let i = 0; i < src.length; i++) {
      // A product of two float32s is exact in a double: fround gives the float32 product.
      const v = Math.fround(src[i] * inv);
      let r = Math.floor(v);
      if (v - r >= 0.5) r++;
      q[i] = r > 127 ? 127 : r < -127 ? -127 : r;
    }
  },
  decode(payload, out) {
    const scale = new DataView(payload.buffer, payload.byteOffset, 4).getFloat32(0, true);
    const q = new Int8Array(payload.buffer, payload.byteOffset + 4, out.length);
    for (let i = 0; i < out.length; i++) out[i] = Math.fround(q[i] * scale);
  },
};

const JS_CODECS: Record<WireFormat, WireCodec> = { float32, fp16, bf16, int8 };

/** The same codecs compiled (about 10× faster than V8 runs the loops above), where the addon loads. */
const CODECS: Record<WireFormat, WireCodec> = nativeCodecs
  ? {
      float32,
      fp16: { ...fp16, encode: nativeCodecs.encodeFloat16, decode: nativeCodecs.decodeFloat16 },
      bf16: { ...bf16, encode: nativeCodecs.encodeBfloat16, decode: nativeCodecs.decodeBfloat16 },
      int8: { ...int8, encode: nativeCodecs.encodeInt8, decode: nativeCodecs.decodeInt8 },
    }
  : JS_CODECS;

export function wireCodec(format: WireFormat): WireCodec {
  return CODECS[format];
}

/** The portable codecs, which the compiled ones must match bit for bit. */
export function portableWireCodec(format: WireFormat): WireCodec {
  return JS_CODECS[format];
}

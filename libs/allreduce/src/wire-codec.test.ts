import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { reduceKernel } from './reduce-kernel.js';
import { portableWireCodec, type WireFormat, wireCodec } from './wire-codec.js';

const roundTrip = (format: WireFormat, x: Float32Array): Float32Array => {
  const codec = wireCodec(format);
  const bytes = new Uint8Array(codec.bytes(x.length));
  codec.encode(x, bytes);
  const out = new Float32Array(x.length);
  codec.decode(bytes, out);
  return out;
};

/** Every value of a format in order (finite, positive), to find a float's nearest neighbours. */
function grid(format: 'fp16' | 'bf16'): Float64Array {
  const codec = wireCodec(format);
  const bits = new Uint16Array(format === 'fp16' ? 0x7c00 : 0x7f80); // 0 up to (not incl.) +Inf
  bits.forEach((_, i) => (bits[i] = i));
  const out = new Float32Array(bits.length);
  codec.decode(new Uint8Array(bits.buffer), out);
  return Float64Array.from(out);
}

/** The nearest value of the grid, ties to the one with the even (last) bit; past the top: Inf. */
function nearest(values: Float64Array, x: number, overflowAt: number): number {
  const a = Math.abs(x);
  if (a >= overflowAt) return Math.sign(x) * Number.POSITIVE_INFINITY;
  let lo = 0;
  let hi = values.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (values[mid] <= a) lo = mid;
    else hi = mid;
  }
  const [dl, dh] = [a - values[lo], values[hi] - a];
  const pick = dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi;
  const v = a >= values[values.length - 1] ? values[values.length - 1] : values[pick];
  return x < 0 || Object.is(x, -0) ? -v : v;
}

describe('wire codecs', () => {
  it('float16 and bfloat16 round every float32 to the nearest value, ties to even, Inf past the top, NaN kept', () => {
    // Overflow thresholds: halfway between the largest finite value and the next power step.
    const cases = [
      ['fp16', grid('fp16'), 65520],
      ['bf16', grid('bf16'), 3.3961775292304258e38],
    ] as const;
    for (const [format, values, overflowAt] of cases) {
      const floats = fc.sample(fc.float({ noNaN: true, noDefaultInfinity: true }), 3000);
      // Exact ties and values at the edges of the subnormals and the range.
      for (let i = 1; i < 400; i += 7) floats.push((values[i] + values[i + 1]) / 2, -(values[i] + values[i + 1]) / 2);
      floats.push(0, -0, values[1], values[1] / 2, values[1] * 0.51, values[values.length - 1], overflowAt, overflowAt * 0.999999, 1e-30, -1e30);
      const x = Float32Array.from(floats);
      const got = roundTrip(format, x);
      for (let i = 0; i < x.length; i++) {
        const want = nearest(values, x[i], overflowAt);
        if (!Object.is(got[i], Math.fround(want)) && !(got[i] === 0 && want === 0)) expect.fail(`${format}: ${x[i]} → ${got[i]}, want ${want}`);
      }
      expect(Number.isNaN(roundTrip(format, Float32Array.of(Number.NaN))[0])).toBe(true);
      expect(Array.from(roundTrip(format, Float32Array.of(Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY)))).toEqual([Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]);
    }
  });

  it('int8: one scale per payload (max|x| / 127), errors of at most half a step, zeros stay zeros, a NaN or Inf poisons the whole payload', () => {
    fc.assert(
      fc.property(fc.array(fc.float({ min: -1e6, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 300 }), (xs) => {
        const x = Float32Array.from(xs);
        const codec = wireCodec('int8');
        const bytes = new Uint8Array(codec.bytes(x.length));
        codec.encode(x, bytes);
        expect(bytes.length).toBe(4 + x.length);
        const scale = new DataView(bytes.buffer).getFloat32(0, true);
        const max = Math.max(...Array.from(x, Math.abs));
        // (Below 1e-40 or so 127 / max overflows float32, and the segment goes as zeros, scale 0.)
        expect(scale).toBe(Math.fround(127 / max) === Number.POSITIVE_INFINITY ? 0 : Math.fround(max / 127));
        const back = roundTrip('int8', x);
        // (A scale below the smallest float32, from values under 2e-43, sends zeros.)
        const tolerance = scale > 0 ? scale / 2 + max * 1e-6 : max;
        for (let i = 0; i < x.length; i++) expect(Math.abs(back[i] - x[i])).toBeLessThanOrEqual(tolerance);
      }),
    );
    expect(Array.from(roundTrip('int8', new Float32Array(5)))).toEqual([0, 0, 0, 0, 0]);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(roundTrip('int8', Float32Array.of(1, bad, 3)).every(Number.isNaN)).toBe(true);
      expect(roundTrip('int8', Float32Array.of(bad, 1, 3)).every(Number.isNaN)).toBe(true);
    }
  });

  it.skipIf(!reduceKernel.native && process.env.RINGTRAIN_EXPECT_NATIVE !== '1')('the compiled codecs give the portable ones\' bytes and floats, bit for bit', () => {
    expect(reduceKernel.native, reduceKernel.reason).toBe(true);
    const specials = [0, -0, 1, -1, 65504, 65520, 65519.99, 1e-8, -6e-8, 5.96e-8, 2.98e-8, 3e38, -3e38, 1.17e-38, 1e-45];
    for (const format of ['fp16', 'bf16', 'int8'] as const) {
      const [fast, portable] = [wireCodec(format), portableWireCodec(format)];
      expect(fast.encode).not.toBe(portable.encode);
      for (let trial = 0; trial < 20; trial++) {
        const x = Float32Array.from(fc.sample(fc.float({ noNaN: trial % 5 !== 4 }), 997));
        x.set(specials.slice(0, trial % specials.length), 0);
        const [a, b] = [new Uint8Array(fast.bytes(x.length)), new Uint8Array(portable.bytes(x.length))];
        fast.encode(x, a);
        portable.encode(x, b);
        expect(Buffer.from(a).equals(Buffer.from(b)), `${format} encode, trial ${trial}`).toBe(true);
        const [da, db] = [new Float32Array(x.length), new Float32Array(x.length)];
        fast.decode(a, da);
        portable.decode(a, db);
        expect(Buffer.from(da.buffer).equals(Buffer.from(db.buffer)) || (da.some(Number.isNaN) && da.every((v, i) => Object.is(v, db[i]) || (Number.isNaN(v) && Number.isNaN(db[i])))), `${format} decode, trial ${trial}`).toBe(true);
      }
    }
  });
});

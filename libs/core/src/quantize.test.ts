import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dequantizeRows, fromFloat16, packInt4, quantizeRows, toFloat16, unpackInt4 } from './quantize.js';

describe('quantization', () => {
  it('int8 and int4 per-row symmetric: error at most half a step per element, scales per row', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 9 }), fc.constantFrom(8 as const, 4 as const), fc.integer(), (rows, cols, bits, seed) => {
        const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(seed + i * 1.7) * (1 + (i % rows)));
        const q = quantizeRows(w, rows, cols, bits);
        const back = dequantizeRows(q);
        for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) expect(Math.abs(back[r * cols + c] - w[r * cols + c])).toBeLessThanOrEqual(q.scales[r] / 2 + 1e-6);
        if (bits === 4) expect(Array.from(unpackInt4(packInt4(q), rows, cols))).toEqual(Array.from(q.values));
      }),
    );
  });

  it('the scale is max|w| / qmax per row: the largest weight maps to ±qmax exactly', () => {
    const w = Float32Array.of(0.5, -2, 1, /* row 2 */ 0.25, 0.125, -0.0625, /* row 3 */ 0, 0, 0);
    for (const [bits, qmax] of [[8, 127], [4, 7]] as const) {
      const q = quantizeRows(w, 3, 3, bits);
      expect(Array.from(q.scales)).toEqual([Math.fround(2 / qmax), Math.fround(0.25 / qmax), 1]);
      expect(q.values[1]).toBe(-qmax);
      expect(q.values[3]).toBe(qmax);
      expect(Array.from(q.values.subarray(6))).toEqual([0, 0, 0]);
    }
    expect(() => quantizeRows(w, 2, 3, 8)).toThrow(/9 values for \[2, 3\]/);
  });

  it('int4 packs element 2k into the low nibble and 2k+1 into the high nibble, rows padded to whole bytes', () => {
    const q = { bits: 4 as const, rows: 2, cols: 3, values: Int8Array.of(1, -2, 7, -7, 0, -1), scales: Float32Array.of(1, 1) };
    const packed = packInt4(q);
    expect(Array.from(packed)).toEqual([0xe1, 0x07, 0x09, 0x0f]);
    expect(Array.from(unpackInt4(packed, 2, 3))).toEqual([1, -2, 7, -7, 0, -1]);
  });

  it('float16 conversion rounds to nearest even and keeps specials', () => {
    for (const x of [0, 1, -2, 0.5, 65504, 1e-7, 3.14159, -0.1]) expect(Math.abs(fromFloat16(toFloat16(x)) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11 + 2 ** -25);
    expect(toFloat16(1)).toBe(0x3c00);
    expect(toFloat16(65520)).toBe(0x7c00); // rounds up to infinity
    expect(Number.isNaN(fromFloat16(toFloat16(NaN)))).toBe(true);
    expect(toFloat16(1 + 2 ** -11)).toBe(0x3c00); // a tie rounds to even
  });
});

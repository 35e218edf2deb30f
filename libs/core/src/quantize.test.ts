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

  it('float16 conversion rounds to nearest even and keeps specials', () => {
    for (const x of [0, 1, -2, 0.5, 65504, 1e-7, 3.14159, -0.1]) expect(Math.abs(fromFloat16(toFloat16(x)) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11 + 2 ** -25);
    expect(toFloat16(1)).toBe(0x3c00);
    expect(toFloat16(65520)).toBe(0x7c00); // rounds up to infinity
    expect(Number.isNaN(fromFloat16(toFloat16(NaN)))).toBe(true);
    expect(toFloat16(1 + 2 ** -11)).toBe(0x3c00); // a tie rounds to even
  });
});

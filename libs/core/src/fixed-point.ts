// Deterministic mode's exact sums (the trainer's deterministic step): gradients rounded to a
// power-of-two grid per tensor, summed as integers (exact in any order) and sent as two float32
// halves. These are the TypeScript versions; the native backend has the same loops in C
// (native/fixed_point.c), with the same rounding, so both give the same bits.

/** x rounded to an integer, half to even (|x| < 2⁵¹), by the float64 adder: C's rint, and faster than Math.round. */
export function roundToInteger(x: number): number {
  return x + 6755399441055744 - 6755399441055744;
}

/**
 * Per element i of tensor t (offsets[t] ≤ i < offsets[t + 1]): s = Σ over the `count` micro-batches
 * of round(micro[j·p + i]·perQ[t]), then halves[i] = round(s / 65536), halves[p + i] = s − 65536·halves[i].
 */
export function fixedPointHalves(micro: Float32Array, count: number, p: number, offsets: Int32Array, perQ: Float64Array, halves: Float32Array): void {
  for (let t = 0; t + 1 < offsets.length; t++) {
    const k = perQ[t];
    for (let i = offsets[t]; i < offsets[t + 1]; i++) {
      let s = 0;
      for (let j = 0; j < count; j++) s += roundToInteger(micro[j * p + i] * k);
      const h = roundToInteger(s * (1 / 65536));
      halves[i] = h;
      halves[p + i] = s - h * 65536;
    }
  }
}

/** grads[i] = (65536·halves[i] + halves[p + i])·perMicro[t]. */
export function fixedPointMean(halves: Float32Array, p: number, offsets: Int32Array, perMicro: Float64Array, grads: Float32Array): void {
  for (let t = 0; t + 1 < offsets.length; t++) {
    const k = perMicro[t];
    for (let i = offsets[t]; i < offsets[t + 1]; i++) grads[i] = (halves[i] * 65536 + halves[p + i]) * k;
  }
}

/** The largest |x[i]| of n values; NaN when any is NaN. */
export function absMax(x: Float32Array, n: number): number {
  let m = 0;
  for (let i = 0; i < n; i++) {
    const a = Math.abs(x[i]);
    if (a > m) m = a;
    else if (a !== a) return Number.NaN;
  }
  return m;
}

// Deterministic mode's exact sums: gradients on a power-of-two grid per tensor, summed as
// integers (exact in any order), sent as two float32 halves. See fixed_point.c.
#ifndef RINGTRAIN_FIXED_POINT_H
#define RINGTRAIN_FIXED_POINT_H
#include <stddef.h>
#include <stdint.h>

// Per element i of tensor t (offsets[t] ≤ i < offsets[t + 1]): s = Σ over the `count` micro-batches
// of round(micro[j·p + i]·per_q[t]) (half to even), then halves[i] = round(s / 65536) and
// halves[p + i] = s − 65536·halves[i].
void rt_fixed_point_halves(size_t count, size_t p, const float *micro, size_t tensors, const int32_t *offsets, const double *per_q,
                           float *halves);
// grads[i] = (65536·halves[i] + halves[p + i])·per_micro[t].
void rt_fixed_point_mean(size_t p, size_t tensors, const int32_t *offsets, const double *per_micro, const float *halves, float *grads);
// The largest |x[i]| of n values; NaN when any is NaN.
float rt_abs_max(size_t n, const float *x);
#endif

// The loops of fixed_point.h, vectorized by the compiler (target clones). Rounding is rint's,
// half to even, as the TypeScript fallback's float64 adder rounds: both paths give the same bits.
#include "fixed_point.h"
#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RINGTRAIN_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

CLONES void rt_fixed_point_halves(size_t count, size_t p, const float *restrict micro, size_t tensors, const int32_t *restrict offsets,
                                  const double *restrict per_q, float *restrict halves) {
  for (size_t t = 0; t < tensors; t++) {
    const double k = per_q[t];
    for (size_t i = (size_t)offsets[t]; i < (size_t)offsets[t + 1]; i++) {
      double s = 0;
      for (size_t j = 0; j < count; j++) s += rint((double)micro[j * p + i] * k);
      const double h = rint(s * (1.0 / 65536)) + 0.0;  // +0, not rint's -0: the TypeScript version's bits
      halves[i] = (float)h;
      halves[p + i] = (float)(s - h * 65536);
    }
  }
}

CLONES void rt_fixed_point_mean(size_t p, size_t tensors, const int32_t *restrict offsets, const double *restrict per_micro,
                                const float *restrict halves, float *restrict grads) {
  for (size_t t = 0; t < tensors; t++) {
    const double k = per_micro[t];
    for (size_t i = (size_t)offsets[t]; i < (size_t)offsets[t + 1]; i++) grads[i] = (float)(((double)halves[i] * 65536 + halves[p + i]) * k);
  }
}

CLONES float rt_abs_max(size_t n, const float *restrict x) {
  float m = 0;
  int nan = 0;
  for (size_t i = 0; i < n; i++) {
    const float a = fabsf(x[i]);
    nan |= a != a;
    m = a > m ? a : m;
  }
  return nan ? NAN : m;
}

// The transformer kernels of transformer.h. Loops are written so that the compiler vectorizes
// them (target clones for AVX-512, AVX2 and plain x86-64), with no FMA contraction and sums kept
// in 16 fixed lanes: every clone gives the same bits, so a run's numbers do not depend on the CPU.
// exp is a polynomial of our own (Cephes' expf), not libm's, for the same reason and for speed.
#include "transformer.h"
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RINGTRAIN_NO_CLONES)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

#define LANES 16

// e^x (Cephes' expf: x = n·ln2 + r, |r| ≤ ln2/2, a polynomial in r, then 2ⁿ by the exponent
// bits), branch-free so that it vectorizes. Inputs are clamped to where 2ⁿ is a normal float; e^x
// below that is 0.
static inline float rt_exp(float x) {
  const float in = x;
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x/ln2) by the float adder: adding 1.5·2²³ leaves n in the low mantissa bits.
  const float shifter = 12582912.0f;
  union { float f; int32_t i; } fx = {.f = x * 1.44269504088896341f + shifter};
  const float nf = fx.f - shifter;
  const float r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  union { int32_t i; float f; } scale = {.i = (fx.i - 0x4B400000 + 127) << 23};
  return in < -87.0f ? 0.0f : p * scale.f;  // below the normal floats: flushed to 0
}

#define GELU_C 0.7978845608028654f  // √(2/π)
#define GELU_K 0.044715f

CLONES void rt_gelu(size_t n, const float *restrict x, float *restrict y, float *restrict tanh_u) {
  for (size_t i = 0; i < n; i++) {
    const float v = x[i];
    const float t = 1.0f - 2.0f / (rt_exp(2.0f * GELU_C * (v + GELU_K * v * v * v)) + 1.0f);
    tanh_u[i] = t;
    y[i] = 0.5f * v * (1.0f + t);
  }
}

CLONES void rt_gelu_backward(size_t n, const float *restrict x, const float *restrict tanh_u, const float *restrict dy, float *restrict dx) {
  for (size_t i = 0; i < n; i++) {
    const float v = x[i], t = tanh_u[i];
    // Past |x| = 20, 1 − t² is exactly 0; a bounded v² keeps 0·∞ (a NaN) out of the product.
    const float w = v > 20.0f ? 20.0f : (v < -20.0f ? -20.0f : v);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_K * w * w));
  }
}

// Σ x[i]·(y ? y[i] : 1) over n values, in float64 (a LayerNorm of nearly equal values cancels
// most of float32's digits), in LANES fixed partial sums and then those in order: the same bits on
// every clone.
static inline double lane_dot(size_t n, const float *restrict x, const float *restrict y) {
  double acc[LANES] = {0};
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (size_t l = 0; l < LANES; l++) acc[l] += y ? (double)x[i + l] * y[i + l] : x[i + l];
  for (size_t l = 0; i + l < n; l++) acc[l] += y ? (double)x[i + l] * y[i + l] : x[i + l];
  double s = 0;
  for (size_t l = 0; l < LANES; l++) s += acc[l];
  return s;
}

// The largest of n ≥ 1 values (any order gives the same bits; the lanes let it vectorize).
static inline float lane_max(size_t n, const float *restrict x) {
  float acc[LANES];
  for (size_t l = 0; l < LANES; l++) acc[l] = x[0];
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (size_t l = 0; l < LANES; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  for (size_t l = 0; i + l < n; l++) acc[l] = x[i + l] > acc[l] ? x[i + l] : acc[l];
  float m = acc[0];
  for (size_t l = 1; l < LANES; l++) m = acc[l] > m ? acc[l] : m;
  return m;
}

// Σ e^(x[i] − max) over n values in LANES fixed float64 partial sums (the same bits on every clone).
static inline double lane_exp_sum(size_t n, const float *restrict x, float max) {
  double acc[LANES] = {0};
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (size_t l = 0; l < LANES; l++) acc[l] += rt_exp(x[i + l] - max);
  for (size_t l = 0; i + l < n; l++) acc[l] += rt_exp(x[i + l] - max);
  double s = 0;
  for (size_t l = 0; l < LANES; l++) s += acc[l];
  return s;
}

CLONES double rt_softmax_xent(size_t rows, size_t classes, const float *restrict logits, const int32_t *restrict labels,
                              float *restrict grad, float scale) {
  double total = 0;
  for (size_t r = 0; r < rows; r++) {
    const float *z = logits + r * classes;
    const float max = lane_max(classes, z);
    double sum;
    if (grad) {
      // Each e^(z − max) is kept in the gradient: one exp per logit.
      float *g = grad + r * classes;
      for (size_t c = 0; c < classes; c++) g[c] = rt_exp(z[c] - max);
      sum = lane_dot(classes, g, NULL);
      const float k = (float)(scale / sum);
      for (size_t c = 0; c < classes; c++) g[c] *= k;
      g[labels[r]] -= scale;
    } else {
      sum = lane_exp_sum(classes, z, max);
    }
    total += log(sum) + max - z[labels[r]];
  }
  return total;
}

CLONES void rt_layernorm(size_t rows, size_t width, float eps, const float *restrict x, const float *restrict gain,
                         const float *restrict bias, float *restrict xhat, float *restrict rstd, float *restrict y) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * width;
    float *hr = xhat + r * width, *yr = y + r * width;
    const double mean = lane_dot(width, xr, NULL) / (double)width;
    double acc[LANES] = {0};
    size_t c = 0;
    for (; c + LANES <= width; c += LANES)
      for (size_t l = 0; l < LANES; l++) acc[l] += (xr[c + l] - mean) * (xr[c + l] - mean);
    for (size_t l = 0; c + l < width; l++) acc[l] += (xr[c + l] - mean) * (xr[c + l] - mean);
    double variance = 0;
    for (size_t l = 0; l < LANES; l++) variance += acc[l];
    const double s = 1.0 / sqrt(variance / (double)width + eps);
    rstd[r] = (float)s;
    for (size_t c = 0; c < width; c++) {
      hr[c] = (float)((xr[c] - mean) * s);
      yr[c] = hr[c] * gain[c] + (bias ? bias[c] : 0.0f);
    }
  }
}

CLONES void rt_layernorm_backward(size_t rows, size_t width, const float *restrict dy, const float *restrict xhat,
                                  const float *restrict rstd, const float *restrict gain, float *restrict dgain,
                                  float *restrict dbias, float *restrict dx) {
  memset(dgain, 0, width * sizeof(float));
  if (dbias) memset(dbias, 0, width * sizeof(float));
  const double inv_w = 1.0 / (double)width;
  for (size_t r = 0; r < rows; r++) {
    const float *dr = dy + r * width, *hr = xhat + r * width;
    for (size_t c = 0; c < width; c++) dgain[c] += dr[c] * hr[c];
    if (dbias)
      for (size_t c = 0; c < width; c++) dbias[c] += dr[c];
    if (!dx) continue;
    float *xr = dx + r * width;
    // g = dy·gain; dx = rstd·(g − mean(g) − x̂·mean(g·x̂)). xr holds g first.
    for (size_t c = 0; c < width; c++) xr[c] = dr[c] * gain[c];
    const float mean_g = (float)(lane_dot(width, xr, NULL) * inv_w), mean_gx = (float)(lane_dot(width, xr, hr) * inv_w);
    const float s = rstd[r];
    for (size_t c = 0; c < width; c++) xr[c] = s * (xr[c] - mean_g - hr[c] * mean_gx);
  }
}

// Row t of p (T wide) becomes the softmax of its first t + 1 entries; the rest zeros.
CLONES static void causal_softmax(size_t T, float *restrict p) {
  for (size_t t = 0; t < T; t++) {
    float *row = p + t * T;
    const size_t n = t + 1;
    const float max = lane_max(n, row);
    for (size_t s = 0; s < n; s++) row[s] = rt_exp(row[s] - max);
    const float inv = (float)(1.0 / lane_dot(n, row, NULL));
    for (size_t s = 0; s < n; s++) row[s] *= inv;
    for (size_t s = n; s < T; s++) row[s] = 0.0f;
  }
}

// dS = P ∘ (dP − Σ_s P·dP) per row, in place in dp (zero above the diagonal, as P is).
CLONES static void causal_softmax_backward(size_t T, const float *restrict p, float *restrict dp) {
  for (size_t t = 0; t < T; t++) {
    const float *pr = p + t * T;
    float *dr = dp + t * T;
    const size_t n = t + 1;
    const float dot = (float)lane_dot(n, pr, dr);
    for (size_t s = 0; s < n; s++) dr[s] = pr[s] * (dr[s] - dot);
    for (size_t s = n; s < T; s++) dr[s] = 0.0f;
  }
}

// The causal mask's zeros are skipped a block of rows at a time: rows [r0, r1) read only keys and
// values [0, r1).
#ifndef RT_CAUSAL_BLOCK
#define RT_CAUSAL_BLOCK 32
#endif
#define BLOCK_END(T, r0) ((r0) + RT_CAUSAL_BLOCK < (T) ? (r0) + RT_CAUSAL_BLOCK : (T))
#define ROW_BLOCKS(T, r0, r1) for (size_t r0 = 0, r1 = BLOCK_END(T, 0); r0 < (T); r0 = r1, r1 = BLOCK_END(T, r1))
// Last block first: the one whose r1 is T.
#define ROW_BLOCKS_BACK(T, r0, r1) \
  for (size_t r0 = ((T) - 1) / RT_CAUSAL_BLOCK * RT_CAUSAL_BLOCK, r1 = (T), more = 1; more; more = r0 > 0, r1 = r0, r0 = r0 >= RT_CAUSAL_BLOCK ? r0 - RT_CAUSAL_BLOCK : 0)

void rt_attention(size_t batch, size_t T, size_t heads, size_t d, const float *qkv, float *probs, float *out) {
  const size_t C = heads * d, ld = 3 * C;
  const float scale = 1.0f / sqrtf((float)d);
  for (size_t b = 0; b < batch; b++)
    for (size_t h = 0; h < heads; h++) {
      const float *q = qkv + b * T * ld + h * d, *k = q + C, *v = q + 2 * C;
      float *p = probs + (b * heads + h) * T * T, *o = out + b * T * C + h * d;
      ROW_BLOCKS(T, r0, r1)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, d, scale, q + r0 * ld, ld, k, ld, 0.0f, p + r0 * T, T);
      causal_softmax(T, p);
      ROW_BLOCKS(T, r0, r1)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, d, r1, 1.0f, p + r0 * T, T, v, ld, 0.0f, o + r0 * C, C);
    }
}

int rt_attention_backward(size_t batch, size_t T, size_t heads, size_t d, const float *qkv, const float *probs, const float *dout,
                          float *dqkv) {
  const size_t C = heads * d, ld = 3 * C;
  const float scale = 1.0f / sqrtf((float)d);
  float *dp = malloc(T * T * sizeof(float));
  if (!dp) return -1;
  for (size_t b = 0; b < batch; b++)
    for (size_t h = 0; h < heads; h++) {
      const size_t at = b * T * ld + h * d;
      const float *q = qkv + at, *k = q + C, *v = q + 2 * C, *p = probs + (b * heads + h) * T * T, *dO = dout + b * T * C + h * d;
      float *dq = dqkv + at, *dk = dq + C, *dv = dq + 2 * C;
      // dV = Pᵀ·dO and (below) dK = dSᵀ·Q sum over row blocks: the last block, whose keys are all
      // T, writes every row; the others add to their first r1.
      ROW_BLOCKS_BACK(T, r0, r1)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, d, r1 - r0, 1.0f, p + r0 * T, T, dO + r0 * C, C, r1 == T ? 0.0f : 1.0f, dv, ld);
      ROW_BLOCKS(T, r0, r1)  // dP = dO·Vᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r1 - r0, r1, d, 1.0f, dO + r0 * C, C, v, ld, 0.0f, dp + r0 * T, T);
      causal_softmax_backward(T, p, dp);
      // dQ = dS·K/√d, dK = dSᵀ·Q/√d (the scores were q·kᵀ/√d)
      ROW_BLOCKS(T, r0, r1)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r1 - r0, d, r1, scale, dp + r0 * T, T, k, ld, 0.0f, dq + r0 * ld, ld);
      ROW_BLOCKS_BACK(T, r0, r1)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1, d, r1 - r0, scale, dp + r0 * T, T, q + r0 * ld, ld, r1 == T ? 0.0f : 1.0f, dk, ld);
    }
  free(dp);
  return 0;
}

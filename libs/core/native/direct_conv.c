// Stride-1 convolutions without im2col. im2col writes K² copies of every input (20 MB for lenet's
// second convolution at batch 64) and col2im reads them back; here each sample's planes are copied
// once into a zero-padded buffer (a few KB, in cache) and the kernels read shifted rows of it.
//
// Forward and input gradient are one correlation kernel (the input gradient correlates the padded
// output gradient with the weights flipped and transposed): a vector of output columns (masked at
// the row's end) for a block of filters × 2 rows of accumulators. The weight gradient keeps filters
// × 5 kernel columns of accumulators over as many samples as fit in L1, then sums each vector's
// lanes. AVX-512: 16 columns, 8 filters (16 accumulators) and 4 filters (20); AVX2 + FMA, with
// half the registers: 8 columns, 6 filters (12) and 2 filters (10).
#include "direct_conv.h"

#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

int direct_conv_isa(void) {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return DC_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return DC_AVX2;
  return DC_NONE;
}

// dst[c][r][q] = src[c][r - pt][q - pl] inside src, 0 elsewhere; dst is c × hp × wp.
static void pad_planes(const float *src, int c, int h, int w, int pt, int pl, float *dst, int hp, int wp) {
  int q0 = pl > 0 ? pl : 0;
  int q1 = pl + w < wp ? pl + w : wp;
  if (q1 < q0) q1 = q0;
  for (int ch = 0; ch < c; ch++) {
    const float *s = src + (size_t)ch * h * w;
    float *d = dst + (size_t)ch * hp * wp;
    for (int r = 0; r < hp; r++, d += wp) {
      int sr = r - pt;
      if (sr < 0 || sr >= h) {
        memset(d, 0, (size_t)wp * sizeof(float));
        continue;
      }
      memset(d, 0, (size_t)q0 * sizeof(float));
      memcpy(d + q0, s + (size_t)sr * w + (q0 - pl), (size_t)(q1 - q0) * sizeof(float));
      memset(d + q1, 0, (size_t)(wp - q1) * sizeof(float));
    }
  }
}

// y[f][oy][ox] = bias[f] + Σ_{ch,ky,kx} w[f][ch][ky][kx]·xp[ch][oy+ky][ox+kx] for f < filters.
// w holds a multiple of 8 filters (zeros past `filters`); xp is c × hp × wp with hp ≥ out_h + k.
__attribute__((target("avx512f"))) static void correlate512(const float *xp, int c, int hp, int wp, const float *w, int filters, int k,
                                                         const float *bias, float *y, int out_h, int out_w) {
  const size_t ckk = (size_t)c * k * k;
  for (int f0 = 0; f0 < filters; f0 += 8) {
    const int fb = filters - f0 < 8 ? filters - f0 : 8;
    for (int ox = 0; ox < out_w; ox += 16) {
      const __mmask16 m = out_w - ox >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (out_w - ox)) - 1);
      for (int oy = 0; oy < out_h; oy += 2) {
        const int rows = out_h - oy >= 2 ? 2 : 1;
        __m512 a[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) a[i] = _mm512_setzero_ps();
        for (int ch = 0; ch < c; ch++) {
          const float *plane = xp + (size_t)ch * hp * wp;
          for (int ky = 0; ky < k; ky++) {
            const float *r0 = plane + (size_t)(oy + ky) * wp + ox;
            const float *r1 = r0 + wp; // the next row (the spare row when rows == 1)
            const float *wk = w + (size_t)f0 * ckk + (size_t)ch * k * k + (size_t)ky * k;
            for (int kx = 0; kx < k; kx++) {
              const __m512 x0 = _mm512_maskz_loadu_ps(m, r0 + kx);
              const __m512 x1 = _mm512_maskz_loadu_ps(m, r1 + kx);
              const float *wf = wk + kx;
#pragma GCC unroll 8
              for (int i = 0; i < 8; i++) {
                const __m512 wv = _mm512_set1_ps(wf[i * ckk]);
                a[2 * i] = _mm512_fmadd_ps(wv, x0, a[2 * i]);
                a[2 * i + 1] = _mm512_fmadd_ps(wv, x1, a[2 * i + 1]);
              }
            }
          }
        }
        // Constant indices only (unrolled, bounds as conditions): the accumulators stay in registers.
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
          if (i < fb) {
            const __m512 b = _mm512_set1_ps(bias ? bias[f0 + i] : 0.0f);
            float *yo = y + ((size_t)(f0 + i) * out_h + oy) * out_w + ox;
            _mm512_mask_storeu_ps(yo, m, _mm512_add_ps(a[2 * i], b));
            if (rows == 2) _mm512_mask_storeu_ps(yo + out_w, m, _mm512_add_ps(a[2 * i + 1], b));
          }
        }
      }
    }
  }
}

// w's filters, rounded up to a multiple of `block` with zero filters; `flip` also transposes f and c
// and turns each kernel by 180° (the input gradient's weights). NULL when out of memory.
static float *blocked_weights(const float *w, int filters, int c, int k, int flip, int block) {
  const int outs = flip ? c : filters, ins = flip ? filters : c;
  const int outs8 = (outs + block - 1) / block * block;
  const size_t kk = (size_t)k * k;
  float *p = calloc((size_t)outs8 * ins * kk, sizeof(float));
  if (!p) return NULL;
  for (int o = 0; o < outs; o++)
    for (int i = 0; i < ins; i++)
      for (size_t j = 0; j < kk; j++) p[((size_t)o * ins + i) * kk + j] = flip ? w[((size_t)i * c + o) * kk + (kk - 1 - j)] : w[((size_t)o * ins + i) * kk + j];
  return p;
}

// The AVX2 + FMA correlation: 8 columns, 6 filters × 2 rows; w holds a multiple of 6 filters.
static inline __attribute__((target("avx2,fma"))) __m256i lanes8(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

__attribute__((target("avx2,fma"))) static void correlate256(const float *xp, int c, int hp, int wp, const float *w, int filters, int k,
                                                             const float *bias, float *y, int out_h, int out_w) {
  const size_t ckk = (size_t)c * k * k;
  for (int f0 = 0; f0 < filters; f0 += 6) {
    const int fb = filters - f0 < 6 ? filters - f0 : 6;
    for (int ox = 0; ox < out_w; ox += 8) {
      const __m256i m = lanes8(out_w - ox);
      for (int oy = 0; oy < out_h; oy += 2) {
        const int rows = out_h - oy >= 2 ? 2 : 1;
        __m256 a[12];
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm256_setzero_ps();
        // AVX2's masked loads are slower than plain ones: masks only where the row ends.
#define SWEEP(LOAD)                                                                               \
  for (int ch = 0; ch < c; ch++) {                                                                \
    const float *plane = xp + (size_t)ch * hp * wp;                                               \
    for (int ky = 0; ky < k; ky++) {                                                              \
      const float *r0 = plane + (size_t)(oy + ky) * wp + ox;                                      \
      const float *r1 = r0 + wp;                                                                  \
      const float *wk = w + (size_t)f0 * ckk + (size_t)ch * k * k + (size_t)ky * k;               \
      for (int kx = 0; kx < k; kx++) {                                                            \
        const __m256 x0 = LOAD(r0 + kx);                                                          \
        const __m256 x1 = LOAD(r1 + kx);                                                          \
        const float *wf = wk + kx;                                                                \
        _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++) {                                     \
          const __m256 wv = _mm256_broadcast_ss(wf + i * ckk);                                    \
          a[2 * i] = _mm256_fmadd_ps(wv, x0, a[2 * i]);                                           \
          a[2 * i + 1] = _mm256_fmadd_ps(wv, x1, a[2 * i + 1]);                                   \
        }                                                                                         \
      }                                                                                           \
    }                                                                                             \
  }
#define FULL(p) _mm256_loadu_ps(p)
#define MASKED(p) _mm256_maskload_ps((p), m)
        if (out_w - ox >= 8) {
          SWEEP(FULL)
        } else {
          SWEEP(MASKED)
        }
#undef SWEEP
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
          if (i < fb) {
            const __m256 b = _mm256_set1_ps(bias ? bias[f0 + i] : 0.0f);
            float *yo = y + ((size_t)(f0 + i) * out_h + oy) * out_w + ox;
            _mm256_maskstore_ps(yo, m, _mm256_add_ps(a[2 * i], b));
            if (rows == 2) _mm256_maskstore_ps(yo + out_w, m, _mm256_add_ps(a[2 * i + 1], b));
          }
        }
      }
    }
  }
}

// One correlation of padded planes with blocked weights, by the instruction set's kernel.
static void correlate(int isa, const float *xp, int c, int hp, int wp, const float *w, int filters, int k, const float *bias, float *y,
                      int out_h, int out_w) {
  if (isa == DC_AVX512) correlate512(xp, c, hp, wp, w, filters, k, bias, y, out_h, out_w);
  else correlate256(xp, c, hp, wp, w, filters, k, bias, y, out_h, out_w);
}

static int filter_block(int isa) { return isa == DC_AVX512 ? 8 : 6; }

int direct_conv_forward(int isa, const float *x, int batch, int c, int h, int w, int k, int pad_top, int pad_left, int out_h, int out_w,
                        const float *weight, int filters, const float *bias, float *xpad, float *y) {
  const int hp = DC_PAD_H(out_h, k), wp = DC_PAD_W(out_w, k);
  float *wb = blocked_weights(weight, filters, c, k, 0, filter_block(isa));
  if (!wb) return -1;
  for (int n = 0; n < batch; n++) {
    float *xp = xpad + (size_t)n * c * hp * wp;
    pad_planes(x + (size_t)n * c * h * w, c, h, w, pad_top, pad_left, xp, hp, wp);
    correlate(isa, xp, c, hp, wp, wb, filters, k, bias, y + (size_t)n * filters * out_h * out_w, out_h, out_w);
  }
  free(wb);
  return 0;
}

int direct_conv_backward_data(int isa, const float *dy, int batch, int filters, int out_h, int out_w, const float *weight, int c, int h,
                              int w, int k, int pad_top, int pad_left, float *dx) {
  // dx[y] = Σ_ky w[ky]·dy[y + pad_top − ky]: with ky' = k−1−ky, a correlation of dy padded by k−1−pad.
  const int hp = DC_PAD_H(h, k), wp = DC_PAD_W(w, k);
  float *wf = blocked_weights(weight, filters, c, k, 1, filter_block(isa));
  float *dyp = malloc((size_t)filters * hp * wp * sizeof(float));
  if (!wf || !dyp) {
    free(wf);
    free(dyp);
    return -1;
  }
  for (int n = 0; n < batch; n++) {
    pad_planes(dy + (size_t)n * filters * out_h * out_w, filters, out_h, out_w, k - 1 - pad_top, k - 1 - pad_left, dyp, hp, wp);
    correlate(isa, dyp, filters, hp, wp, wf, c, k, NULL, dx + (size_t)n * c * h * w, h, w);
  }
  free(wf);
  free(dyp);
  return 0;
}

// Samples at a time for the weight gradient: `filters` output-gradient planes and one channel's
// padded plane of each fit in L1 (32 KB of it), and stay there through the k × ⌈k/5⌉ passes.
static int samples_in_l1(int filters, size_t plane, int hp, int wp) {
  const int chunk = (int)(32768 / ((filters * plane + (size_t)hp * wp) * sizeof(float)));
  return chunk < 1 ? 1 : chunk;
}

__attribute__((target("avx512f"))) static void filter_grad512(const float *dy, const float *xpad, int batch, int filters, int c, int k,
                                                             int out_h, int out_w, float *dw, float *db) {
  const int hp = DC_PAD_H(out_h, k), wp = DC_PAD_W(out_w, k);
  const size_t plane = (size_t)out_h * out_w, kk = (size_t)k * k;
  const int chunk = samples_in_l1(4, plane, hp, wp);
  // A row's last, partial vector of columns: its gradient lanes, and the input lanes its five shifts
  // reach (the shifted vectors come from two loads, not five unaligned ones that each split a cache
  // line; lane l of shift j is x[ox + l + j], read only where l is a column of the row).
  const int tail = out_w % 16, reach = tail + 4;
  const __mmask16 tail_g = (__mmask16)((1u << tail) - 1);
  const __mmask16 tail_x0 = reach >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << reach) - 1);
  const __mmask16 tail_x1 = reach > 16 ? (__mmask16)((1u << (reach - 16)) - 1) : 0;
#define ROW512(OX, MG, M0, M1)                                                                                   \
  {                                                                                                              \
    __m512 g[4];                                                                                                 \
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) g[i] = _mm512_maskz_loadu_ps(MG, go + fi[i] * plane + (OX)); \
    const __m512i x0 = _mm512_castps_si512(_mm512_maskz_loadu_ps(M0, xo + (OX)));                               \
    const __m512i x1 = _mm512_castps_si512(_mm512_maskz_loadu_ps(M1, xo + (OX) + 16));                          \
    _Pragma("GCC unroll 5") for (int j = 0; j < 5; j++) {                                                        \
      const __m512 xv = _mm512_castsi512_ps(j == 0 ? x0 : _mm512_alignr_epi32(x1, x0, j));                      \
      _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) a[i][j] = _mm512_fmadd_ps(g[i], xv, a[i][j]);         \
    }                                                                                                            \
  }
  for (int f = 0; f < filters; f++) {
    __m512 s = _mm512_setzero_ps();
    for (int n = 0; n < batch; n++) {
      const float *d = dy + ((size_t)n * filters + f) * plane;
      size_t p = 0;
      for (; p + 16 <= plane; p += 16) s = _mm512_add_ps(s, _mm512_loadu_ps(d + p));
      if (p < plane) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps((__mmask16)((1u << (plane - p)) - 1), d + p));
    }
    db[f] = _mm512_reduce_add_ps(s);
  }
  for (int n0 = 0; n0 < batch; n0 += chunk) {
    const int n1 = n0 + chunk < batch ? n0 + chunk : batch;
    for (int f0 = 0; f0 < filters; f0 += 4) {
      const int fb = filters - f0 < 4 ? filters - f0 : 4;
      size_t fi[4]; // past the last filter, read the last one again and drop its sums
      for (int i = 0; i < 4; i++) fi[i] = (size_t)(f0 + (i < fb ? i : fb - 1));
      for (int ch = 0; ch < c; ch++) {
        for (int ky = 0; ky < k; ky++) {
          for (int kx0 = 0; kx0 < k; kx0 += 5) {
            __m512 a[4][5];
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
#pragma GCC unroll 5
              for (int j = 0; j < 5; j++) a[i][j] = _mm512_setzero_ps();
            for (int n = n0; n < n1; n++) {
              const float *d = dy + (size_t)n * filters * plane;
              const float *xs = xpad + ((size_t)n * c + ch) * hp * wp + (size_t)ky * wp + kx0;
              for (int oy = 0; oy < out_h; oy++) {
                const float *xo = xs + (size_t)oy * wp;
                const float *go = d + (size_t)oy * out_w;
                int ox = 0;
                for (; ox + 16 <= out_w; ox += 16) ROW512(ox, (__mmask16)0xFFFF, (__mmask16)0xFFFF, (__mmask16)0xF);
                if (ox < out_w) ROW512(ox, tail_g, tail_x0, tail_x1);
              }
            }
#pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
#pragma GCC unroll 5
              for (int j = 0; j < 5; j++)
                if (i < fb && kx0 + j < k) dw[((size_t)(f0 + i) * c + ch) * kk + (size_t)ky * k + kx0 + j] += _mm512_reduce_add_ps(a[i][j]);
          }
        }
      }
    }
  }
}

#undef ROW512

static inline __attribute__((target("avx2,fma"))) float sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void filter_grad256(const float *dy, const float *xpad, int batch, int filters, int c, int k,
                                                               int out_h, int out_w, float *dw, float *db) {
  const int hp = DC_PAD_H(out_h, k), wp = DC_PAD_W(out_w, k);
  const size_t plane = (size_t)out_h * out_w, kk = (size_t)k * k;
  const int chunk = samples_in_l1(2, plane, hp, wp);
  for (int f = 0; f < filters; f++) {
    __m256 s = _mm256_setzero_ps();
    for (int n = 0; n < batch; n++) {
      const float *d = dy + ((size_t)n * filters + f) * plane;
      size_t p = 0;
      for (; p + 8 <= plane; p += 8) s = _mm256_add_ps(s, _mm256_loadu_ps(d + p));
      if (p < plane) s = _mm256_add_ps(s, _mm256_maskload_ps(d + p, lanes8((int)(plane - p))));
    }
    db[f] = sum8(s);
  }
  for (int n0 = 0; n0 < batch; n0 += chunk) {
    const int n1 = n0 + chunk < batch ? n0 + chunk : batch;
    for (int f0 = 0; f0 < filters; f0 += 2) {
      const int fb = filters - f0 < 2 ? filters - f0 : 2;
      const size_t fi[2] = {(size_t)f0, (size_t)(f0 + (fb > 1 ? 1 : 0))};
      for (int ch = 0; ch < c; ch++) {
        for (int ky = 0; ky < k; ky++) {
          for (int kx0 = 0; kx0 < k; kx0 += 5) {
            __m256 a[2][5];
#pragma GCC unroll 2
            for (int i = 0; i < 2; i++)
#pragma GCC unroll 5
              for (int j = 0; j < 5; j++) a[i][j] = _mm256_setzero_ps();
            for (int n = n0; n < n1; n++) {
              const float *d = dy + (size_t)n * filters * plane;
              const float *xs = xpad + ((size_t)n * c + ch) * hp * wp + (size_t)ky * wp + kx0;
              for (int oy = 0; oy < out_h; oy++) {
                for (int ox = 0; ox < out_w; ox += 8) {
                  const __m256i m = lanes8(out_w - ox);
                  const size_t at = (size_t)oy * out_w + ox;
                  const float *xr = xs + (size_t)oy * wp + ox;
#define CHUNK(LOAD)                                                 \
  {                                                                 \
    const __m256 g0 = LOAD(d + fi[0] * plane + at);                 \
    const __m256 g1 = LOAD(d + fi[1] * plane + at);                 \
    _Pragma("GCC unroll 5") for (int j = 0; j < 5; j++) {           \
      const __m256 xv = LOAD(xr + j);                               \
      a[0][j] = _mm256_fmadd_ps(g0, xv, a[0][j]);                   \
      a[1][j] = _mm256_fmadd_ps(g1, xv, a[1][j]);                   \
    }                                                               \
  }
                  if (out_w - ox >= 8) CHUNK(FULL) else CHUNK(MASKED)
#undef CHUNK
                }
              }
            }
#pragma GCC unroll 2
            for (int i = 0; i < 2; i++)
#pragma GCC unroll 5
              for (int j = 0; j < 5; j++)
                if (i < fb && kx0 + j < k) dw[((size_t)(f0 + i) * c + ch) * kk + (size_t)ky * k + kx0 + j] += sum8(a[i][j]);
          }
        }
      }
    }
  }
}

void direct_conv_backward_filter(int isa, const float *dy, const float *xpad, int batch, int filters, int c, int k, int out_h, int out_w,
                                 float *dw, float *db) {
  memset(dw, 0, (size_t)filters * c * k * k * sizeof(float));
  if (isa == DC_AVX512) filter_grad512(dy, xpad, batch, filters, c, k, out_h, out_w, dw, db);
  else filter_grad256(dy, xpad, batch, filters, c, k, out_h, out_w, dw, db);
}

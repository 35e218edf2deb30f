// The all-reduce's hot loop, dst += src over float32 data, for the ring's received segments. V8
// runs the JS loop at about 6.7 GB/s; compiled, it is vectorised. Both sides are byte ranges at
// any alignment (a WebSocket payload lands wherever the socket read put it), so elements are
// loaded with memcpy, which the compiler turns into unaligned vector loads.
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <immintrin.h>
#ifdef __linux__
#include "shared_memory.h"
#endif

#define THROW(env, msg) do { napi_throw_error((env), "ERR_NATIVE_ARGS", (msg)); return NULL; } while (0)

// An exponent of all ones: ±Inf or NaN.
#define NOT_FINITE(bits) (((bits) & 0x7f800000u) == 0x7f800000u)

// One clone per instruction set; the loader picks the CPU's at load time (GCC function multiversioning).
// Returns whether every sum is finite: checked on the way, at no cost in a loop bound by memory.
__attribute__((target_clones("avx512f", "avx2", "default")))
static bool add_f32(uint8_t *restrict dst, const uint8_t *restrict src, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    float a, b;
    memcpy(&a, dst + 4 * i, 4);
    memcpy(&b, src + 4 * i, 4);
    a += b;
    memcpy(dst + 4 * i, &a, 4);
    uint32_t bits;
    memcpy(&bits, &a, 4);
    bad |= NOT_FINITE(bits);
  }
  return !bad;
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static bool all_finite_f32(const uint8_t *x, size_t n) {
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, x + 4 * i, 4);
    bad |= NOT_FINITE(bits);
  }
  return !bad;
}

// The bytes of a typed array of any element type; false if v is none.
static bool bytes_of(napi_env env, napi_value v, uint8_t **bytes, size_t *byte_length) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok) return false;
  size_t width = type == napi_float32_array || type == napi_int32_array || type == napi_uint32_array ? 4
               : type == napi_float64_array || type == napi_bigint64_array || type == napi_biguint64_array ? 8
               : type == napi_int16_array || type == napi_uint16_array ? 2 : 1;
  *byte_length = length * width;
  *bytes = data;
  return true;
}

static napi_value boolean(napi_env env, bool value) {
  napi_value v;
  napi_get_boolean(env, value, &v);
  return v;
}

// addFloat32(dst, src) → whether every sum is finite. dst and src are typed arrays over the same
// number of bytes, a multiple of 4.
static napi_value add_float32(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 2) THROW(env, "addFloat32(dst, src) takes two typed arrays");
  size_t dst_bytes = 0, src_bytes = 0;
  uint8_t *dst = NULL, *src = NULL;
  if (!bytes_of(env, argv[0], &dst, &dst_bytes) || !bytes_of(env, argv[1], &src, &src_bytes)) THROW(env, "addFloat32: dst and src must be typed arrays");
  if (dst_bytes != src_bytes || dst_bytes % 4 != 0) THROW(env, "addFloat32: dst and src must cover the same whole number of float32s");
  return boolean(env, dst_bytes == 0 || add_f32(dst, src, dst_bytes / 4));
}

// allFiniteFloat32(x) → whether no element of the float32 data in x is ±Inf or NaN.
static napi_value all_finite_float32(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  size_t bytes = 0;
  uint8_t *x = NULL;
  if (argc != 1 || !bytes_of(env, argv[0], &x, &bytes)) THROW(env, "allFiniteFloat32(x) takes a typed array");
  if (bytes % 4 != 0) THROW(env, "allFiniteFloat32: not a whole number of float32s");
  return boolean(env, bytes == 0 || all_finite_f32(x, bytes / 4));
}


// ---- Wire codecs: float32 ↔ float16, bfloat16, int8 (a float32 scale, then the int8s) -------
// The same arithmetic as wire-codec.ts, element for element, so that the JS fallback and this
// give the same bytes and floats (a test compares them bit for bit).

static inline uint16_t half_bits(uint32_t bits) {
  uint32_t sign = (bits >> 16) & 0x8000u;
  int32_t e = (int32_t)((bits >> 23) & 0xffu);
  uint32_t m = bits & 0x7fffffu;
  if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0));
  int32_t exp = e - 112;
  if (exp >= 0x1f) return (uint16_t)(sign | 0x7c00u);
  if (exp <= 0) {
    if (exp < -10) return (uint16_t)sign;
    m |= 0x800000u;
    uint32_t shift = (uint32_t)(14 - exp);
    uint32_t half = m >> shift;
    uint32_t rest = m & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rest > mid || (rest == mid && (half & 1))) half++;
    return (uint16_t)(sign | half);
  }
  uint32_t half = sign | ((uint32_t)exp << 10) | (m >> 13);
  uint32_t rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1))) half++;
  return (uint16_t)half;
}

static inline float half_value(uint16_t h) {
  double sign = (h & 0x8000) ? -1.0 : 1.0;
  int e = (h >> 10) & 0x1f;
  int m = h & 0x3ff;
  if (e == 0) return (float)(sign * m * 0x1p-24);
  if (e == 0x1f) return m ? __builtin_nanf("") : (float)(sign * __builtin_inf());
  return (float)(sign * (1.0 + m / 1024.0) * __builtin_ldexp(1.0, e - 15));
}

static inline uint16_t bfloat_bits(uint32_t bits) {
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x7fffffu)) return (uint16_t)(((bits >> 16) & 0x8000u) | 0x7fc0u);
  return (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

// The CPU's own conversion (F16C): round to nearest even, as half_bits, 8 at a time.
__attribute__((target("avx,f16c")))
static size_t encode_f16_f16c(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps((const float *)(src + 4 * i));
    _mm_storeu_si128((__m128i *)(dst + 2 * i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  return i;
}

static void encode_f16(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  size_t i = __builtin_cpu_supports("f16c") ? encode_f16_f16c(src, dst, n) : 0;
  for (; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, src + 4 * i, 4);
    uint16_t h = half_bits(bits);
    memcpy(dst + 2 * i, &h, 2);
  }
}

static float HALF_VALUES[65536];
static bool half_values_ready = false;

static void decode_f16(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  if (!half_values_ready) {
    for (uint32_t h = 0; h < 65536; h++) HALF_VALUES[h] = half_value((uint16_t)h);
    half_values_ready = true;
  }
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, src + 2 * i, 2);
    memcpy(dst + 4 * i, &HALF_VALUES[h], 4);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void encode_bf16(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, src + 4 * i, 4);
    uint16_t h = bfloat_bits(bits);
    memcpy(dst + 2 * i, &h, 2);
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void decode_bf16(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, src + 2 * i, 2);
    uint32_t bits = (uint32_t)h << 16;
    memcpy(dst + 4 * i, &bits, 4);
  }
}

// q = Math.round(x × inv) in float32, ties towards +Inf, clamped to ±127: vectorisable (with
// -fno-trapping-math), and the same in JS (a float32 product is exact in a double, so Math.fround
// of it is this product). max|x| is taken on the bits: without the sign, non-negative floats
// order as their bits do, and any NaN or Inf has bits ≥ Inf's.
__attribute__((target_clones("avx512f", "avx2", "default")))
static void encode_i8(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  uint32_t top = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, src + 4 * i, 4);
    bits &= 0x7fffffffu;
    top = bits > top ? bits : top;
  }
  float max;
  memcpy(&max, &top, 4);
  float inv = (float)(127.0 / (double)max);
  float scale = top >= 0x7f800000u ? __builtin_nanf("") : inv == __builtin_inff() ? 0 : (float)((double)max / 127.0);
  memcpy(dst, &scale, 4);
  int8_t *restrict q = (int8_t *)(dst + 4);
  if (!(scale > 0)) {
    memset(q, 0, n);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    float x;
    memcpy(&x, src + 4 * i, 4);
    float v = x * inv;
    float r = __builtin_floorf(v);
    int32_t k = (int32_t)r + (v - r >= 0.5f);
    k = k > 127 ? 127 : k;
    k = k < -127 ? -127 : k;
    q[i] = (int8_t)k;
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
static void decode_i8(const uint8_t *restrict src, uint8_t *restrict dst, size_t n) {
  float scale;
  memcpy(&scale, src, 4);
  const int8_t *q = (const int8_t *)(src + 4);
  for (size_t i = 0; i < n; i++) {
    float v = (float)((double)q[i] * (double)scale);
    memcpy(dst + 4 * i, &v, 4);
  }
}

// codec(src, dst): typed arrays of any element type; sizes are checked against the format.
#define CODEC(name, fn, src_width, dst_width, prefix_src, prefix_dst)                                   \
  static napi_value name(napi_env env, napi_callback_info info) {                                       \
    size_t argc = 2;                                                                                    \
    napi_value argv[2];                                                                                 \
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);                                               \
    size_t sb = 0, db = 0;                                                                              \
    uint8_t *s = NULL, *d = NULL;                                                                       \
    if (argc != 2 || !bytes_of(env, argv[0], &s, &sb) || !bytes_of(env, argv[1], &d, &db)) THROW(env, #name "(src, dst) takes two typed arrays"); \
    if (sb < (prefix_src) || db < (prefix_dst)) THROW(env, #name ": too few bytes");                    \
    size_t n = (sb - (prefix_src)) / (src_width);                                                       \
    if ((sb - (prefix_src)) % (src_width) || db - (prefix_dst) < n * (dst_width)) THROW(env, #name ": sizes do not match"); \
    if (n || (prefix_dst)) fn(s, d, n);                                                                  \
    return NULL;                                                                                        \
  }

CODEC(encode_float16, encode_f16, 4, 2, 0, 0)
CODEC(decode_float16, decode_f16, 2, 4, 0, 0)
CODEC(encode_bfloat16, encode_bf16, 4, 2, 0, 0)
CODEC(decode_bfloat16, decode_bf16, 2, 4, 0, 0)
CODEC(encode_int8, encode_i8, 4, 1, 0, 4)
CODEC(decode_int8, decode_i8, 1, 4, 4, 0)

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"addFloat32", NULL, add_float32, NULL, NULL, NULL, napi_default, NULL},
    {"allFiniteFloat32", NULL, all_finite_float32, NULL, NULL, NULL, napi_default, NULL},
    {"encodeFloat16", NULL, encode_float16, NULL, NULL, NULL, napi_default, NULL},
    {"decodeFloat16", NULL, decode_float16, NULL, NULL, NULL, napi_default, NULL},
    {"encodeBfloat16", NULL, encode_bfloat16, NULL, NULL, NULL, napi_default, NULL},
    {"decodeBfloat16", NULL, decode_bfloat16, NULL, NULL, NULL, napi_default, NULL},
    {"encodeInt8", NULL, encode_int8, NULL, NULL, NULL, napi_default, NULL},
    {"decodeInt8", NULL, decode_int8, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
#ifdef __linux__
  napi_property_descriptor shared[SHARED_MEMORY_PROPERTIES];
  shared_memory_properties(shared);
  napi_define_properties(env, exports, SHARED_MEMORY_PROPERTIES, shared);
#endif
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

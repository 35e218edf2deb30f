// A small N-API addon: the system's OpenBLAS sgemm for @ringtrain/core's native backend.
// gemm(transA, transB, m, n, k, A, B, C, accumulate): row-major, tight strides, C = op(A)·op(B)
// (+ C when accumulate). Also stride-1 convolutions without im2col (direct_conv.c), where the CPU
// has AVX-512 or AVX2 + FMA. The JS side checks shapes; this side checks types and lengths again, since a wrong
// length here would write outside the caller's buffer.
#include <node_api.h>
#include "direct_conv.h"
#include <cblas.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

extern void openblas_set_num_threads(int);
extern char *openblas_get_config(void);

#define THROW(env, msg) do { napi_throw_error((env), "ERR_NATIVE_ARGS", (msg)); return NULL; } while (0)

static float *f32(napi_env env, napi_value v, size_t need) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok) return NULL;
  if (type != napi_float32_array || length < need) return NULL;
  return (float *)data;
}

static napi_value gemm(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 9) THROW(env, "gemm takes 9 arguments");
  bool ta, tb, acc;
  int32_t m, n, k;
  if (napi_get_value_bool(env, argv[0], &ta) != napi_ok || napi_get_value_bool(env, argv[1], &tb) != napi_ok ||
      napi_get_value_bool(env, argv[8], &acc) != napi_ok) THROW(env, "transA, transB and accumulate must be booleans");
  if (napi_get_value_int32(env, argv[2], &m) != napi_ok || napi_get_value_int32(env, argv[3], &n) != napi_ok ||
      napi_get_value_int32(env, argv[4], &k) != napi_ok || m < 0 || n < 0 || k < 0) THROW(env, "m, n and k must be non-negative integers");
  float *a = f32(env, argv[5], (size_t)m * k), *b = f32(env, argv[6], (size_t)k * n), *c = f32(env, argv[7], (size_t)m * n);
  if (!a || !b || !c) THROW(env, "A, B and C must be Float32Arrays large enough for m, n and k");
  if (m == 0 || n == 0) return NULL;
  if (k == 0) {
    if (!acc) for (size_t i = 0; i < (size_t)m * n; i++) c[i] = 0.0f;
    return NULL;
  }
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
              a, ta ? m : k, b, tb ? k : n, acc ? 1.0f : 0.0f, c, n);
  return NULL;
}

// argv[from..from+count) as positive int32s into out; false if any is not one.
static bool positive_ints(napi_env env, napi_value *argv, int from, int count, int32_t *out) {
  for (int i = 0; i < count; i++)
    if (napi_get_value_int32(env, argv[from + i], &out[i]) != napi_ok || out[i] < 1 || out[i] > (1 << 24)) return false;
  return true;
}

static bool non_negative_ints(napi_env env, napi_value *argv, int from, int count, int32_t *out) {
  for (int i = 0; i < count; i++)
    if (napi_get_value_int32(env, argv[from + i], &out[i]) != napi_ok || out[i] < 0 || out[i] > (1 << 24)) return false;
  return true;
}

// The product of n sizes, or SIZE_MAX when it overflows (no array is that long, so f32 refuses it).
static size_t product(int n, ...) {
  va_list args;
  va_start(args, n);
  size_t p = 1;
  for (int i = 0; i < n; i++)
    if (__builtin_mul_overflow(p, va_arg(args, size_t), &p)) p = SIZE_MAX, i = n;
  va_end(args);
  return p;
}

// The instruction set a conv call asks for: one this CPU runs (DC_AVX2 or DC_AVX512), else 0.
static int32_t conv_isa(napi_env env, napi_value v) {
  int32_t isa;
  if (napi_get_value_int32(env, v, &isa) != napi_ok || isa < DC_AVX2 || isa > direct_conv_isa()) return 0;
  return isa;
}

// convForward(x, batch, c, h, w, k, outH, outW, filters, padTop, padLeft, weight, bias, xpad, y, isa)
static napi_value conv_forward(napi_env env, napi_callback_info info) {
  size_t argc = 16;
  napi_value argv[16];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t d[8], pad[2], isa;
  if (argc != 16 || !(isa = conv_isa(env, argv[15]))) THROW(env, "convForward: 16 arguments, the last an instruction set this CPU has");
  if (!positive_ints(env, argv, 1, 8, d) || !non_negative_ints(env, argv, 9, 2, pad)) THROW(env, "convForward: sizes must be positive integers, paddings non-negative");
  const size_t batch = d[0], c = d[1], h = d[2], w = d[3], k = d[4], oh = d[5], ow = d[6], f = d[7];
  float *x = f32(env, argv[0], product(4, batch, c, h, w)), *wt = f32(env, argv[11], product(4, f, c, k, k)), *bias = f32(env, argv[12], f),
        *xpad = f32(env, argv[13], product(4, batch, c, DC_PAD_H(oh, k), DC_PAD_W(ow, k))), *y = f32(env, argv[14], product(4, batch, f, oh, ow));
  if (!x || !wt || !bias || !xpad || !y) THROW(env, "convForward: x, weight, bias, xpad and y must be Float32Arrays large enough for the sizes");
  if (direct_conv_forward(isa, x, d[0], d[1], d[2], d[3], d[4], pad[0], pad[1], d[5], d[6], wt, d[7], bias, xpad, y) != 0) THROW(env, "convForward: out of memory");
  return NULL;
}

// convBackwardData(dy, batch, c, h, w, k, outH, outW, filters, padTop, padLeft, weight, dx, isa)
static napi_value conv_backward_data(napi_env env, napi_callback_info info) {
  size_t argc = 14;
  napi_value argv[14];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t d[8], pad[2], isa;
  if (argc != 14 || !(isa = conv_isa(env, argv[13]))) THROW(env, "convBackwardData: 14 arguments, the last an instruction set this CPU has");
  if (!positive_ints(env, argv, 1, 8, d) || !non_negative_ints(env, argv, 9, 2, pad)) THROW(env, "convBackwardData: sizes must be positive integers, paddings non-negative");
  const size_t batch = d[0], c = d[1], h = d[2], w = d[3], k = d[4], oh = d[5], ow = d[6], f = d[7];
  float *dy = f32(env, argv[0], product(4, batch, f, oh, ow)), *wt = f32(env, argv[11], product(4, f, c, k, k)), *dx = f32(env, argv[12], product(4, batch, c, h, w));
  if (!dy || !wt || !dx) THROW(env, "convBackwardData: dy, weight and dx must be Float32Arrays large enough for the sizes");
  if (direct_conv_backward_data(isa, dy, d[0], d[7], d[5], d[6], wt, d[1], d[2], d[3], d[4], pad[0], pad[1], dx) != 0) THROW(env, "convBackwardData: out of memory");
  return NULL;
}

// convBackwardFilter(dy, batch, c, k, outH, outW, filters, xpad, dw, db, isa)
static napi_value conv_backward_filter(napi_env env, napi_callback_info info) {
  size_t argc = 11;
  napi_value argv[11];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t d[6], isa;
  if (argc != 11 || !(isa = conv_isa(env, argv[10]))) THROW(env, "convBackwardFilter: 11 arguments, the last an instruction set this CPU has");
  if (!positive_ints(env, argv, 1, 6, d)) THROW(env, "convBackwardFilter: sizes must be positive integers");
  const size_t batch = d[0], c = d[1], k = d[2], oh = d[3], ow = d[4], f = d[5];
  float *dy = f32(env, argv[0], product(4, batch, f, oh, ow)), *xpad = f32(env, argv[7], product(4, batch, c, DC_PAD_H(oh, k), DC_PAD_W(ow, k))),
        *dw = f32(env, argv[8], product(4, f, c, k, k)),
        *db = f32(env, argv[9], f);
  if (!dy || !xpad || !dw || !db) THROW(env, "convBackwardFilter: dy, xpad, dw and db must be Float32Arrays large enough for the sizes");
  direct_conv_backward_filter(isa, dy, xpad, d[0], d[5], d[1], d[2], d[3], d[4], dw, db);
  return NULL;
}

static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t t;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != 1 || napi_get_value_int32(env, argv[0], &t) != napi_ok || t < 1) THROW(env, "threads must be a positive integer");
  openblas_set_num_threads(t);
  return NULL;
}

static napi_value config(napi_env env, napi_callback_info info) {
  napi_value s;
  napi_create_string_utf8(env, openblas_get_config(), NAPI_AUTO_LENGTH, &s);
  return s;
}

static napi_value init(napi_env env, napi_value exports) {
  // One process per core: OpenBLAS must not start its own thread pool on top of that.
  openblas_set_num_threads(1);
  napi_property_descriptor props[] = {
    {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
    {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
    {"config", NULL, config, NULL, NULL, NULL, napi_default, NULL},
    {"convForward", NULL, conv_forward, NULL, NULL, NULL, napi_default, NULL},
    {"convBackwardData", NULL, conv_backward_data, NULL, NULL, NULL, napi_default, NULL},
    {"convBackwardFilter", NULL, conv_backward_filter, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 6, props);
  napi_value isa;
  napi_create_int32(env, direct_conv_isa(), &isa);
  napi_set_named_property(env, exports, "directConvIsa", isa);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

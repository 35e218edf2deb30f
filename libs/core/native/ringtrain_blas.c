// A small N-API addon: the system's OpenBLAS sgemm for @ringtrain/core's native backend.
// gemm(transA, transB, m, n, k, A, B, C, accumulate): row-major, tight strides, C = op(A)·op(B)
// (+ C when accumulate). Also stride-1 convolutions without im2col (direct_conv.c), where the CPU
// has AVX-512 or AVX2 + FMA, and a transformer's GELU, LayerNorm and attention (transformer.c). The JS side checks shapes; this side checks types and lengths again, since a wrong
// length here would write outside the caller's buffer.
#include <node_api.h>
#include "direct_conv.h"
#include "transformer.h"
#include "fixed_point.h"
#include <cblas.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

extern void openblas_set_num_threads(int);
extern char *openblas_get_config(void);

#define THROW(env, msg) do { napi_throw_error((env), "ERR_NATIVE_ARGS", (msg)); return NULL; } while (0)

// A typed array's data when it is of `want` and holds at least `need` elements, else NULL.
static void *typed(napi_env env, napi_value v, napi_typedarray_type want, size_t need) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, NULL, NULL) != napi_ok) return NULL;
  return type == want && length >= need ? data : NULL;
}
static float *f32(napi_env env, napi_value v, size_t need) { return typed(env, v, napi_float32_array, need); }
static int32_t *i32(napi_env env, napi_value v, size_t need) { return typed(env, v, napi_int32_array, need); }
static double *f64(napi_env env, napi_value v, size_t need) { return typed(env, v, napi_float64_array, need); }

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

// Every conv call starts with the same 11 integers: batch, c, h, w, k, outH, outW, filters (each in
// 1..2^24), padTop, padLeft (0..2^24), and the instruction set (one this CPU runs); its arrays follow.
#define CONV_INTS 11
typedef struct {
  size_t batch, c, h, w, k, out_h, out_w, filters;
  int pad_top, pad_left, isa;
} conv_geometry;

// Reads a conv call's arguments: the geometry into g, its `arrays` arrays into argv[CONV_INTS..].
// Returns NULL, or why the call is refused.
static const char *read_conv_call(napi_env env, napi_callback_info info, size_t arrays, napi_value *argv, conv_geometry *g) {
  size_t argc = CONV_INTS + arrays;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc != CONV_INTS + arrays) return "wrong number of arguments";
  int32_t v[CONV_INTS];
  for (int i = 0; i < CONV_INTS; i++) {
    const int32_t least = i < 8 ? 1 : 0;
    if (napi_get_value_int32(env, argv[i], &v[i]) != napi_ok || v[i] < least || v[i] > (1 << 24)) return "sizes must be positive integers, paddings non-negative";
  }
  if (v[10] < DC_AVX2 || v[10] > direct_conv_isa()) return "the last size must be an instruction set this CPU has";
  *g = (conv_geometry){v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10]};
  return NULL;
}

#define THROW_CONV(env, name, why) do { char msg[160]; snprintf(msg, sizeof msg, "%s: %s", (name), (why)); THROW(env, msg); } while (0)

// Floats of each of a conv call's tensors, for its geometry.
#define INPUT(g) product(4, (g).batch, (g).c, (g).h, (g).w)
#define OUTPUT(g) product(4, (g).batch, (g).filters, (g).out_h, (g).out_w)
#define WEIGHT(g) product(4, (g).filters, (g).c, (g).k, (g).k)
#define PADDED(g) product(4, (g).batch, (g).c, (size_t)DC_PAD_H((g).out_h, (g).k), (size_t)DC_PAD_W((g).out_w, (g).k))
#define TOO_SHORT "the arrays must be Float32Arrays large enough for the sizes"

// convForward(...geometry, x, weight, bias, xpad, y)
static napi_value conv_forward(napi_env env, napi_callback_info info) {
  napi_value argv[CONV_INTS + 5];
  conv_geometry g;
  const char *why = read_conv_call(env, info, 5, argv, &g);
  if (why) THROW_CONV(env, "convForward", why);
  napi_value *a = argv + CONV_INTS;
  float *x = f32(env, a[0], INPUT(g)), *wt = f32(env, a[1], WEIGHT(g)), *bias = f32(env, a[2], g.filters), *xpad = f32(env, a[3], PADDED(g)),
        *y = f32(env, a[4], OUTPUT(g));
  if (!x || !wt || !bias || !xpad || !y) THROW_CONV(env, "convForward", TOO_SHORT);
  if (direct_conv_forward(g.isa, x, g.batch, g.c, g.h, g.w, g.k, g.pad_top, g.pad_left, g.out_h, g.out_w, wt, g.filters, bias, xpad, y) != 0)
    THROW_CONV(env, "convForward", "out of memory");
  return NULL;
}

// convBackwardData(...geometry, dy, weight, dx)
static napi_value conv_backward_data(napi_env env, napi_callback_info info) {
  napi_value argv[CONV_INTS + 3];
  conv_geometry g;
  const char *why = read_conv_call(env, info, 3, argv, &g);
  if (why) THROW_CONV(env, "convBackwardData", why);
  napi_value *a = argv + CONV_INTS;
  float *dy = f32(env, a[0], OUTPUT(g)), *wt = f32(env, a[1], WEIGHT(g)), *dx = f32(env, a[2], INPUT(g));
  if (!dy || !wt || !dx) THROW_CONV(env, "convBackwardData", TOO_SHORT);
  if (direct_conv_backward_data(g.isa, dy, g.batch, g.filters, g.out_h, g.out_w, wt, g.c, g.h, g.w, g.k, g.pad_top, g.pad_left, dx) != 0)
    THROW_CONV(env, "convBackwardData", "out of memory");
  return NULL;
}

// convBackwardFilter(...geometry, dy, xpad, dw, db)
static napi_value conv_backward_filter(napi_env env, napi_callback_info info) {
  napi_value argv[CONV_INTS + 4];
  conv_geometry g;
  const char *why = read_conv_call(env, info, 4, argv, &g);
  if (why) THROW_CONV(env, "convBackwardFilter", why);
  napi_value *a = argv + CONV_INTS;
  float *dy = f32(env, a[0], OUTPUT(g)), *xpad = f32(env, a[1], PADDED(g)), *dw = f32(env, a[2], WEIGHT(g)), *db = f32(env, a[3], g.filters);
  if (!dy || !xpad || !dw || !db) THROW_CONV(env, "convBackwardFilter", TOO_SHORT);
  direct_conv_backward_filter(g.isa, dy, xpad, g.batch, g.filters, g.c, g.k, g.out_h, g.out_w, dw, db);
  return NULL;
}

// The transformer kernels take their sizes first (each in 1..2^30, and one call's arrays are
// bounded by `product`), then their arrays; an array that may be absent is null.
static bool read_sizes(napi_env env, napi_value *argv, int count, size_t *out) {
  for (int i = 0; i < count; i++) {
    int32_t v;
    if (napi_get_value_int32(env, argv[i], &v) != napi_ok || v < 1 || v > (1 << 30)) return false;
    out[i] = (size_t)v;
  }
  return true;
}

static bool is_null(napi_env env, napi_value v) {
  napi_valuetype t;
  return napi_typeof(env, v, &t) == napi_ok && (t == napi_null || t == napi_undefined);
}

// Reads a call's argv; THROWs unless it has exactly `count` arguments.
#define ARGS(name, count)                                            \
  size_t argc = (count);                                             \
  napi_value argv[(count)];                                          \
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);              \
  if (argc != (count)) THROW(env, name ": wrong number of arguments")
#define SIZES(name, count, out) \
  if (!read_sizes(env, argv, (count), (out))) THROW(env, name ": sizes must be integers in 1..2^30")

// gelu(n, x, y, tanh)
static napi_value gelu(napi_env env, napi_callback_info info) {
  ARGS("gelu", 4);
  size_t n;
  SIZES("gelu", 1, &n);
  float *x = f32(env, argv[1], n), *y = f32(env, argv[2], n), *t = f32(env, argv[3], n);
  if (!x || !y || !t) THROW(env, "gelu: " TOO_SHORT);
  rt_gelu(n, x, y, t);
  return NULL;
}

// geluBackward(n, x, tanh, dy, dx)
static napi_value gelu_backward(napi_env env, napi_callback_info info) {
  ARGS("geluBackward", 5);
  size_t n;
  SIZES("geluBackward", 1, &n);
  float *x = f32(env, argv[1], n), *t = f32(env, argv[2], n), *dy = f32(env, argv[3], n), *dx = f32(env, argv[4], n);
  if (!x || !t || !dy || !dx) THROW(env, "geluBackward: " TOO_SHORT);
  rt_gelu_backward(n, x, t, dy, dx);
  return NULL;
}

// softmaxCrossEntropy(rows, classes, logits, labels, grad | null, scale) → Σ of the rows' losses
static napi_value softmax_cross_entropy(napi_env env, napi_callback_info info) {
  ARGS("softmaxCrossEntropy", 6);
  size_t s[2];
  SIZES("softmaxCrossEntropy", 2, s);
  const size_t n = product(2, s[0], s[1]);
  double scale;
  if (napi_get_value_double(env, argv[5], &scale) != napi_ok) THROW(env, "softmaxCrossEntropy: scale must be a number");
  float *logits = f32(env, argv[2], n), *grad = is_null(env, argv[4]) ? NULL : f32(env, argv[4], n);
  int32_t *labels = i32(env, argv[3], s[0]);
  if (!logits || !labels || (!grad && !is_null(env, argv[4]))) THROW(env, "softmaxCrossEntropy: " TOO_SHORT);
  for (size_t r = 0; r < s[0]; r++)
    if (labels[r] < 0 || (size_t)labels[r] >= s[1]) THROW(env, "softmaxCrossEntropy: a label is outside 0..classes-1");
  napi_value out;
  napi_create_double(env, rt_softmax_xent(s[0], s[1], logits, labels, grad, (float)scale), &out);
  return out;
}

// Tensor offsets: `tensors` + 1 non-decreasing values from 0 to p.
static int32_t *offsets_of(napi_env env, napi_value v, size_t *tensors, size_t p) {
  size_t length;
  if (napi_get_typedarray_info(env, v, NULL, &length, NULL, NULL, NULL) != napi_ok) return NULL;
  int32_t *o = i32(env, v, 2);
  if (!o) return NULL;
  if (o[0] != 0 || (size_t)o[length - 1] != p) return NULL;
  for (size_t t = 1; t < length; t++)
    if (o[t] < o[t - 1]) return NULL;
  *tensors = length - 1;
  return o;
}

// fixedPointHalves(count, p, micro, offsets, perQ, halves)
static napi_value fixed_point_halves(napi_env env, napi_callback_info info) {
  ARGS("fixedPointHalves", 6);
  size_t s[2];
  SIZES("fixedPointHalves", 2, s);
  size_t tensors = 0;
  int32_t *offsets = offsets_of(env, argv[3], &tensors, s[1]);
  if (!offsets) THROW(env, "fixedPointHalves: offsets must run from 0 to p, never down");
  float *micro = f32(env, argv[2], product(2, s[0], s[1])), *halves = f32(env, argv[5], product(2, 2, s[1]));
  double *per_q = f64(env, argv[4], tensors);
  if (!micro || !per_q || !halves) THROW(env, "fixedPointHalves: " TOO_SHORT);
  rt_fixed_point_halves(s[0], s[1], micro, tensors, offsets, per_q, halves);
  return NULL;
}

// fixedPointMean(p, offsets, perMicro, halves, grads)
static napi_value fixed_point_mean(napi_env env, napi_callback_info info) {
  ARGS("fixedPointMean", 5);
  size_t p;
  SIZES("fixedPointMean", 1, &p);
  size_t tensors = 0;
  int32_t *offsets = offsets_of(env, argv[1], &tensors, p);
  if (!offsets) THROW(env, "fixedPointMean: offsets must run from 0 to p, never down");
  double *per_micro = f64(env, argv[2], tensors);
  float *halves = f32(env, argv[3], product(2, 2, p)), *grads = f32(env, argv[4], p);
  if (!per_micro || !halves || !grads) THROW(env, "fixedPointMean: " TOO_SHORT);
  rt_fixed_point_mean(p, tensors, offsets, per_micro, halves, grads);
  return NULL;
}

// absMax(n, x) → the largest |x|, NaN if any is NaN
static napi_value abs_max(napi_env env, napi_callback_info info) {
  ARGS("absMax", 2);
  size_t n;
  SIZES("absMax", 1, &n);
  float *x = f32(env, argv[1], n);
  if (!x) THROW(env, "absMax: " TOO_SHORT);
  napi_value out;
  napi_create_double(env, rt_abs_max(n, x), &out);
  return out;
}

// layerNorm(rows, width, eps, x, gain, bias | null, xhat, rstd, y)
static napi_value layer_norm(napi_env env, napi_callback_info info) {
  ARGS("layerNorm", 9);
  size_t s[2];
  SIZES("layerNorm", 2, s);
  double eps;
  if (napi_get_value_double(env, argv[2], &eps) != napi_ok || !(eps > 0)) THROW(env, "layerNorm: eps must be a positive number");
  const size_t n = product(2, s[0], s[1]);
  float *x = f32(env, argv[3], n), *gain = f32(env, argv[4], s[1]), *bias = is_null(env, argv[5]) ? NULL : f32(env, argv[5], s[1]);
  float *xhat = f32(env, argv[6], n), *rstd = f32(env, argv[7], s[0]), *y = f32(env, argv[8], n);
  if (!x || !gain || (!bias && !is_null(env, argv[5])) || !xhat || !rstd || !y) THROW(env, "layerNorm: " TOO_SHORT);
  rt_layernorm(s[0], s[1], (float)eps, x, gain, bias, xhat, rstd, y);
  return NULL;
}

// layerNormBackward(rows, width, dy, xhat, rstd, gain, dgain, dbias | null, dx | null)
static napi_value layer_norm_backward(napi_env env, napi_callback_info info) {
  ARGS("layerNormBackward", 9);
  size_t s[2];
  SIZES("layerNormBackward", 2, s);
  const size_t n = product(2, s[0], s[1]);
  float *dy = f32(env, argv[2], n), *xhat = f32(env, argv[3], n), *rstd = f32(env, argv[4], s[0]), *gain = f32(env, argv[5], s[1]);
  float *dgain = f32(env, argv[6], s[1]);
  float *dbias = is_null(env, argv[7]) ? NULL : f32(env, argv[7], s[1]), *dx = is_null(env, argv[8]) ? NULL : f32(env, argv[8], n);
  if (!dy || !xhat || !rstd || !gain || !dgain || (!dbias && !is_null(env, argv[7])) || (!dx && !is_null(env, argv[8])))
    THROW(env, "layerNormBackward: " TOO_SHORT);
  rt_layernorm_backward(s[0], s[1], dy, xhat, rstd, gain, dgain, dbias, dx);
  return NULL;
}

// Floats of attention's fused rows, its probabilities and its output, for batch, T, heads, d.
#define QKV(s) product(5, (s)[0], (s)[1], (size_t)3, (s)[2], (s)[3])
#define PROBS(s) product(4, (s)[0], (s)[2], (s)[1], (s)[1])
#define HEADS_OUT(s) product(4, (s)[0], (s)[1], (s)[2], (s)[3])

// attention(batch, T, heads, d, qkv, probs, out)
static napi_value attention(napi_env env, napi_callback_info info) {
  ARGS("attention", 7);
  size_t s[4];
  SIZES("attention", 4, s);
  float *qkv = f32(env, argv[4], QKV(s)), *probs = f32(env, argv[5], PROBS(s)), *out = f32(env, argv[6], HEADS_OUT(s));
  if (!qkv || !probs || !out) THROW(env, "attention: " TOO_SHORT);
  rt_attention(s[0], s[1], s[2], s[3], qkv, probs, out);
  return NULL;
}

// attentionBackward(batch, T, heads, d, qkv, probs, dout, dqkv)
static napi_value attention_backward(napi_env env, napi_callback_info info) {
  ARGS("attentionBackward", 8);
  size_t s[4];
  SIZES("attentionBackward", 4, s);
  float *qkv = f32(env, argv[4], QKV(s)), *probs = f32(env, argv[5], PROBS(s)), *dout = f32(env, argv[6], HEADS_OUT(s)),
        *dqkv = f32(env, argv[7], QKV(s));
  if (!qkv || !probs || !dout || !dqkv) THROW(env, "attentionBackward: " TOO_SHORT);
  if (rt_attention_backward(s[0], s[1], s[2], s[3], qkv, probs, dout, dqkv) != 0) THROW(env, "attentionBackward: out of memory");
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
    {"gelu", NULL, gelu, NULL, NULL, NULL, napi_default, NULL},
    {"softmaxCrossEntropy", NULL, softmax_cross_entropy, NULL, NULL, NULL, napi_default, NULL},
    {"fixedPointHalves", NULL, fixed_point_halves, NULL, NULL, NULL, napi_default, NULL},
    {"fixedPointMean", NULL, fixed_point_mean, NULL, NULL, NULL, napi_default, NULL},
    {"absMax", NULL, abs_max, NULL, NULL, NULL, napi_default, NULL},
    {"geluBackward", NULL, gelu_backward, NULL, NULL, NULL, napi_default, NULL},
    {"layerNorm", NULL, layer_norm, NULL, NULL, NULL, napi_default, NULL},
    {"layerNormBackward", NULL, layer_norm_backward, NULL, NULL, NULL, napi_default, NULL},
    {"attention", NULL, attention, NULL, NULL, NULL, napi_default, NULL},
    {"attentionBackward", NULL, attention_backward, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_value isa;
  napi_create_int32(env, direct_conv_isa(), &isa);
  napi_set_named_property(env, exports, "directConvIsa", isa);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

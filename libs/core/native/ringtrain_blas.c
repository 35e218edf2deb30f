// A small N-API addon: the system's OpenBLAS sgemm for @ringtrain/core's native backend.
// gemm(transA, transB, m, n, k, A, B, C, accumulate): row-major, tight strides, C = op(A)·op(B)
// (+ C when accumulate). The JS side checks shapes; this side checks types and lengths again,
// since a wrong length here would write outside the caller's buffer.
#include <node_api.h>
#include <cblas.h>
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
  };
  napi_define_properties(env, exports, 3, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

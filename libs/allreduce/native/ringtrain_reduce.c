// The all-reduce's hot loop, dst += src over float32 data, for the ring's received segments. V8
// runs the JS loop at about 6.7 GB/s; compiled, it is vectorised. Both sides are byte ranges at
// any alignment (a WebSocket payload lands wherever the socket read put it), so elements are
// loaded with memcpy, which the compiler turns into unaligned vector loads.
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

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

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"addFloat32", NULL, add_float32, NULL, NULL, NULL, napi_default, NULL},
    {"allFiniteFloat32", NULL, all_finite_float32, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 2, props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

// Shared memory between the ranks of one host (see src/shared-memory.ts): a file in /dev/shm
// mapped into every rank, and a futex on a word of it for waiting. JS copies and adds the floats;
// this file only maps the memory and orders and waits on the control words, which need real
// atomics and a system call that JS does not have.
#define _GNU_SOURCE
#include "shared_memory.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define THROW(env, msg) do { napi_throw_error((env), "ERR_NATIVE_ARGS", (msg)); return NULL; } while (0)

typedef struct {
  void *address;
  size_t bytes;
} mapping;

static void unmap(napi_env env, void *data, void *hint) {
  mapping *m = hint;
  munmap(m->address, m->bytes);
  int64_t adjusted;
  napi_adjust_external_memory(env, -(int64_t)m->bytes, &adjusted);
  free(m);
}

// mapShared(fd, bytes): the file's first `bytes` as an ArrayBuffer shared with every process that
// maps it; unmapped when the buffer is collected. The space is reserved first (posix_fallocate),
// so a full /dev/shm is an error here and not a SIGBUS at the first write.
static napi_value map_shared(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t fd;
  int64_t bytes;
  if (argc != 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int64(env, argv[1], &bytes) != napi_ok || bytes <= 0) THROW(env, "mapShared(fd, bytes) takes a file descriptor and a positive size");
  int err = posix_fallocate(fd, 0, (off_t)bytes);
  if (err) {
    napi_throw_error(env, err == ENOSPC ? "ENOSPC" : "ERR_SHARED_MEMORY", strerror(err));
    return NULL;
  }
  void *address = mmap(NULL, (size_t)bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (address == MAP_FAILED) {
    napi_throw_error(env, "ERR_SHARED_MEMORY", strerror(errno));
    return NULL;
  }
  mapping *m = malloc(sizeof *m);
  m->address = address;
  m->bytes = (size_t)bytes;
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, address, (size_t)bytes, unmap, m, &buffer) != napi_ok) {
    munmap(address, (size_t)bytes);
    free(m);
    THROW(env, "mapShared: this Node does not allow external array buffers");
  }
  int64_t adjusted;
  napi_adjust_external_memory(env, bytes, &adjusted);
  return buffer;
}

// The int32 at `index` of an Int32Array argument, 4-byte aligned by the array's type.
static _Atomic int32_t *word_of(napi_env env, napi_value array, napi_value index_value) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  uint32_t index;
  if (napi_get_typedarray_info(env, array, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array) return NULL;
  if (napi_get_value_uint32(env, index_value, &index) != napi_ok || index >= length) return NULL;
  return (_Atomic int32_t *)data + index;
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// waitAtLeast(words, index, target, spinMicros, timeoutMicros): waits until words[index] has
// reached `target` (as a sequence number: wrap-around allowed) or the timeout passed; returns the
// value last seen. Spins first (a peer that is already on its way arrives within microseconds),
// then sleeps on the futex, woken by `publish`.
static napi_value wait_at_least(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t target, spin_us, timeout_us;
  _Atomic int32_t *word = argc == 5 ? word_of(env, argv[0], argv[1]) : NULL;
  if (!word || napi_get_value_int32(env, argv[2], &target) != napi_ok || napi_get_value_int32(env, argv[3], &spin_us) != napi_ok || napi_get_value_int32(env, argv[4], &timeout_us) != napi_ok)
    THROW(env, "waitAtLeast(words: Int32Array, index, target, spinMicros, timeoutMicros)");
  int64_t start = now_ns(), spin_end = start + (int64_t)spin_us * 1000, end = start + (int64_t)timeout_us * 1000;
  int32_t v = atomic_load_explicit(word, memory_order_acquire);
  while ((int32_t)((uint32_t)v - (uint32_t)target) < 0) {
    int64_t t = now_ns();
    if (t >= end) break;
    if (t < spin_end) {
      for (int i = 0; i < 64; i++) relax();
    } else {
      int64_t left = end - t;
      struct timespec timeout = {left / 1000000000, left % 1000000000};
      // Sleeps only while the word still holds v: a publish in between is not missed.
      syscall(SYS_futex, (int32_t *)word, FUTEX_WAIT, v, &timeout, NULL, 0);
    }
    v = atomic_load_explicit(word, memory_order_acquire);
  }
  napi_value result;
  napi_create_int32(env, v, &result);
  return result;
}

// publish(words, index, value): stores value (after every write before it) and wakes the waiters.
static napi_value publish(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  int32_t value;
  _Atomic int32_t *word = argc == 3 ? word_of(env, argv[0], argv[1]) : NULL;
  if (!word || napi_get_value_int32(env, argv[2], &value) != napi_ok) THROW(env, "publish(words: Int32Array, index, value)");
  atomic_store_explicit(word, value, memory_order_seq_cst);
  syscall(SYS_futex, (int32_t *)word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
  return NULL;
}

#define MAX_PARTS 1024

// Every rank's copy of a chunk summed into out, tile by tile (a tile stays in L1 while each part
// is added to it, and the loops vectorise): out[i] = ((p0[i] + p1[i]) + …) / divisor in float32,
// the ring's order and rounding (an IEEE float add per hop, then one division: the same bits as the
// JS path's double arithmetic rounded to float32). Returns whether every sum is finite (a division
// by the rank count keeps finiteness as it is).
#define TILE 2048
__attribute__((target_clones("avx512f", "avx2", "default")))
static bool sum_in_order(float *restrict out, const float *const *parts, size_t count, size_t n, float divisor) {
  uint32_t bad = 0;
  for (size_t t = 0; t < n; t += TILE) {
    size_t m = n - t < TILE ? n - t : TILE;
    float *restrict o = out + t;
    memcpy(o, parts[0] + t, m * 4);
    for (size_t k = 1; k < count; k++) {
      const float *restrict p = parts[k] + t;
      for (size_t i = 0; i < m; i++) o[i] += p[i];
    }
    if (divisor != 1.0f)
      for (size_t i = 0; i < m; i++) o[i] = o[i] / divisor;
    for (size_t i = 0; i < m; i++) {
      uint32_t bits;
      memcpy(&bits, o + i, 4);
      bad |= (bits & 0x7f800000u) == 0x7f800000u;
    }
  }
  return !bad;
}

// sumInOrder(out: Float32Array, parts: Float32Array[], divisor) → whether every sum is finite.
static napi_value sum_in_order_js(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_typedarray_type type;
  size_t n, count;
  void *out;
  double divisor;
  bool is_array = false;
  if (argc != 3 || napi_get_typedarray_info(env, argv[0], &type, &n, &out, NULL, NULL) != napi_ok || type != napi_float32_array || napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_value_double(env, argv[2], &divisor) != napi_ok)
    THROW(env, "sumInOrder(out: Float32Array, parts: Float32Array[], divisor)");
  uint32_t length;
  napi_get_array_length(env, argv[1], &length);
  count = length;
  if (count < 1 || count > MAX_PARTS) THROW(env, "sumInOrder: 1 to 1024 parts");
  const float *parts[MAX_PARTS];
  for (uint32_t k = 0; k < length; k++) {
    napi_value part;
    size_t part_n;
    void *data;
    if (napi_get_element(env, argv[1], k, &part) != napi_ok || napi_get_typedarray_info(env, part, &type, &part_n, &data, NULL, NULL) != napi_ok || type != napi_float32_array || part_n != n)
      THROW(env, "sumInOrder: every part must be a Float32Array as long as out");
    parts[k] = data;
  }
  napi_value result;
  napi_get_boolean(env, n == 0 || sum_in_order(out, parts, count, n, (float)divisor), &result);
  return result;
}

void shared_memory_properties(napi_property_descriptor *out) {
  napi_property_descriptor props[SHARED_MEMORY_PROPERTIES] = {
    {"mapShared", NULL, map_shared, NULL, NULL, NULL, napi_default, NULL},
    {"waitAtLeast", NULL, wait_at_least, NULL, NULL, NULL, napi_default, NULL},
    {"publish", NULL, publish, NULL, NULL, NULL, napi_default, NULL},
    {"sumInOrder", NULL, sum_in_order_js, NULL, NULL, NULL, napi_default, NULL},
  };
  memcpy(out, props, sizeof props);
}

// Host memory for the float32 weights a layer load expands: huge pages for fresh arrays, and the
// bf16 -> float32 widening in C.
//
// Why: a streamed layer's weights are fresh arrays every layer. On this project's machines the
// first touch of fresh 4 KiB pages costs ~15 ns per float32 (a page fault per 1024 values), more
// than reading and widening the bf16 bytes: Gemma-2-2B's layers spent most of a scoring run
// there. With transparent huge pages in `madvise` mode (the common default) a 2 MiB page is one
// fault (numpy asks the same for its arrays): in a C loop first touch fell to 0.5-1.7 ns per float32
// after the first allocation, less so in Node, which is why streamed layers also reuse their arrays
// (src/tensor/hostMemory.ts). The widening is memory-bound; in C it runs at memory speed.
//
// JavaScript API (src/tensor/hostMemory.ts wraps it):
//   adviseHugePages(view) -> bytes advised     madvise(MADV_HUGEPAGE) on the 2 MiB-aligned pages
//                                                inside a typed array's memory (0 when none fit)
//   decodeBf16(bytes: Uint8Array, out: Float32Array)   out[i] = float32 with bf16 bits of element i;
//                                                the bytes may be the last half of out's own memory
#define _GNU_SOURCE
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors and GGUF bytes are little-endian; this helper reads them as host words"
#endif

#define HUGE_PAGE ((uintptr_t)2 << 20)
// Elements widened per block: the block's bytes are copied out before any of its floats are written.
#define BLOCK 4096

static int typed_array(napi_env env, napi_value value, napi_typedarray_type *type, void **data, size_t *length) {
  napi_value buffer;
  size_t byte_offset;
  return napi_get_typedarray_info(env, value, type, length, data, &buffer, &byte_offset) == napi_ok;
}

static size_t element_size(napi_typedarray_type type) {
  switch (type) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_int32_array: case napi_uint32_array: case napi_float32_array: return 4;
    default: return 8;
  }
}

static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_typedarray_type type;
  void *data;
  size_t length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 1 || !typed_array(env, argv[0], &type, &data, &length)) {
    napi_throw_type_error(env, NULL, "adviseHugePages(view) takes a typed array");
    return NULL;
  }
  uintptr_t begin = ((uintptr_t)data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uintptr_t end = ((uintptr_t)data + length * element_size(type)) & ~(HUGE_PAGE - 1);
  double advised = 0;
  // Advice only: a kernel without transparent huge pages refuses it and the memory stays as it was.
  if (end > begin && madvise((void *)begin, end - begin, MADV_HUGEPAGE) == 0) advised = (double)(end - begin);
  napi_value result;
  napi_create_double(env, advised, &result);
  return result;
}

static napi_value decode_bf16(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  napi_typedarray_type in_type, out_type;
  void *in_data, *out_data;
  size_t in_length, n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || !typed_array(env, argv[0], &in_type, &in_data, &in_length) ||
      !typed_array(env, argv[1], &out_type, &out_data, &n) || in_type != napi_uint8_array || out_type != napi_float32_array) {
    napi_throw_type_error(env, NULL, "decodeBf16(bytes, out) takes a Uint8Array and a Float32Array");
    return NULL;
  }
  if (in_length < 2 * n) {
    napi_throw_range_error(env, NULL, "decodeBf16: fewer bytes than two per output element");
    return NULL;
  }
  const uint8_t *in = in_data;
  uint32_t *out = out_data;
  uint16_t block[BLOCK];
  // Each block's bytes are copied before its floats are written. When the bytes are the last half
  // of out's memory, block k's floats end at byte 4(k+1)B <= 2n + 2(k+1)B, where block k+1's bytes
  // begin, so no block overwrites bytes not yet read.
  for (size_t start = 0; start < n; start += BLOCK) {
    size_t count = n - start < BLOCK ? n - start : BLOCK;
    memcpy(block, in + 2 * start, 2 * count);
    uint32_t *dst = out + start;
    for (size_t i = 0; i < count; i++) dst[i] = (uint32_t)block[i] << 16;
  }
  return NULL;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_function(env, exports, "adviseHugePages", advise_huge_pages);
  export_function(env, exports, "decodeBf16", decode_bf16);
  return exports;
}

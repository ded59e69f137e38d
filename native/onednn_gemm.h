// The layer GEMMs through oneDNN's matmul (Debian's libdnnl, the library PyTorch's CPU bf16
// GEMMs come from), included by cpu_bf16.c when the build found its header (-DSHORTGPT_ONEDNN).
//
// Why: oneDNN picks the CPU's best bf16 code at run time: AMX tiles on the Xeons that have them
// (avx512_core_amx), AVX512_BF16 elsewhere, where it also beats this file's own kernel (measured
// in bench/RESULTS.md, "CPU GEMMs"). Its weights stay in the plain layout (n rows of k bf16, the
// checkpoint's own order): packing is a copy, a layer is packed tensor by tensor as before, and
// oneDNN blocks the weights itself as it multiplies (measured ~10% under a pre-reordered layout on
// AVX512_BF16, without a second copy of the layer). On an AMX Xeon (brg:avx512_core_amx_bf16, 2
// threads, 2026-12-05) packing into the blocked layout oneDNN chooses gave no clear gain: TinyLlama
// score 189.8 vs 189.0 tokens/s; GEMMs 0.75-0.85x of plain with the weights in a Node ArrayBuffer,
// and -10%..+7% with 4 KiB-aligned weights. AMX rates depend on the values (bench/onednn's fill
// ran 2x faster than random values on gate+up), so compare layouts on the same data.
//
// Primitives are made once per (m, n, k, accumulate) with every dimension fixed: oneDNN 2.6 takes
// a run-time M only in its older gemm:jit code, which has no AMX path.
#include <oneapi/dnnl/dnnl.h>

extern void omp_set_num_threads(int); // libdnnl is built on OpenMP (libgomp)

#define ONEDNN_CACHE 32

typedef struct {
  size_t m, n, k; int accumulate, threads;
  dnnl_primitive_t prim;
  dnnl_memory_t a, w, c;
} onednn_matmul;

static struct {
  int ready;       // 1: engine and stream made
  int failed;      // 1: oneDNN could not start (then the native kernel runs)
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  onednn_matmul cache[ONEDNN_CACHE];
  size_t used, next; // cache entries in use; the next one to replace when full
  char impl[128];    // the implementation of the last primitive made, e.g. brg:avx512_core_amx
} onednn;

static int onednn_start(void) {
  if (onednn.ready) return 1;
  if (onednn.failed) return 0;
  if (dnnl_engine_create(&onednn.engine, dnnl_cpu, 0) != dnnl_success ||
      dnnl_stream_create(&onednn.stream, onednn.engine, dnnl_stream_default_flags) != dnnl_success) {
    onednn.failed = 1;
    return 0;
  }
  onednn.ready = 1;
  return 1;
}

// (rows, cols) row-major with a row stride.
static int onednn_desc(dnnl_memory_desc_t *md, size_t rows, size_t cols, size_t stride, dnnl_data_type_t type) {
  dnnl_dims_t dims = {(dnnl_dim_t)rows, (dnnl_dim_t)cols}, strides = {(dnnl_dim_t)stride, 1};
  return dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides) == dnnl_success;
}

static void onednn_release(onednn_matmul *e) {
  if (e->prim) dnnl_primitive_destroy(e->prim);
  if (e->a) dnnl_memory_destroy(e->a);
  if (e->w) dnnl_memory_destroy(e->w);
  if (e->c) dnnl_memory_destroy(e->c);
  memset(e, 0, sizeof *e);
}

// The matmul out (m, n) [+]= a (m, k) @ w^T, a and w (n, k) dense row-major bf16. A primitive
// keeps the OpenMP thread count it was made under: made after omp_set_num_threads, keyed by it.
static onednn_matmul *onednn_get(size_t m, size_t n, size_t k, int accumulate, int threads) {
  for (size_t i = 0; i < onednn.used; i++) {
    onednn_matmul *e = &onednn.cache[i];
    if (e->m == m && e->n == n && e->k == k && e->accumulate == accumulate && e->threads == threads) return e;
  }
  onednn_matmul *e = onednn.used < ONEDNN_CACHE ? &onednn.cache[onednn.used++] : &onednn.cache[onednn.next++ % ONEDNN_CACHE];
  onednn_release(e);
  dnnl_memory_desc_t a_md, w_md, c_md;
  // W as a (k, n) matrix whose element (i, j) is w[j * k + i]: strides (1, k).
  dnnl_dims_t w_dims = {(dnnl_dim_t)k, (dnnl_dim_t)n}, w_strides = {1, (dnnl_dim_t)k};
  if (!onednn_desc(&a_md, m, k, k, dnnl_bf16) || !onednn_desc(&c_md, m, n, n, dnnl_f32) ||
      dnnl_memory_desc_init_by_strides(&w_md, 2, w_dims, dnnl_bf16, w_strides) != dnnl_success)
    return NULL;
  dnnl_matmul_desc_t desc;
  if (dnnl_matmul_desc_init(&desc, &a_md, &w_md, NULL, &c_md) != dnnl_success) return NULL;
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t ops = NULL;
  int ok = dnnl_primitive_attr_create(&attr) == dnnl_success;
  if (ok && accumulate) {
    // out += a @ w^T: the sum post-op adds what the destination held.
    ok = dnnl_post_ops_create(&ops) == dnnl_success && dnnl_post_ops_append_sum(ops, 1.0f) == dnnl_success &&
         dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
  }
  dnnl_primitive_desc_t pd = NULL;
  ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, onednn.engine, NULL) == dnnl_success;
  if (ok) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) {
      strncpy(onednn.impl, impl, sizeof onednn.impl - 1);
    }
    ok = dnnl_primitive_create(&e->prim, pd) == dnnl_success &&
         dnnl_memory_create(&e->a, &a_md, onednn.engine, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&e->w, &w_md, onednn.engine, DNNL_MEMORY_NONE) == dnnl_success &&
         dnnl_memory_create(&e->c, &c_md, onednn.engine, DNNL_MEMORY_NONE) == dnnl_success;
  }
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (ops) dnnl_post_ops_destroy(ops);
  if (attr) dnnl_primitive_attr_destroy(attr);
  if (!ok) {
    onednn_release(e);
    return NULL;
  }
  e->m = m; e->n = n; e->k = k; e->accumulate = accumulate; e->threads = threads;
  return e;
}

// out (m, n) [+]= abf (m, k) @ w^T, both dense bf16 rows of k. Returns 0, or -1 when oneDNN failed.
static int onednn_gemm(float *out, const uint16_t *abf, const uint16_t *w, size_t m, size_t n, size_t k, int accumulate, int threads) {
  if (!onednn_start()) return -1;
  omp_set_num_threads(threads);
  onednn_matmul *e = onednn_get(m, n, k, accumulate, threads);
  if (!e) return -1;
  dnnl_memory_set_data_handle(e->a, (void *)abf);
  dnnl_memory_set_data_handle(e->w, (void *)w);
  dnnl_memory_set_data_handle(e->c, out);
  dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->w}, {DNNL_ARG_DST, e->c}};
  if (dnnl_primitive_execute(e->prim, onednn.stream, 3, args) != dnnl_success) return -1;
  return dnnl_stream_wait(onednn.stream) == dnnl_success ? 0 : -1;
}

static const char *onednn_version_string(char *buf, size_t size) {
  const dnnl_version_t *v = dnnl_version();
  snprintf(buf, size, "oneDNN %d.%d.%d", v->major, v->minor, v->patch);
  return buf;
}

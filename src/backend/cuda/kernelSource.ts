// The CUDA C kernels of the cuda backend, compiled at run time by NVRTC (compile.ts). Every
// kernel has a reference twin on the host (reference.ts, rowStats.ts) that the device check
// compares it with. GEMMs are cuBLAS's; these are the memory-bound steps around them.
//
// GIN_BF16 selects the type of GEMM inputs (gin_t): bf16 (default precision) or fp32
// (--precision fp32). The residual stream and every GEMM output stay fp32; reductions
// (norms, statistics, softmax sums) accumulate in double or fp32 as each kernel says.
// No CUDA headers are included: bf16 is handled as its bits, so NVRTC needs no include path.
// The recurrent layer kinds' kernels are recurrentKernelSource.ts's, appended to this source.

import { RECURRENT_KERNEL_NAMES, RECURRENT_KERNEL_SOURCE } from "./recurrentKernelSource.js";

export const KERNEL_NAMES = [
  "embed_rows", "to_gin", "norm_rows", "qkv_heads", "attention_softmax_4", "attention_softmax_8", "attention_softmax_16", "attention_softmax_32", "heads_to_rows", "add_bias", "mlp_activation",
  "row_stats", "gather_rows", "head_logsumexp", "residual_add_normed", "softcap_in_place",
  ...RECURRENT_KERNEL_NAMES,
] as const;
/** Kernels compiled only with bf16 GEMM inputs (GIN_BF16=1): they use the bf16 tensor-core MMA. */
export const BF16_KERNEL_NAMES = ["flash_attention_64", "flash_attention_128", "flash_attention_64_rule", "flash_attention_128_rule"] as const;
export type KernelName = (typeof KERNEL_NAMES)[number] | (typeof BF16_KERNEL_NAMES)[number];
/** Head sizes the flash attention kernel is compiled for. */
export const FLASH_HEAD_DIMS = [64, 128] as const;

/** Keys one thread of attention_softmax_<slots> holds in registers, smallest first (a row covers slots x blockDim keys). */
export const SOFTMAX_SLOTS = [4, 8, 16, 32] as const;
export const SOFTMAX_PER_THREAD = 32;

export const KERNEL_SOURCE = String.raw`
typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_float(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }

// Round to nearest even, as PyTorch and cuBLAS convert; NaN stays NaN.
__device__ __forceinline__ bf16_t float_to_bf16(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (bf16_t)(u >> 16);
}

#if GIN_BF16
typedef bf16_t gin_t;
__device__ __forceinline__ gin_t to_gin_value(float v) { return float_to_bf16(v); }
__device__ __forceinline__ float gin_to_float(gin_t v) { return bf16_to_float(v); }
#else
typedef float gin_t;
__device__ __forceinline__ gin_t to_gin_value(float v) { return v; }
__device__ __forceinline__ float gin_to_float(gin_t v) { return v; }
#endif

#define NEG_INF __int_as_float(0xff800000)

// Gemma 2/3 and Phi-3 (issue #15): soft_cap, within_window, flash_logit, residual_add_normed,
// softcap_in_place and the score rule's arguments of the softmax and flash kernels were written
// without a GPU at hand: compile-checked for sm_80 and sm_90 (scripts/check-kernels.mjs), their
// launch arguments stub-checked (test/cudaStub.test.ts), and their results checked against the
// reference with the kernels compiled for the CPU (test/cudaEmulated.test.ts: emulated threads
// and MMA); not yet on a GPU, where bench/gpu/familyChecks.ts checks them.

// Gemma 2's soft cap of attention scores and logits (host twin: softcapInPlace in reference.ts):
// cap * tanh(x / cap); cap 0 means none. tanhf is within 2 ulp, far below the bf16 bound.
__device__ __forceinline__ float soft_cap(float x, float cap) { return cap > 0.f ? cap * tanhf(x / cap) : x; }

// Sliding-window (local) attention: a query at query_pos sees keys at query_pos - sliding_window + 1
// .. query_pos only (host twin: causalAttention's window in reference.ts); 0 means no limit. The
// caller hides keys after the query (the causal mask) itself.
__device__ __forceinline__ bool within_window(int query_pos, int key_pos, int sliding_window) {
  return sliding_window <= 0 || query_pos - key_pos < sliding_window;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// scratch: 32 elements of shared memory, free to reuse once the call returns.
template <typename T> __device__ T block_sum(T v, T *scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < n_warps ? scratch[lane] : (T)0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

__device__ float block_max(float v, float *scratch) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < n_warps ? scratch[lane] : NEG_INF;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

// The residual stream entering layer 0 (host twin: embedding.ts): row r = table[ids[r]] * scale
// (scale 0: none) + pos_table[positions ? positions[r] : r % seq_len] (when pos_table is given).
// grid: rows; block: 256.
extern "C" __global__ void embed_rows(const float *table, const int *ids, float scale, const float *pos_table, const int *positions, int seq_len, float *out, int dim) {
  const int r = blockIdx.x;
  const float *row = table + (long long)ids[r] * dim;
  const float *pos = pos_table ? pos_table + (long long)(positions ? positions[r] : r % seq_len) * dim : 0;
  float *dst = out + (long long)r * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    // Rounded multiply, then rounded add (no FMA), as the host computes them.
    float v = scale != 0.f ? __fmul_rn(row[i], scale) : row[i];
    if (pos) v = __fadd_rn(v, pos[i]);
    dst[i] = v;
  }
}

// Weights: fp32 (uploaded as stored after expansion) -> GEMM input type. n elements.
extern "C" __global__ void to_gin(const float *src, gin_t *dst, long long n) {
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) dst[i] = to_gin_value(src[i]);
}

// 1 / sqrt(mean(row^2) + eps) over a row of dim values: the sum in double, as the host computes it.
// Every thread of the block gets it (scratch: 32 doubles of shared memory).
__device__ float rms_inverse(const float *row, int dim, float eps, double *scratch) {
  double ss = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += (double)row[i] * row[i];
  return (float)(1.0 / sqrt(block_sum(ss, scratch) / dim + (double)eps));
}

// A normed row stored as GEMM inputs (norm_rows) or as fp32 (norm_rows_f32, recurrentKernelSource.ts).
__device__ __forceinline__ void store_normed(bf16_t *p, float v) { *p = float_to_bf16(v); }
__device__ __forceinline__ void store_normed(float *p, float v) { *p = v; }

// RMSNorm (layer_norm 0) or LayerNorm with bias (layer_norm 1) of one row of dim values -> dst,
// the sums in double. Every thread of the block takes part (scratch: 32 doubles of shared memory).
template <typename T> __device__ void norm_row(const float *row, const float *weight, const float *bias, T *dst, int dim, float eps, int layer_norm, double *scratch) {
  if (layer_norm) {
    double s = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += row[i];
    const float mean = (float)(block_sum(s, scratch) / dim);
    double v = 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) { const double d = row[i] - mean; v += d * d; }
    const float inv = (float)(1.0 / sqrt(block_sum(v, scratch) / dim + (double)eps));
    for (int i = threadIdx.x; i < dim; i += blockDim.x) store_normed(dst + i, (row[i] - mean) * inv * weight[i] + bias[i]);
  } else {
    const float inv = rms_inverse(row, dim, eps, scratch);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) store_normed(dst + i, row[i] * inv * weight[i]);
  }
}

// RMSNorm (layer_norm 0) or LayerNorm with bias (layer_norm 1) of rows of x (., dim) -> out (rows, dim).
// Row r of the output normalizes row source_rows[r] of x (all rows in order when source_rows is null).
// grid: rows; block: 256.
extern "C" __global__ void norm_rows(const float *x, const int *source_rows, const float *weight, const float *bias, gin_t *out, int dim, float eps, int layer_norm) {
  __shared__ double scratch[32];
  const int r = blockIdx.x;
  norm_row(x + (long long)(source_rows ? source_rows[r] : r) * dim, weight, bias, out + (long long)r * dim, dim, eps, layer_norm, scratch);
}

// Gemma 2/3's sandwich norm at a residual add: out = x + RMSNorm(src) * weight, row by row (host
// twin: referenceDecoderLayer's postNorms). src (rows, dim): a block's fp32 output (attention after
// wo, or the MLP after wDown, biases added). x and out may be the same rows (the add in place).
// Norm weights arrive as the scale they apply (the loader has added Gemma's 1). grid: rows; block: 256.
extern "C" __global__ void residual_add_normed(const float *x, const float *src, const float *weight, float *out, int dim, float eps) {
  __shared__ double scratch[32];
  const long long base = (long long)blockIdx.x * dim;
  const float inv = rms_inverse(src + base, dim, eps, scratch);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[base + i] = x[base + i] + src[base + i] * inv * weight[i];
}

// One of q, k, v out of the fused projection qkv (rows, ld; written by the GEMM as gin_t), columns col0 + head * head_dim ..:
// + bias, per-head RMSNorm (norm_weight), RoPE (rotate-half, angle pos * inv_freq[i] in double),
// written head-major for attention: dst[((window * n_heads + head) * dst_len + dst_offset + t) * head_dim + i]
// (dst_len = seq_len and dst_offset = 0 for a batch of windows; a key/value cache's capacity and
// filled length when decoding). positions: each row's position (packed windows, decoding), or null
// for t. grid: (rows, n_heads); block: >= head_dim / 2, a multiple of 32.
extern "C" __global__ void qkv_heads(const gin_t *qkv, int ld, int col0, const float *bias, const float *norm_weight, float eps,
                                     const double *inv_freq, const int *positions, int seq_len, int n_heads, int head_dim, gin_t *dst, int dst_len, int dst_offset) {
  __shared__ double scratch[32];
  const int r = blockIdx.x, head = blockIdx.y, i = threadIdx.x, half = head_dim >> 1;
  const int window = r / seq_len, t = r - window * seq_len;
  const bool active = i < half;
  const gin_t *src = qkv + (long long)r * ld + col0 + head * head_dim;
  float a = 0.f, b = 0.f;
  if (active) {
    a = gin_to_float(src[i]);
    b = gin_to_float(src[i + half]);
    if (bias) { a += bias[head * head_dim + i]; b += bias[head * head_dim + i + half]; }
  }
  if (norm_weight) {
    const double ss = block_sum(active ? (double)a * a + (double)b * b : 0.0, scratch);
    const float inv = (float)(1.0 / sqrt(ss / head_dim + (double)eps));
    if (active) { a = a * inv * norm_weight[i]; b = b * inv * norm_weight[i + half]; }
  }
  if (!active) return;
  if (inv_freq) {
    const int pos = positions ? positions[r] : t;
    double s, c;
    sincos((double)pos * inv_freq[i], &s, &c);
    const float cf = (float)c, sf = (float)s;
    const float a2 = a * cf - b * sf, b2 = b * cf + a * sf;
    a = a2;
    b = b2;
  }
  gin_t *out = dst + (((long long)window * n_heads + head) * dst_len + dst_offset + t) * head_dim;
  out[i] = to_gin_value(a);
  out[i + half] = to_gin_value(b);
}

// Softmax of one row of attention scores for one block of queries, masked causally (key s <= query t),
// with branches to the query's own branch and the shared prefix (branch 0), and with a sliding window
// (sliding_window > 0) to keys less than sliding_window positions before the query; written over the
// scores as gin_t with row stride p_ld elements (p_ld = row_len for fp32, 2 * row_len for bf16).
// A score is scale * (q . k), soft-capped when softcap > 0 (Gemma 2), before the mask and softmax.
// positions: each token's position for the window (packed windows, offset and laid out like
// branches), else null and a token's position is its index.
// The score GEMM wrote rows (batch b, query q0 + i) for i < block_rows, each row_len keys long;
// batch b belongs to window b / batches_per_window (branches is offset to the chunk's first window,
// seq_len values per window). Each thread holds SLOTS keys in registers: the host picks the
// smallest SLOTS with row_len <= SLOTS * blockDim (attention_softmax_<SLOTS>), since every slot
// costs instructions even when masked. grid: rows; block: a multiple of 32 up to 1024.
template <int SLOTS> __device__ __forceinline__ void softmax_row(float *scores, int row_len, int block_rows, int q0, int batches_per_window,
                                                                  float scale, const int *branches, int seq_len, int p_ld,
                                                                  float softcap, int sliding_window, const int *positions) {
  __shared__ float max_scratch[32];
  __shared__ float sum_scratch[32];
  const long long r = blockIdx.x;
  const int b = (int)(r / block_rows);
  const int t = q0 + (int)(r - (long long)b * block_rows);
  const int window = b / batches_per_window;
  const float *row = scores + r * row_len;
  const int *br = branches ? branches + (long long)window * seq_len : 0;
  const int own = br ? br[t] : 0;
  const int *pos = positions ? positions + (long long)window * seq_len : 0;
  const int query_pos = pos ? pos[t] : t;
  float v[SLOTS];
  float m = NEG_INF;
#pragma unroll
  for (int k = 0; k < SLOTS; k++) {
    const int s = threadIdx.x + k * blockDim.x;
    bool visible = s <= t;
    if (visible && br) { const int bs = br[s]; visible = bs == 0 || bs == own; }
    if (visible) visible = within_window(query_pos, pos ? pos[s] : s, sliding_window);
    v[k] = visible ? soft_cap(row[s] * scale, softcap) : NEG_INF;
    m = fmaxf(m, v[k]);
  }
  const float row_max = block_max(m, max_scratch);
  float sum = 0.f;
#pragma unroll
  for (int k = 0; k < SLOTS; k++) {
    v[k] = v[k] == NEG_INF ? 0.f : __expf(v[k] - row_max);
    sum += v[k];
  }
  // block_sum ends with a barrier: every thread has read its scores before any probability is written over them.
  const float inv = 1.f / block_sum(sum, sum_scratch);
  gin_t *p = (gin_t *)scores + r * (long long)p_ld;
#pragma unroll
  for (int k = 0; k < SLOTS; k++) {
    const int s = threadIdx.x + k * blockDim.x;
    if (s < row_len) p[s] = to_gin_value(v[k] * inv);
  }
}

extern "C" __global__ void __launch_bounds__(1024) attention_softmax_4(float *scores, int row_len, int block_rows, int q0, int batches_per_window, float scale, const int *branches, int seq_len, int p_ld,
                                                          float softcap, int sliding_window, const int *positions) {
  softmax_row<4>(scores, row_len, block_rows, q0, batches_per_window, scale, branches, seq_len, p_ld, softcap, sliding_window, positions);
}
extern "C" __global__ void __launch_bounds__(1024) attention_softmax_8(float *scores, int row_len, int block_rows, int q0, int batches_per_window, float scale, const int *branches, int seq_len, int p_ld,
                                                          float softcap, int sliding_window, const int *positions) {
  softmax_row<8>(scores, row_len, block_rows, q0, batches_per_window, scale, branches, seq_len, p_ld, softcap, sliding_window, positions);
}
extern "C" __global__ void __launch_bounds__(1024) attention_softmax_16(float *scores, int row_len, int block_rows, int q0, int batches_per_window, float scale, const int *branches, int seq_len, int p_ld,
                                                          float softcap, int sliding_window, const int *positions) {
  softmax_row<16>(scores, row_len, block_rows, q0, batches_per_window, scale, branches, seq_len, p_ld, softcap, sliding_window, positions);
}
extern "C" __global__ void __launch_bounds__(1024) attention_softmax_32(float *scores, int row_len, int block_rows, int q0, int batches_per_window, float scale, const int *branches, int seq_len, int p_ld,
                                                          float softcap, int sliding_window, const int *positions) {
  softmax_row<32>(scores, row_len, block_rows, q0, batches_per_window, scale, branches, seq_len, p_ld, softcap, sliding_window, positions);
}

// Head-major attention output (window, head, t, head_dim) -> rows (window * seq_len + t, n_heads * head_dim).
extern "C" __global__ void heads_to_rows(const gin_t *src, gin_t *dst, int seq_len, int n_heads, int head_dim, long long n) {
  const int width = n_heads * head_dim;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const long long r = e / width;
    const int c = (int)(e - r * width), head = c / head_dim, i = c - head * head_dim;
    const long long window = r / seq_len, t = r - window * seq_len;
    dst[e] = src[((window * n_heads + head) * seq_len + t) * head_dim + i];
  }
}

// x (rows, cols) += bias on every row.
extern "C" __global__ void add_bias(float *x, const float *bias, int cols, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) x[e] += bias[e % cols];
}

__device__ __forceinline__ float activate(float x, int kind) {
  if (kind == 1) {
    const float c = 0.7978845608028654f; // sqrt(2 / pi)
    return 0.5f * x * (1.f + tanhf(c * (x + 0.044715f * x * x * x)));
  }
  return x / (1.f + expf(-x));
}

// The MLP's middle: gated, out = act(gate) * (up + up_bias); plain, out = act(up + up_bias).
// src rows (gin_t, as the GEMM wrote them) hold [gate | up] (gated, ld = 2 * hidden) or [up] (plain, ld = hidden). kind: 0 silu, 1 gelu (tanh).
extern "C" __global__ void mlp_activation(const gin_t *src, const float *up_bias, gin_t *out, int hidden, int gated, int kind, long long n) {
  const int ld = gated ? 2 * hidden : hidden;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const long long r = e / hidden;
    const int c = (int)(e - r * hidden);
    const gin_t *row = src + r * ld;
    float up = gin_to_float(row[gated ? hidden + c : c]);
    if (up_bias) up += up_bias[c];
    out[e] = to_gin_value(gated ? activate(gin_to_float(row[c]), kind) * up : activate(up, kind));
  }
}

#if GIN_BF16
// Causal attention in one pass (flash attention, bf16 only): each block of 4 warps takes 64 queries of
// one head (16 per warp), walks the visible keys in tiles of 64 through shared memory, keeps the
// scores in registers with a running (online) softmax, and multiplies on the tensor cores (mma
// m16n8k16, bf16 in, fp32 accumulate). No score matrix is written to memory: for 8 windows of 2,048
// tokens that matrix would be 4 GiB of traffic a layer.
// q: (window, head, n_queries, HD); k, v: (window, kv_head, kv_stride, HD), kv_stride >= n_keys
// (a key/value cache is longer than the keys in use); query i sits at position q_offset + i and sees
// keys s <= q_offset + i, s < n_keys, and with sliding_window > 0 only keys s > q_offset + i - sliding_window
// (key tiles wholly before the block's window are skipped). A score is scale * (q . k), soft-capped
// when softcap > 0 (Gemma 2). out: rows (window * n_queries + i, n_heads * HD) bf16.
// grid: (ceil(n_queries / 64), n_heads, n_windows); block: 128.
#define FA_TILE 64
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
  return (unsigned)float_to_bf16(lo) | ((unsigned)float_to_bf16(hi) << 16);
}
// A visible score in the kernel's log2 units: scale * (q . k), through the soft cap when there is one.
// Without a cap, scale and log2(e) stay one multiply, as before caps existed.
__device__ __forceinline__ float flash_logit(float dot, float scale, float scale_log2, float softcap) {
  return softcap > 0.f ? soft_cap(dot * scale, softcap) * 1.4426950408889634f : dot * scale_log2;
}
__device__ __forceinline__ void mma_bf16(float *c, const unsigned *a, unsigned b0, unsigned b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// RULE: whether the soft cap and sliding window apply (the _rule kernels); without, they are
// compiled away, so that a plain Llama layer keeps the registers (168 for head size 128, three
// blocks an SM) it had before them (179 with, two blocks).
template <int HD, bool RULE> __device__ __forceinline__ void flash_attention(const bf16_t *q, const bf16_t *k, const bf16_t *v, bf16_t *out, int n_queries, int n_keys,
                                                                             int kv_stride, int q_offset, int n_heads, int n_kv_heads, float scale,
                                                                             float softcap, int sliding_window) {
  if (!RULE) {
    softcap = 0.f;
    sliding_window = 0;
  }
  // Row strides padded by 8 elements so that the fragment loads below hit 32 different banks.
  constexpr int KS = HD + 8, VS = FA_TILE + 8;
  __shared__ __align__(16) bf16_t ks[FA_TILE * KS];
  __shared__ __align__(16) bf16_t vt[HD * VS];  // V transposed: vt[d][key]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  // The blocks with the most keys start first.
  const int q_block = gridDim.x - 1 - blockIdx.x, head = blockIdx.y, window = blockIdx.z;
  const int kv_head = head / (n_heads / n_kv_heads);
  const int row0 = q_block * FA_TILE + warp * 16 + g;  // this thread's rows: row0 and row0 + 8
  const bf16_t *qh = q + ((long long)window * n_heads + head) * n_queries * HD;
  const bf16_t *kh = k + ((long long)window * n_kv_heads + kv_head) * kv_stride * HD;
  const bf16_t *vh = v + ((long long)window * n_kv_heads + kv_head) * kv_stride * HD;

  // Q as A fragments, HD / 16 steps of 4 registers (rows g and g + 8; columns 2 t4 (+8) of each step).
  unsigned qa[HD / 16][4];
#pragma unroll
  for (int s = 0; s < HD / 16; s++) {
#pragma unroll
    for (int r = 0; r < 4; r++) {
      const int row = row0 + (r & 1) * 8, col = s * 16 + 2 * t4 + (r >> 1) * 8;
      qa[s][r] = row < n_queries ? *(const unsigned *)(qh + (long long)row * HD + col) : 0u;
    }
  }
  float o[HD / 8][4];
#pragma unroll
  for (int n = 0; n < HD / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};
  const float scale_log2 = scale * 1.4426950408889634f;
  const int last_query = min(n_queries, (q_block + 1) * FA_TILE) - 1;
  const int keys_needed = min(n_keys, q_offset + last_query + 1);
  const int n_tiles = (keys_needed + FA_TILE - 1) / FA_TILE;
  // With a sliding window, the block's first query (the lowest position) sees no key before this one.
  const int first_key = sliding_window > 0 ? max(0, q_offset + q_block * FA_TILE - sliding_window + 1) : 0;

  for (int tile = first_key / FA_TILE; tile < n_tiles; tile++) {
    const int key0 = tile * FA_TILE;
    __syncthreads();  // the previous tile's fragments are read
    // K rows as stored; V transposed. 16 bytes (8 values) a load; keys past n_keys are zeros.
    for (int c = threadIdx.x; c < FA_TILE * HD / 8; c += blockDim.x) {
      const int key = c / (HD / 8), col = (c - key * (HD / 8)) * 8;
      uint4 kk = make_uint4(0u, 0u, 0u, 0u), vv = make_uint4(0u, 0u, 0u, 0u);
      if (key0 + key < n_keys) {
        kk = *(const uint4 *)(kh + (long long)(key0 + key) * HD + col);
        vv = *(const uint4 *)(vh + (long long)(key0 + key) * HD + col);
      }
      *(uint4 *)(ks + key * KS + col) = kk;
      const bf16_t *vp = (const bf16_t *)&vv;
#pragma unroll
      for (int e = 0; e < 8; e++) vt[(col + e) * VS + key] = vp[e];
    }
    __syncthreads();

    // S = Q K^T for this warp's 16 rows and the tile's 64 keys: 8 column blocks of 8 keys.
    float s[FA_TILE / 8][4];
#pragma unroll
    for (int j = 0; j < FA_TILE / 8; j++) {
      s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
      for (int st = 0; st < HD / 16; st++) {
        const bf16_t *kr = ks + (j * 8 + g) * KS + st * 16 + 2 * t4;
        mma_bf16(s[j], qa[st], *(const unsigned *)kr, *(const unsigned *)(kr + 8));
      }
    }
    // Mask (causal, sliding window, keys past the end), scale (and cap) into log2 units, and the tile's row maxima.
    float tile_max[2] = {NEG_INF, NEG_INF};
#pragma unroll
    for (int j = 0; j < FA_TILE / 8; j++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int key = key0 + j * 8 + 2 * t4 + (e & 1), half = e >> 1;
        const int pos = q_offset + row0 + half * 8;
        const bool visible = key <= pos && key < n_keys && within_window(pos, key, sliding_window);
        const float x = visible ? flash_logit(s[j][e], scale, scale_log2, softcap) : NEG_INF;
        s[j][e] = x;
        tile_max[half] = fmaxf(tile_max[half], x);
      }
    }
    float alpha[2];
#pragma unroll
    for (int h = 0; h < 2; h++) {
      // The four threads of a quad hold the same row.
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 1));
      tile_max[h] = fmaxf(tile_max[h], __shfl_xor_sync(0xffffffffu, tile_max[h], 2));
      const float m_new = fmaxf(m[h], tile_max[h]);
      // A row with nothing visible yet keeps m = -inf: exponents are taken against 0 instead.
      const float base = m_new == NEG_INF ? 0.f : m_new;
      alpha[h] = exp2f(m[h] - base);
      m[h] = m_new;
      l[h] *= alpha[h];
#pragma unroll
      for (int j = 0; j < FA_TILE / 8; j++) {
        const float p0 = exp2f(s[j][2 * h] - base), p1 = exp2f(s[j][2 * h + 1] - base);
        s[j][2 * h] = p0;
        s[j][2 * h + 1] = p1;
        l[h] += p0 + p1;
      }
    }
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // O += P V: P's accumulator layout is the A fragment layout of the next MMA (16 keys a step).
#pragma unroll
    for (int kk = 0; kk < FA_TILE / 16; kk++) {
      const unsigned pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int n = 0; n < HD / 8; n++) {
        const bf16_t *vr = vt + (n * 8 + g) * VS + kk * 16 + 2 * t4;
        mma_bf16(o[n], pa, *(const unsigned *)vr, *(const unsigned *)(vr + 8));
      }
    }
  }
  // Each thread holds part of its rows' sums: add the quad's parts, normalize, write bf16 pairs.
#pragma unroll
  for (int h = 0; h < 2; h++) {
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
    l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
    const int row = row0 + h * 8;
    if (row >= n_queries) continue;
    const float inv = l[h] > 0.f ? 1.f / l[h] : 0.f;
    bf16_t *dst = out + ((long long)window * n_queries + row) * n_heads * HD + head * HD + 2 * t4;
#pragma unroll
    for (int n = 0; n < HD / 8; n++) *(unsigned *)(dst + n * 8) = pack_bf16x2(o[n][2 * h] * inv, o[n][2 * h + 1] * inv);
  }
}
extern "C" __global__ void __launch_bounds__(128) flash_attention_64(const bf16_t *q, const bf16_t *k, const bf16_t *v, bf16_t *out, int n_queries, int n_keys,
                                                                     int kv_stride, int q_offset, int n_heads, int n_kv_heads, float scale, float softcap, int sliding_window) {
  flash_attention<64, false>(q, k, v, out, n_queries, n_keys, kv_stride, q_offset, n_heads, n_kv_heads, scale, softcap, sliding_window);
}
extern "C" __global__ void __launch_bounds__(128) flash_attention_64_rule(const bf16_t *q, const bf16_t *k, const bf16_t *v, bf16_t *out, int n_queries, int n_keys,
                                                                          int kv_stride, int q_offset, int n_heads, int n_kv_heads, float scale, float softcap, int sliding_window) {
  flash_attention<64, true>(q, k, v, out, n_queries, n_keys, kv_stride, q_offset, n_heads, n_kv_heads, scale, softcap, sliding_window);
}
extern "C" __global__ void __launch_bounds__(128) flash_attention_128(const bf16_t *q, const bf16_t *k, const bf16_t *v, bf16_t *out, int n_queries, int n_keys,
                                                                      int kv_stride, int q_offset, int n_heads, int n_kv_heads, float scale, float softcap, int sliding_window) {
  flash_attention<128, false>(q, k, v, out, n_queries, n_keys, kv_stride, q_offset, n_heads, n_kv_heads, scale, softcap, sliding_window);
}
extern "C" __global__ void __launch_bounds__(128) flash_attention_128_rule(const bf16_t *q, const bf16_t *k, const bf16_t *v, bf16_t *out, int n_queries, int n_keys,
                                                                           int kv_stride, int q_offset, int n_heads, int n_kv_heads, float scale, float softcap, int sliding_window) {
  flash_attention<128, true>(q, k, v, out, n_queries, n_keys, kv_stride, q_offset, n_heads, n_kv_heads, scale, softcap, sliding_window);
}
#endif

// Per row of a and b (., dim): cos(a, b) and ||b - a|| / ||b||, in double (the host twin: rowStats.ts).
// Row r reads row rows[r] (all rows in order when rows is null). grid: n rows; block: 256.
extern "C" __global__ void row_stats(const float *a, const float *b, const int *rows, int dim, double *cosine, double *magnitude) {
  __shared__ double scratch[32];
  const long long src = rows ? rows[blockIdx.x] : blockIdx.x;
  const float *x = a + src * dim, *y = b + src * dim;
  double dot = 0, nx = 0, ny = 0, nd = 0;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    const double p = x[i], q = y[i], d = q - p;
    dot += p * q;
    nx += p * p;
    ny += q * q;
    nd += d * d;
  }
  dot = block_sum(dot, scratch);
  nx = block_sum(nx, scratch);
  ny = block_sum(ny, scratch);
  nd = block_sum(nd, scratch);
  if (threadIdx.x != 0) return;
  if (cosine) cosine[blockIdx.x] = (nx == 0 || ny == 0) ? (nx == ny ? 1.0 : 0.0) : dot / sqrt(nx * ny);
  if (magnitude) magnitude[blockIdx.x] = ny == 0 ? (nd == 0 ? 0.0 : 1.0) : sqrt(nd / ny);
}

// dst (n, dim) = rows rows[0..n) of src. grid: n; block: 256.
extern "C" __global__ void gather_rows(const float *src, const int *rows, float *dst, int dim) {
  const float *row = src + (long long)rows[blockIdx.x] * dim;
  float *out = dst + (long long)blockIdx.x * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = row[i];
}

// The head's logits (Gemma 2), n values in place: cap * tanh(x / cap), before log-sum-exp or download.
extern "C" __global__ void softcap_in_place(float *x, float cap, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) x[e] = soft_cap(x[e], cap);
}

// Per row of logits (n, vocab): log-sum-exp (in double) and the target's logit. grid: n; block: 256.
extern "C" __global__ void head_logsumexp(const float *logits, int vocab, const int *targets, float *lse, float *target_logit) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const float *row = logits + (long long)blockIdx.x * vocab;
  float m = NEG_INF;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) m = fmaxf(m, row[i]);
  m = block_max(m, fscratch);
  double s = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) s += exp((double)row[i] - m);
  s = block_sum(s, dscratch);
  if (threadIdx.x == 0) {
    lse[blockIdx.x] = (float)(m + log(s));
    target_logit[blockIdx.x] = row[targets[blockIdx.x]];
  }
}
` + RECURRENT_KERNEL_SOURCE;

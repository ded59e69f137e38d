// The CUDA C kernels of the recurrent layer kinds (Mamba, Mamba-2, RWKV-4, RWKV-6, RWKV-7) on the
// cuda backend: the per-token steps between their cuBLAS GEMMs (recurrent.ts). Appended to
// kernelSource.ts's source, so they use its gin_t, block_sum and conversions. Each window is an
// independent sequence from a zero state: a scan keeps one window's state in one thread's
// registers (Mamba, Mamba-2, RWKV-4: one thread per (window, channel)) or in one block (RWKV-6 and
// -7: a block per (window, head), a row or column of the head's matrix state per thread). States
// and scans are fp32 (the host twins, mambaLayer.ts ... rwkv7Layer.ts, use float64).
// Written without a GPU at hand (issue #15): compile-checked for sm_80 and sm_90
// (scripts/check-kernels.mjs; no spills), launches stub-checked (test/cudaStub.test.ts), results
// checked against the float64 reference layers with the kernels compiled for the CPU
// (test/cudaEmulated.test.ts); on a GPU, bench/gpu/recurrentChecks.ts checks them.

export const RECURRENT_KERNEL_NAMES = [
  "norm_rows_f32", "token_shift_mix", "columns_to_gin", "activation_to_gin", "relu_square_in_place", "add_sigmoid_gated",
  "mamba_conv_silu", "mamba_scan_16", "mamba_scan_64", "mamba2_scan_16", "mamba2_scan_64", "mamba2_scan_128", "mamba2_gated_norm",
  "rwkv4_wkv", "rwkv6_scan_16", "rwkv6_scan_32", "rwkv6_scan_64", "rwkv7_value_residual", "rwkv7_scan_64",
] as const;

/** The largest Mamba state (d_state) a scan kernel holds in registers, smallest first: mamba_scan_<n>. */
export const MAMBA_STATE_SIZES = [16, 64] as const;
/** The same for Mamba-2 (whose released models use 128): mamba2_scan_<n>. */
export const MAMBA2_STATE_SIZES = [16, 64, 128] as const;
/** RWKV-6 head sizes the scan kernel is compiled for (released models: 64). */
export const RWKV6_HEAD_SIZES = [16, 32, 64] as const;
/** RWKV-7 head sizes the scan kernel is compiled for (llama.cpp's RWKV-7 models all use 64). */
export const RWKV7_HEAD_SIZES = [64] as const;

export const RECURRENT_KERNEL_SOURCE = String.raw`
// ---- recurrent layer kinds (recurrentKernelSource.ts) ----

// As norm_rows, written in fp32: RWKV's token shift mixes normed rows before they become GEMM
// inputs, and rounding them to bf16 first would round twice. grid: rows; block: 256.
extern "C" __global__ void norm_rows_f32(const float *x, const float *weight, const float *bias, float *out, int dim, float eps, int layer_norm) {
  __shared__ double scratch[32];
  norm_row(x + (long long)blockIdx.x * dim, weight, bias, out + (long long)blockIdx.x * dim, dim, eps, layer_norm, scratch);
}

// RWKV's token shift: each row mixed with the row before it in its window (zeros before a window's
// first token: a fresh state), by n_mix mixes (mix: (n_mix, dim)) -> out (n_mix, rows, dim) as GEMM
// inputs. RWKV-4 (lerp_to_previous 0): x * m + prev * (1 - m); RWKV-6 and -7 (1): x + (prev - x) * m,
// each as its host twin writes it. extra (n_mix, rows, dim), when given, is added to the mixes
// token by token (RWKV-6's data-dependent lerp). rows = n elements / dim.
extern "C" __global__ void token_shift_mix(const float *x, const float *mix, const float *extra, int n_mix, gin_t *out, int dim, int seq_len, int lerp_to_previous, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const long long r = e / dim;
    const int i = (int)(e - r * dim);
    const float here = x[e];
    const float before = r % seq_len == 0 ? 0.f : x[e - dim];
    for (int m = 0; m < n_mix; m++) {
      const float w = mix[m * dim + i] + (extra ? extra[m * n + e] : 0.f);
      out[m * n + e] = to_gin_value(lerp_to_previous ? here + (before - here) * w : here * w + before * (1.f - w));
    }
  }
}

// Columns col0 .. col0 + cols - 1 of src (rows, ld) fp32 -> dst (rows, cols) as GEMM inputs
// (Mamba's low-rank dt, the first columns of x_proj's output). n = rows * cols.
extern "C" __global__ void columns_to_gin(const float *src, int ld, int col0, int cols, gin_t *dst, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const long long r = e / cols;
    dst[e] = to_gin_value(src[r * ld + col0 + (e - r * cols)]);
  }
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.f / (1.f + expf(-x)); }

// The middle of a low-rank projection (RWKV-6's and RWKV-7's LoRAs): dst = act(src) as GEMM inputs.
// kind: 0 identity, 1 tanh, 2 sigmoid.
extern "C" __global__ void activation_to_gin(const float *src, gin_t *dst, int kind, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const float v = src[e];
    dst[e] = to_gin_value(kind == 1 ? tanhf(v) : kind == 2 ? sigmoid_f(v) : v);
  }
}

// RWKV's channel mixing key: relu(x)^2, in place on the GEMM's output (as GEMM inputs).
extern "C" __global__ void relu_square_in_place(gin_t *x, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const float v = fmaxf(gin_to_float(x[e]), 0.f);
    x[e] = to_gin_value(v * v);
  }
}

// RWKV-4's and RWKV-6's channel mixing output: out = h + sigmoid(gate) * value, element by element.
extern "C" __global__ void add_sigmoid_gated(const float *h, const float *gate, const float *value, float *out, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) out[e] = h[e] + sigmoid_f(gate[e]) * value[e];
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.f + expf(-x)); }

// Mamba's (and Mamba-2's) depthwise causal conv over channels col0 .. col0 + channels - 1 of
// in_proj's output projected (rows, ld) (Mamba: the stream half; Mamba-2: x B C), taps before a
// window's first token reading zeros, then silu -> u (rows, channels) in fp32 (the scan's input)
// and, when u_gin is given, as GEMM inputs (Mamba's x_proj). conv: (channels, kernel); bias may be null.
extern "C" __global__ void mamba_conv_silu(const float *projected, int ld, int col0, const float *conv, const float *bias, float *u, gin_t *u_gin, int channels, int kernel, int seq_len, long long n) {
  const int past = kernel - 1;
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const long long r = e / channels;
    const int c = (int)(e - r * channels), t = (int)(r % seq_len);
    float acc = bias ? bias[c] : 0.f;
    for (int j = max(0, past - t); j < kernel; j++) acc += conv[c * kernel + j] * projected[(r - past + j) * ld + col0 + c];
    const float v = silu_f(acc);
    u[e] = v;
    if (u_gin) u_gin[e] = to_gin_value(v);
  }
}

// torch's softplus (beta 1, threshold 20).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : log1pf(expf(x)); }

// Mamba's selective scan, one thread per (window, channel c), the channel's state h (d_state <=
// MAX_STATE) in registers: per token, dt = softplus(dt_raw + dt_bias), h = exp(A dt) h + dt B u,
// y = (C . h + D u) * silu(gate), A = -exp(a_log). params: (rows, dt_rank + 2 d_state) holding
// dt (low rank), B, C; projected's second half the gate. y as GEMM inputs (out_proj's).
// grid: (ceil(d_inner / block), n_windows); block: 256 or fewer.
template <int MAX_STATE> __device__ __forceinline__ void mamba_scan(const float *u, const float *dt_raw, const float *params, const float *projected,
                                                                    const float *a_log, const float *dt_bias, const float *d_skip, gin_t *y,
                                                                    int d_inner, int d_state, int dt_rank, int seq_len) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, window = blockIdx.y;
  if (c >= d_inner) return;
  const int n_params = dt_rank + 2 * d_state;
  float a[MAX_STATE], h[MAX_STATE];
#pragma unroll
  for (int s = 0; s < MAX_STATE; s++) {
    a[s] = s < d_state ? -expf(a_log[c * d_state + s]) : 0.f;
    h[s] = 0.f;
  }
  const float bias = dt_bias[c], skip = d_skip[c];
  for (int t = 0; t < seq_len; t++) {
    const long long r = (long long)window * seq_len + t;
    const float d = softplus_f(dt_raw[r * d_inner + c] + bias);
    const float uc = u[r * d_inner + c];
    const float du = d * uc;
    const float *b = params + r * n_params + dt_rank, *cc = b + d_state;
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < MAX_STATE; s++) {
      if (s < d_state) {
        h[s] = expf(a[s] * d) * h[s] + du * b[s];
        acc += h[s] * cc[s];
      }
    }
    y[r * d_inner + c] = to_gin_value((acc + skip * uc) * silu_f(projected[r * 2 * d_inner + d_inner + c]));
  }
}
extern "C" __global__ void mamba_scan_16(const float *u, const float *dt_raw, const float *params, const float *projected, const float *a_log, const float *dt_bias,
                                         const float *d_skip, gin_t *y, int d_inner, int d_state, int dt_rank, int seq_len) {
  mamba_scan<16>(u, dt_raw, params, projected, a_log, dt_bias, d_skip, y, d_inner, d_state, dt_rank, seq_len);
}
extern "C" __global__ void mamba_scan_64(const float *u, const float *dt_raw, const float *params, const float *projected, const float *a_log, const float *dt_bias,
                                         const float *d_skip, gin_t *y, int d_inner, int d_state, int dt_rank, int seq_len) {
  mamba_scan<64>(u, dt_raw, params, projected, a_log, dt_bias, d_skip, y, d_inner, d_state, dt_rank, seq_len);
}

// Mamba-2's scan, one thread per (window, channel c of d_inner), the channel's state (d_state <=
// MAX_STATE) in registers: per token, the channel's head takes dt = clamp(softplus(dt_raw + dt_bias),
// dt_min, dt_max) (dt_raw: projected's last n_heads columns) and the scalar decay exp(-exp(a_log) dt);
// h = decay h + dt x B, y = C . h + D x, with B and C its group's (conv_out: x | B of every group |
// C of every group). y fp32 (rows, d_inner), before the gated norm. grid: (ceil(d_inner / block), n_windows).
template <int MAX_STATE> __device__ __forceinline__ void mamba2_scan(const float *conv_out, const float *projected, const float *a_log, const float *dt_bias, const float *d_skip,
                                                                     float *y, int d_inner, int d_state, int n_heads, int head_dim, int n_groups, int n_proj,
                                                                     float dt_min, float dt_max, int seq_len) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, window = blockIdx.y;
  if (c >= d_inner) return;
  const int head = c / head_dim, group = head / (n_heads / n_groups);
  const int conv_dim = d_inner + 2 * n_groups * d_state;
  const float a = -expf(a_log[head]), bias = dt_bias[head], skip = d_skip[head];
  float h[MAX_STATE];
#pragma unroll
  for (int s = 0; s < MAX_STATE; s++) h[s] = 0.f;
  for (int t = 0; t < seq_len; t++) {
    const long long r = (long long)window * seq_len + t;
    const float dt = fminf(fmaxf(softplus_f(projected[r * n_proj + d_inner + conv_dim + head] + bias), dt_min), dt_max);
    const float decay = expf(a * dt);
    const float *row = conv_out + r * conv_dim;
    const float xc = row[c];
    const float *b = row + d_inner + group * d_state, *cc = row + d_inner + n_groups * d_state + group * d_state;
    float acc = 0.f;
#pragma unroll
    for (int s = 0; s < MAX_STATE; s++) {
      if (s < d_state) {
        h[s] = decay * h[s] + dt * b[s] * xc;
        acc += h[s] * cc[s];
      }
    }
    y[r * d_inner + c] = acc + skip * xc;
  }
}
extern "C" __global__ void mamba2_scan_16(const float *conv_out, const float *projected, const float *a_log, const float *dt_bias, const float *d_skip, float *y, int d_inner,
                                           int d_state, int n_heads, int head_dim, int n_groups, int n_proj, float dt_min, float dt_max, int seq_len) {
  mamba2_scan<16>(conv_out, projected, a_log, dt_bias, d_skip, y, d_inner, d_state, n_heads, head_dim, n_groups, n_proj, dt_min, dt_max, seq_len);
}
extern "C" __global__ void mamba2_scan_64(const float *conv_out, const float *projected, const float *a_log, const float *dt_bias, const float *d_skip, float *y, int d_inner,
                                           int d_state, int n_heads, int head_dim, int n_groups, int n_proj, float dt_min, float dt_max, int seq_len) {
  mamba2_scan<64>(conv_out, projected, a_log, dt_bias, d_skip, y, d_inner, d_state, n_heads, head_dim, n_groups, n_proj, dt_min, dt_max, seq_len);
}
extern "C" __global__ void mamba2_scan_128(const float *conv_out, const float *projected, const float *a_log, const float *dt_bias, const float *d_skip, float *y, int d_inner,
                                           int d_state, int n_heads, int head_dim, int n_groups, int n_proj, float dt_min, float dt_max, int seq_len) {
  mamba2_scan<128>(conv_out, projected, a_log, dt_bias, d_skip, y, d_inner, d_state, n_heads, head_dim, n_groups, n_proj, dt_min, dt_max, seq_len);
}

// Mamba-2's gated RMSNorm (norm_before_gate false): g = y * silu(z) (z: projected's first d_inner
// columns), normalized over each group of group_size channels (the sum of squares in double),
// times weight -> out (rows, d_inner) as GEMM inputs (out_proj's). grid: (rows, d_inner / group_size); block: 256.
extern "C" __global__ void mamba2_gated_norm(const float *y, const float *projected, int n_proj, const float *weight, gin_t *out, int d_inner, int group_size, float eps) {
  __shared__ double scratch[32];
  const long long r = blockIdx.x;
  const int c0 = blockIdx.y * group_size;
  double ss = 0;
  for (int i = threadIdx.x; i < group_size; i += blockDim.x) {
    const float g = y[r * d_inner + c0 + i] * silu_f(projected[r * n_proj + c0 + i]);
    ss += (double)g * g;
  }
  const float inv = (float)(1.0 / sqrt(block_sum(ss, scratch) / group_size + (double)eps));
  for (int i = threadIdx.x; i < group_size; i += blockDim.x) {
    const int c = c0 + i;
    out[r * d_inner + c] = to_gin_value(y[r * d_inner + c] * silu_f(projected[r * n_proj + c]) * inv * weight[c]);
  }
}

// RWKV-4's WKV recurrence, one thread per (window, channel c of att): a softmax-weighted average
// of past values with exponential decay, the sums carried scaled by exp(-max) as transformers'
// CPU path (and the host twin) carries them, so no exponent overflows. k, v, r: (rows, att) fp32;
// out = sigmoid(r) * wkv as GEMM inputs (the output projection's). grid: (ceil(att / block), n_windows).
extern "C" __global__ void rwkv4_wkv(const float *k, const float *v, const float *r, const float *time_decay, const float *time_first, gin_t *out, int att, int seq_len) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x, window = blockIdx.y;
  if (c >= att) return;
  const float decay = -expf(time_decay[c]), bonus = time_first[c];
  float num = 0.f, den = 0.f, m = -1e38f;
  for (int t = 0; t < seq_len; t++) {
    const long long i = ((long long)window * seq_len + t) * att + c;
    const float key = k[i], value = v[i];
    const float out_max = fmaxf(m, key + bonus);
    const float a = expf(m - out_max), b = expf(key + bonus - out_max);
    out[i] = to_gin_value(sigmoid_f(r[i]) * ((a * num + b * value) / (a * den + b)));
    const float state_max = fmaxf(m + decay, key);
    const float e1 = expf(m + decay - state_max), e2 = expf(key - state_max);
    num = e1 * num + e2 * value;
    den = e1 * den + e2;
    m = state_max;
  }
}

// RWKV-6's time mixing from the projections to the output projection's input, one block per (head,
// window) of max(HS, 32) threads, thread j < HS owning column j of the head's (HS, HS) state S[key
// i][value j] in registers. Per token: each thread i shares key i, receptance i and the decay w_i =
// exp(-exp(decay_in + time_decay)); thread j then takes o_j = sum_i r_i (u_i k_i v_j + S_ij) and
// S_ij = S_ij w_i + k_i v_j; the group norm of o over the head (eps 64e-5), ln_x, the silu gate
// (llama.cpp's rwkv6, as rwkv6Layer.ts). u: time_first (dim). Inputs (rows, dim) fp32; y as GEMM
// inputs. grid: (n_heads, n_windows).
template <int HS> __device__ __forceinline__ void rwkv6_scan(const float *r_in, const float *k_in, const float *v, const float *decay_in, const float *gate,
                                                             const float *time_first, const float *time_decay, const float *ln_x, const float *ln_x_bias,
                                                             gin_t *y, int dim, int seq_len) {
  __shared__ float key[HS], rs[HS], decay[HS], u[HS];
  __shared__ float scratch[32];
  const int head = blockIdx.x, window = blockIdx.y, j = threadIdx.x, c = head * HS + j;
  const bool active = j < HS;
  float S[HS];
#pragma unroll
  for (int i = 0; i < HS; i++) S[i] = 0.f;
  if (active) u[j] = time_first[c];
  const float td = active ? time_decay[c] : 0.f, lnc = active ? ln_x[c] : 0.f, lnbc = active ? ln_x_bias[c] : 0.f;
  for (int t = 0; t < seq_len; t++) {
    const long long e = ((long long)window * seq_len + t) * dim + c;
    if (active) {
      key[j] = k_in[e];
      rs[j] = r_in[e];
      decay[j] = expf(-expf(decay_in[e] + td));
    }
    __syncthreads();
    float o = 0.f;
    if (active) {
      const float vj = v[e];
#pragma unroll
      for (int i = 0; i < HS; i++) {
        const float kv = key[i] * vj;
        o += rs[i] * (u[i] * kv + S[i]);
        S[i] = S[i] * decay[i] + kv;
      }
    }
    // Group norm over the head (block_sum's barriers also keep the shared values until every column has read them).
    const float mean = block_sum(o, scratch) / HS;
    const float variance = block_sum(active ? (o - mean) * (o - mean) : 0.f, scratch) / HS;
    if (active) y[e] = to_gin_value(((o - mean) * (1.f / sqrtf(variance + 64e-5f)) * lnc + lnbc) * silu_f(gate[e]));
  }
}
extern "C" __global__ void __launch_bounds__(32) rwkv6_scan_16(const float *r_in, const float *k_in, const float *v, const float *decay_in, const float *gate, const float *time_first,
                                                               const float *time_decay, const float *ln_x, const float *ln_x_bias, gin_t *y, int dim, int seq_len) {
  rwkv6_scan<16>(r_in, k_in, v, decay_in, gate, time_first, time_decay, ln_x, ln_x_bias, y, dim, seq_len);
}
extern "C" __global__ void __launch_bounds__(32) rwkv6_scan_32(const float *r_in, const float *k_in, const float *v, const float *decay_in, const float *gate, const float *time_first,
                                                               const float *time_decay, const float *ln_x, const float *ln_x_bias, gin_t *y, int dim, int seq_len) {
  rwkv6_scan<32>(r_in, k_in, v, decay_in, gate, time_first, time_decay, ln_x, ln_x_bias, y, dim, seq_len);
}
extern "C" __global__ void __launch_bounds__(64) rwkv6_scan_64(const float *r_in, const float *k_in, const float *v, const float *decay_in, const float *gate, const float *time_first,
                                                               const float *time_decay, const float *ln_x, const float *ln_x_bias, gin_t *y, int dim, int seq_len) {
  rwkv6_scan<64>(r_in, k_in, v, decay_in, gate, time_first, time_decay, ln_x, ln_x_bias, y, dim, seq_len);
}

// RWKV-7's value residual in a block after the first: v += (v_first - v) * sigmoid(mix + v0). (rows, dim).
extern "C" __global__ void rwkv7_value_residual(float *v, const float *v_first, const float *mix, const float *v0, int dim, long long n) {
  for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < n; e += (long long)gridDim.x * blockDim.x) {
    const float x = v[e];
    v[e] = x + (v_first[e] - x) * sigmoid_f(mix[e] + v0[e % dim]);
  }
}

// RWKV-7's time mixing from the projections to the output projection's input, one block per
// (head, window), thread i owning row i of the head's (HS, HS) state S[value i][key j] in
// registers. Per token: each thread j makes key j's decay w = exp(-0.606531 sigmoid(decay_in +
// w0)), learning rate a = sigmoid(a_in + a0), removal key kk = k k_k / max(|k k_k|, 1e-12) (the
// norm over the head), key k (1 + k_a (a - 1)) and kk a, shared through shared memory; then
// S = S diag(w) + v k^T + (S (-kk)) (kk a)^T and o = S r; the group norm of o over the head (eps
// 64e-5), the bonus (r . (k r_k)) v, the gate (llama.cpp's constants, as rwkv7Layer.ts). Inputs
// (rows, dim) fp32; y as GEMM inputs. grid: (n_heads, n_windows); block: HS.
template <int HS> __device__ __forceinline__ void rwkv7_scan(const float *r_in, const float *decay_in, const float *k_in, const float *v, const float *a_in, const float *gate,
                                                             const float *w0, const float *a0, const float *k_k, const float *k_a, const float *r_k,
                                                             const float *ln_x, const float *ln_x_bias, gin_t *y, int dim, int seq_len) {
  __shared__ float decay[HS], key[HS], kk[HS], kka[HS], rs[HS];
  __shared__ float scratch[32];
  const int head = blockIdx.x, window = blockIdx.y, i = threadIdx.x, c = head * HS + i;
  float S[HS];
#pragma unroll
  for (int j = 0; j < HS; j++) S[j] = 0.f;
  const float w0c = w0[c], a0c = a0[c], kkc = k_k[c], kac = k_a[c], rkc = r_k[c], lnc = ln_x[c], lnbc = ln_x_bias[c];
  for (int t = 0; t < seq_len; t++) {
    const long long e = ((long long)window * seq_len + t) * dim + c;
    // This thread's key channel (j = i) of the token: written to shared memory for every row.
    const float kin = k_in[e], r = r_in[e];
    const float kkv = kin * kkc;
    const float norm = fmaxf(sqrtf(block_sum(kkv * kkv, scratch)), 1e-12f);
    const float a = sigmoid_f(a_in[e] + a0c);
    const float kmod = kin + kin * kac * (a - 1.f);
    decay[i] = expf(-0.606531f * sigmoid_f(decay_in[e] + w0c));
    kk[i] = kkv / norm;
    kka[i] = kkv / norm * a;
    key[i] = kmod;
    rs[i] = r;
    __syncthreads();
    // Row i of the state: sa = S (-kk), then the update and o_i = S r.
    float sa = 0.f;
#pragma unroll
    for (int j = 0; j < HS; j++) sa -= kk[j] * S[j];
    const float vi = v[e];
    float o = 0.f;
#pragma unroll
    for (int j = 0; j < HS; j++) {
      S[j] = S[j] * decay[j] + vi * key[j] + sa * kka[j];
      o += S[j] * rs[j];
    }
    // Group norm over the head, the bonus, the gate (block_sum's barriers also keep the shared
    // values until every row has read them).
    const float mean = block_sum(o, scratch) / HS;
    const float variance = block_sum((o - mean) * (o - mean), scratch) / HS;
    const float bonus = block_sum(r * kmod * rkc, scratch);
    const float normed = (o - mean) * (1.f / sqrtf(variance + 64e-5f)) * lnc + lnbc;
    y[e] = to_gin_value((normed + vi * bonus) * gate[e]);
  }
}
extern "C" __global__ void __launch_bounds__(64) rwkv7_scan_64(const float *r_in, const float *decay_in, const float *k_in, const float *v, const float *a_in, const float *gate,
                                                               const float *w0, const float *a0, const float *k_k, const float *k_a, const float *r_k,
                                                               const float *ln_x, const float *ln_x_bias, gin_t *y, int dim, int seq_len) {
  rwkv7_scan<64>(r_in, decay_in, k_in, v, a_in, gate, w0, a0, k_k, k_a, r_k, ln_x, ln_x_bias, y, dim, seq_len);
}
`;

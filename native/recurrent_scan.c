// The sequential parts of the batched recurrent layers (src/backend/rwkv4Layer.ts,
// rwkv7Layer.ts, mambaLayer.ts) in C: RWKV-4's WKV recurrence, RWKV-7's delta-rule scan with its
// per-token glue (decay, learning rate, removal key, group norm, bonus, gate), Mamba's causal
// conv1d and selective scan; and the RWKV layers' glue (LayerNorm with the token shift, residual
// adds, squared ReLU, RWKV-7's value residual). Their projections stay on the backend's GEMMs
// (onnxruntime's, or the CPU bf16 engine's).
//
// Why: the scans are sequential over tokens, so they cannot be one big GEMM, and in TypeScript
// they took most of a layer's time (Mamba-1.4B: 0.8 s of 1.0 s per layer of 512 tokens; RWKV-7
// 1.5B: the scan alone ~0.3 s). Here they run with the same float64 arithmetic as the TypeScript
// twins (float32 in and out, float64 state and sums), vectorised and split over threads by
// channel, row or (window, head), which are independent, so the values do not depend on the
// thread count.
//
// Every function checks the lengths of its arrays against its dimensions and throws a
// RangeError naming the array, rather than reading or writing out of bounds.
//
// JavaScript API (src/backend/recurrentNative.ts wraps it; N = nWindows * seqLen rows, each
// window from a zero state):
//   rwkv4Wkv(wkv, k, v, r, timeDecay, timeFirst, nWindows, seqLen, threads)
//       k, v, r, wkv: (N, att) float32; timeDecay, timeFirst: (att). wkv = sigmoid(r) * WKV.
//   rwkv7Scan(y, r, decayIn, k, v, aIn, gate, w0, a0, kkScale, ka, rk, lnX, lnXBias, nWindows, seqLen, headSize, threads)
//       y, r, decayIn, k, aIn, gate: (N, dim) float32; v: (N, dim) float64; the seven vectors (dim).
//   rwkv7ValueResidual(v, vRaw, vFirst, mix, v0, threads)
//       v, vFirst: (N, dim) float64; vRaw, mix: (N, dim); v0: (dim). v = vRaw + (vFirst - vRaw) sigmoid(mix + v0).
//   rmsNorm(out, x, weight, eps, threads)       out (rows, dim) = x / sqrt(mean(x^2) + eps) * weight, float64 inside
//   mambaConvSilu(u, projected, conv, bias | null, nWindows, seqLen, convKernel, threads)
//       projected: (N, 2 dInner), its first half per row the stream; conv: (dInner, convKernel); u: (N, dInner).
//   mambaScan(y, u, projected, params, dtRaw, aLog, dtBias, d, nWindows, seqLen, dState, dtRank, threads)
//       u, dtRaw, y: (N, dInner); projected: (N, 2 dInner), its second half the gate;
//       params: (N, dtRank + 2 dState); aLog: (dInner, dState); dtBias, d: (dInner).
//   layerNormShiftMix(outs, x, add | null, weight, bias, mixes, nWindows, seqLen, eps, lerp, threads)
//       outs[m] (N, dim) = the token-shift mix m of LayerNorm(x + add) (RWKV-7's lerp form with lerp).
//   residualAdd(next, x, add, gate | null, update, threads)   next = x + add + sigmoid(gate) update (or + update)
//   reluSquare(h, threads)                                    h = relu(h)^2 in place
#define _GNU_SOURCE
#include <math.h>
#include <node_api.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 64

// The inner loops over a head's or a state's lanes: AVX-512 and AVX2 versions beside the
// baseline one, chosen at load time by the CPU (gcc's function multiversioning, gcc >= 11;
// scripts/build-native.mjs builds with SHORTGPT_NO_CLONES where the compiler refuses them).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SHORTGPT_NO_CLONES)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

// ---- threads: the caller is worker 0, the others are started per call (a call is milliseconds
// to a second, a thread start microseconds).

typedef void (*worker_fn)(void *ctx, int tid, int nthreads);
typedef struct { worker_fn fn; void *ctx; int tid; int nthreads; } worker_arg;

static void *worker_main(void *p) {
  worker_arg *a = p;
  a->fn(a->ctx, a->tid, a->nthreads);
  return NULL;
}

/** Runs fn on nthreads workers; the work each does depends on (tid, nthreads) only, so a thread that fails to start is run here. */
static void parallel(int nthreads, worker_fn fn, void *ctx) {
  if (nthreads < 1) nthreads = 1;
  if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
  pthread_t threads[MAX_THREADS];
  worker_arg args[MAX_THREADS];
  int started[MAX_THREADS] = {0};
  for (int t = 1; t < nthreads; t++) {
    args[t] = (worker_arg){fn, ctx, t, nthreads};
    started[t] = pthread_create(&threads[t], NULL, worker_main, &args[t]) == 0;
  }
  fn(ctx, 0, nthreads);
  for (int t = 1; t < nthreads; t++) {
    if (started[t]) pthread_join(threads[t], NULL);
    else fn(ctx, t, nthreads);
  }
}

/** Items [begin, end) of n for worker tid of nthreads: contiguous blocks. */
static void share(size_t n, int tid, int nthreads, size_t *begin, size_t *end) {
  *begin = n * (size_t)tid / (size_t)nthreads;
  *end = n * ((size_t)tid + 1) / (size_t)nthreads;
}

static double sigmoid(double v) { return 1.0 / (1.0 + exp(-v)); }
static double silu(double v) { return v / (1.0 + exp(-v)); }

/**
 * exp(x) for x <= 0 without a call, so that a loop of them vectorises (libm's exp does not):
 * x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^13 (relative error below
 * 3e-16), times 2^n built in the exponent bits. Below -708 it returns 0 where exp gives a
 * subnormal (under 1e-307). Mamba's decays exp(A dt) (A < 0, dt > 0) are never positive, and
 * its softplus and silu take exp(-|v|).
 */
static inline double exp_nonpositive(double x) {
  const double log2e = 1.4426950408889634, ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
  const double round_shift = 6755399441055744.0; // 1.5 * 2^52: adding it rounds to an integer held in the low bits
  double clamped = x < -708.0 ? -708.0 : x;
  double shifted = clamped * log2e + round_shift;
  double n = shifted - round_shift;
  double r = (clamped - n * ln2_hi) - n * ln2_lo;
  double p = 1.0 / 6227020800.0; // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t bits;
  memcpy(&bits, &shifted, sizeof bits);
  int64_t scale_bits = (bits - 0x4338000000000000LL + 1023) << 52; // the low bits of `shifted` hold n
  double scale;
  memcpy(&scale, &scale_bits, sizeof scale);
  double result = p * scale;
  return x < -708.0 ? 0.0 : result;
}

// ---- RWKV-4: the WKV recurrence, a softmax-weighted average of past values with exponential
// decay, its sums carried scaled by exp(-max) to stay finite. Rows outer, channels inner, so each
// row's channels are read contiguously and the channel loop vectorises (every exponent is a
// difference from a maximum, never positive); each worker keeps its channels' sums.

typedef struct {
  float *wkv;
  const float *k, *v, *r, *time_decay, *time_first;
  size_t n_windows, seq_len, att;
  int failed;
} rwkv4_ctx;

/** One token of `width` channels: wkv written, the sums advanced. */
VECTOR_CLONES static void rwkv4_row(float *restrict wkv, double *restrict num, double *restrict den, double *restrict max, const float *restrict k,
                                    const float *restrict v, const float *restrict r, const double *restrict decay, const double *restrict bonus, size_t width) {
#pragma omp simd
  for (size_t j = 0; j < width; j++) {
    double key = k[j], value = v[j], first = key + bonus[j];
    double out_max = max[j] > first ? max[j] : first;
    double a = exp_nonpositive(max[j] - out_max), e = exp_nonpositive(first - out_max);
    // sigmoid(r) from exp(-|r|), on either side of zero.
    double rj = r[j], er = exp_nonpositive(-fabs(rj));
    double gate = (rj >= 0 ? 1.0 : er) / (1.0 + er);
    wkv[j] = (float)(gate * ((a * num[j] + e * value) / (a * den[j] + e)));
    double decayed = max[j] + decay[j];
    double state_max = decayed > key ? decayed : key;
    double e1 = exp_nonpositive(decayed - state_max), e2 = exp_nonpositive(key - state_max);
    num[j] = e1 * num[j] + e2 * value;
    den[j] = e1 * den[j] + e2;
    max[j] = state_max;
  }
}

static void rwkv4_worker(void *p, int tid, int nthreads) {
  rwkv4_ctx *c = p;
  size_t c0, c1;
  share(c->att, tid, nthreads, &c0, &c1);
  size_t width = c1 - c0;
  if (width == 0) return;
  double *mem = malloc(5 * width * sizeof(double));
  if (!mem) {
    c->failed = 1;
    return;
  }
  double *num = mem, *den = mem + width, *max = mem + 2 * width, *decay = mem + 3 * width, *bonus = mem + 4 * width;
  for (size_t j = 0; j < width; j++) {
    decay[j] = -exp((double)c->time_decay[c0 + j]);
    bonus[j] = c->time_first[c0 + j];
  }
  for (size_t b = 0; b < c->n_windows; b++) {
    for (size_t j = 0; j < width; j++) num[j] = 0, den[j] = 0, max[j] = -1e38; // transformers' start
    for (size_t row = b * c->seq_len; row < (b + 1) * c->seq_len; row++) {
      rwkv4_row(c->wkv + row * c->att + c0, num, den, max, c->k + row * c->att + c0, c->v + row * c->att + c0, c->r + row * c->att + c0, decay, bonus, width);
    }
  }
  free(mem);
}

// ---- RWKV-7: per (window, head) the generalized delta rule on a headSize x headSize state,
// S = S diag(w) + v k^T + (S (-kk)) (kk a)^T, y = S r, then the head's group norm, the current
// token's bonus and the gate (llama.cpp's ggml_rwkv_wkv7 and the glue around it in
// llm_build_rwkv7). The state and the sums are float64 as in the TypeScript twin: float32 state
// would be cheaper still, but the scan is no longer the cost at float64 (vectorised, a few
// percent of a layer), and the twins then agree to float32 rounding of the outputs.

#define DECAY_SCALE (-0.606531) // llama.cpp's constant as it writes it (about -exp(-0.5))
#define L2_NORM_EPS 1e-12
#define GROUP_NORM_EPS 64e-5

typedef struct {
  float *y;
  const float *r, *decay_in, *k, *a_in, *gate;
  const double *v;
  const float *w0, *a0, *kk_scale, *ka, *rk, *ln_x, *ln_x_bias;
  size_t n_windows, seq_len, dim, head_size;
  int failed;
} rwkv7_ctx;

/** One token of one head: S (hs, hs) advanced in place, out (hs) = S r. */
VECTOR_CLONES static void rwkv7_state_step(double *restrict S, double *restrict out, const double *restrict decay, const double *restrict key,
                                           const double *restrict kk, const double *restrict kka, const double *restrict r, const double *restrict v, size_t hs) {
  for (size_t i = 0; i < hs; i++) {
    double *restrict row = S + i * hs;
    double sa = 0;
#pragma omp simd reduction(+ : sa)
    for (size_t j = 0; j < hs; j++) sa += kk[j] * row[j];
    sa = -sa;
    double vi = v[i], acc = 0;
#pragma omp simd reduction(+ : acc)
    for (size_t j = 0; j < hs; j++) {
      double s = row[j] * decay[j] + vi * key[j] + sa * kka[j];
      row[j] = s;
      acc += s * r[j];
    }
    out[i] = acc;
  }
}

static void rwkv7_worker(void *p, int tid, int nthreads) {
  rwkv7_ctx *c = p;
  size_t hs = c->head_size, dim = c->dim, n_heads = dim / hs;
  size_t t0, t1;
  share(c->n_windows * n_heads, tid, nthreads, &t0, &t1);
  if (t1 == t0) return;
  // The state, then one head's values of one token, indexed 0..hs-1.
  double *mem = malloc((hs * hs + 7 * hs) * sizeof(double));
  if (!mem) {
    c->failed = 1;
    return;
  }
  double *S = mem, *decay = S + hs * hs, *key = decay + hs, *kk = key + hs, *kka = kk + hs, *r = kka + hs, *out = r + hs, *v = out + hs;
  for (size_t task = t0; task < t1; task++) {
    size_t b = task / n_heads, c0 = (task % n_heads) * hs;
    memset(S, 0, hs * hs * sizeof(double));
    for (size_t row = b * c->seq_len; row < (b + 1) * c->seq_len; row++) {
      size_t off = row * dim + c0;
      double sum = 0;
      for (size_t j = 0; j < hs; j++) {
        decay[j] = exp(DECAY_SCALE * sigmoid((double)c->decay_in[off + j] + c->w0[c0 + j]));
        r[j] = c->r[off + j];
        v[j] = c->v[off + j];
        kk[j] = (double)c->k[off + j] * c->kk_scale[c0 + j];
        sum += kk[j] * kk[j];
      }
      double scale = 1.0 / fmax(sqrt(sum), L2_NORM_EPS);
      for (size_t j = 0; j < hs; j++) {
        double a = sigmoid((double)c->a_in[off + j] + c->a0[c0 + j]);
        double k = c->k[off + j];
        kk[j] *= scale;
        key[j] = k + k * c->ka[c0 + j] * (a - 1);
        kka[j] = kk[j] * a;
      }
      rwkv7_state_step(S, out, decay, key, kk, kka, r, v, hs);
      double mean = 0;
      for (size_t j = 0; j < hs; j++) mean += out[j];
      mean /= (double)hs;
      double variance = 0;
      for (size_t j = 0; j < hs; j++) variance += (out[j] - mean) * (out[j] - mean);
      double norm = 1.0 / sqrt(variance / (double)hs + GROUP_NORM_EPS);
      double bonus = 0;
      for (size_t j = 0; j < hs; j++) bonus += r[j] * key[j] * c->rk[c0 + j];
      for (size_t j = 0; j < hs; j++) {
        double normed = (out[j] - mean) * norm * c->ln_x[c0 + j] + c->ln_x_bias[c0 + j];
        c->y[off + j] = (float)((normed + v[j] * bonus) * c->gate[off + j]);
      }
    }
  }
  free(mem);
}

/** RWKV-7's value residual of a block after the first: v = vRaw + (vFirst - vRaw) sigmoid(mix + v0), rows split over workers. */
typedef struct {
  double *v;
  const float *v_raw, *mix, *v0;
  const double *v_first;
  size_t rows, dim;
} value_residual_ctx;

static void value_residual_worker(void *p, int tid, int nthreads) {
  value_residual_ctx *c = p;
  size_t r0, r1;
  share(c->rows, tid, nthreads, &r0, &r1);
  for (size_t row = r0; row < r1; row++)
    for (size_t j = 0, i = row * c->dim; j < c->dim; j++, i++)
      c->v[i] = (double)c->v_raw[i] + (c->v_first[i] - c->v_raw[i]) * sigmoid((double)c->mix[i] + c->v0[j]);
}

/** Mamba's RMSNorm: rows of x (dim) -> out in float32, the sum of squares in order in float64 (as the TypeScript rmsNorm). */
typedef struct {
  float *out;
  const float *x, *weight;
  size_t rows, dim;
  double eps;
} rms_norm_ctx;

static void rms_norm_worker(void *p, int tid, int nthreads) {
  rms_norm_ctx *c = p;
  size_t r0, r1;
  share(c->rows, tid, nthreads, &r0, &r1);
  for (size_t row = r0; row < r1; row++) {
    const float *x = c->x + row * c->dim;
    double ss = 0;
    for (size_t i = 0; i < c->dim; i++) ss += (double)x[i] * x[i];
    double scale = 1.0 / sqrt(ss / (double)c->dim + c->eps);
    for (size_t i = 0; i < c->dim; i++) c->out[row * c->dim + i] = (float)(x[i] * scale * c->weight[i]);
  }
}

// ---- Mamba: the depthwise causal conv over each window (zeros before its first token), then
// silu; and the selective scan h = exp(A dt) h + dt B u, y = (C h + D u) silu(gate), split by
// channel (each channel's state is its own).

typedef struct {
  float *u;
  const float *projected, *conv, *bias;
  size_t n_windows, seq_len, d_inner, kernel;
} conv_ctx;

static void conv_worker(void *p, int tid, int nthreads) {
  conv_ctx *c = p;
  size_t n = c->n_windows * c->seq_len, past = c->kernel - 1, stride = 2 * c->d_inner;
  size_t r0, r1;
  share(n, tid, nthreads, &r0, &r1);
  for (size_t row = r0; row < r1; row++) {
    size_t t = row % c->seq_len;
    // Taps before the window's first token read zeros (a fresh state): start at the first inside.
    size_t first_tap = t >= past ? 0 : past - t;
    for (size_t ch = 0; ch < c->d_inner; ch++) {
      double acc = c->bias ? c->bias[ch] : 0;
      for (size_t j = first_tap; j < c->kernel; j++) acc += (double)c->conv[ch * c->kernel + j] * c->projected[(row - past + j) * stride + ch];
      c->u[row * c->d_inner + ch] = (float)silu(acc);
    }
  }
}

typedef struct {
  float *y;
  const float *u, *projected, *params, *dt_raw, *a_log, *dt_bias, *d;
  size_t n_windows, seq_len, d_inner, d_state, dt_rank;
  int failed;
} mamba_ctx;

/**
 * log1p(t) for 0 <= t <= 1 without a call: 2 atanh(s), s = t / (2 + t) <= 1/3, by its series to
 * s^37 (the next term is below 1e-17 of the sum), so that a loop of them vectorises.
 */
static inline double log1p_unit(double t) {
  double s = t / (2.0 + t), s2 = s * s;
  // Horner's rule by hand: a loop here would keep the callers' loops from vectorising.
  double p = 1.0 / 37;
  p = p * s2 + 1.0 / 35; p = p * s2 + 1.0 / 33; p = p * s2 + 1.0 / 31; p = p * s2 + 1.0 / 29;
  p = p * s2 + 1.0 / 27; p = p * s2 + 1.0 / 25; p = p * s2 + 1.0 / 23; p = p * s2 + 1.0 / 21;
  p = p * s2 + 1.0 / 19; p = p * s2 + 1.0 / 17; p = p * s2 + 1.0 / 15; p = p * s2 + 1.0 / 13;
  p = p * s2 + 1.0 / 11; p = p * s2 + 1.0 / 9; p = p * s2 + 1.0 / 7; p = p * s2 + 1.0 / 5;
  p = p * s2 + 1.0 / 3; p = p * s2 + 1.0;
  return 2.0 * s * p;
}

/**
 * Per channel of one token, without calls (so the loop vectorises): dt = softplus(dtRaw + dtBias)
 * as torch's (linear above 20), written max(v, 0) + log1p(exp(-|v|)); and silu(gate) = gate
 * sigmoid(gate), the sigmoid from exp(-|gate|) on either side of zero.
 */
VECTOR_CLONES static void mamba_token_gates(double *restrict dt, double *restrict gate_silu, const float *restrict dt_raw, const float *restrict dt_bias,
                                            const float *restrict gate, size_t width) {
#pragma omp simd
  for (size_t ch = 0; ch < width; ch++) {
    // Both sides computed, then chosen: a division under a condition keeps the loop scalar.
    double v = (double)dt_raw[ch] + dt_bias[ch];
    double soft = (v > 0.0 ? v : 0.0) + log1p_unit(exp_nonpositive(-fabs(v)));
    dt[ch] = v > 20.0 ? v : soft;
    double g = gate[ch], eg = exp_nonpositive(-fabs(g));
    gate_silu[ch] = g * (g >= 0 ? 1.0 : eg) / (1.0 + eg);
  }
}

/** One token of channels [0, width) from c0: h (width, dState) advanced, y written; dt and silu(gate) from mamba_token_gates. */
VECTOR_CLONES static void mamba_token(float *restrict y, double *restrict h, const double *restrict A, const float *restrict u, const double *restrict dt_ch,
                                      const float *restrict B, const float *restrict C, const double *restrict gate_silu, const float *restrict D, size_t width, size_t ds) {
  for (size_t ch = 0; ch < width; ch++) {
    double dt = dt_ch[ch];
    double uc = u[ch], du = dt * uc, acc = 0;
    double *restrict hc = h + ch * ds;
    const double *restrict Ac = A + ch * ds;
#pragma omp simd reduction(+ : acc)
    for (size_t s = 0; s < ds; s++) {
      double hv = exp_nonpositive(Ac[s] * dt) * hc[s] + du * B[s];
      hc[s] = hv;
      acc += hv * C[s];
    }
    y[ch] = (float)((acc + D[ch] * uc) * gate_silu[ch]);
  }
}

static void mamba_worker(void *p, int tid, int nthreads) {
  mamba_ctx *c = p;
  size_t c0, c1, ds = c->d_state, di = c->d_inner, n_params = c->dt_rank + 2 * ds;
  share(di, tid, nthreads, &c0, &c1);
  size_t width = c1 - c0;
  if (width == 0) return;
  double *mem = malloc((2 * width * ds + 2 * width) * sizeof(double));
  if (!mem) {
    c->failed = 1;
    return;
  }
  double *h = mem, *A = mem + width * ds, *dt = A + width * ds, *gate_silu = dt + width;
  for (size_t i = 0; i < width * ds; i++) A[i] = -exp((double)c->a_log[c0 * ds + i]);
  for (size_t b = 0; b < c->n_windows; b++) {
    memset(h, 0, width * ds * sizeof(double));
    for (size_t row = b * c->seq_len; row < (b + 1) * c->seq_len; row++) {
      const float *B = c->params + row * n_params + c->dt_rank;
      mamba_token_gates(dt, gate_silu, c->dt_raw + row * di + c0, c->dt_bias + c0, c->projected + row * 2 * di + di + c0, width);
      mamba_token(c->y + row * di + c0, h, A, c->u + row * di + c0, dt, B, B + ds, gate_silu, c->d + c0, width, ds);
    }
  }
  free(mem);
}

// ---- The glue between the projections, for the RWKV layers: LayerNorm with the token shift's
// mixes (the previous token's normed row, zeros before a window's first), the residual adds, the
// squared ReLU. Why in C: in TypeScript they went through float64 arrays of the whole rows, fresh
// memory each layer, and cost as much as the scans (RWKV-4-430M: ~70 ms of a 0.3 s layer).

typedef struct {
  float **outs;
  const float **mixes;
  size_t n_mixes;
  const float *x, *add, *weight, *bias;
  size_t n_windows, seq_len, dim;
  double eps;
  int lerp;
  int failed;
} shift_mix_ctx;

/** row (dim) = LayerNorm(x + add) in float64, the sums in order (as the TypeScript layerNorm). */
static void layer_norm_row(double *restrict row, const float *restrict x, const float *restrict add, const float *restrict weight, const float *restrict bias, size_t dim, double eps) {
  for (size_t i = 0; i < dim; i++) row[i] = add ? (double)x[i] + add[i] : x[i];
  double sum = 0;
  for (size_t i = 0; i < dim; i++) sum += row[i];
  double mean = sum / (double)dim, ss = 0;
  for (size_t i = 0; i < dim; i++) ss += (row[i] - mean) * (row[i] - mean);
  double scale = 1.0 / sqrt(ss / (double)dim + eps);
  for (size_t i = 0; i < dim; i++) row[i] = (row[i] - mean) * scale * weight[i] + bias[i];
}

static void shift_mix_worker(void *p, int tid, int nthreads) {
  shift_mix_ctx *c = p;
  size_t dim = c->dim, r0, r1;
  share(c->n_windows * c->seq_len, tid, nthreads, &r0, &r1);
  if (r1 == r0) return;
  double *mem = malloc(2 * dim * sizeof(double));
  if (!mem) {
    c->failed = 1;
    return;
  }
  double *here = mem, *before = mem + dim;
  // The row before the first of this worker's rows, when it is in the same window.
  if (r0 % c->seq_len != 0) layer_norm_row(before, c->x + (r0 - 1) * dim, c->add ? c->add + (r0 - 1) * dim : NULL, c->weight, c->bias, dim, c->eps);
  for (size_t row = r0; row < r1; row++) {
    if (row % c->seq_len == 0) memset(before, 0, dim * sizeof(double));
    layer_norm_row(here, c->x + row * dim, c->add ? c->add + row * dim : NULL, c->weight, c->bias, dim, c->eps);
    for (size_t m = 0; m < c->n_mixes; m++) {
      float *out = c->outs[m] + row * dim;
      const float *mix = c->mixes[m];
      // RWKV-4 writes x mix + before (1 - mix), RWKV-7 x + (before - x) mix: each as its TypeScript twin does.
      if (c->lerp)
        for (size_t i = 0; i < dim; i++) out[i] = (float)(here[i] + (before[i] - here[i]) * mix[i]);
      else
        for (size_t i = 0; i < dim; i++) out[i] = (float)(here[i] * mix[i] + before[i] * (1.0 - mix[i]));
    }
    double *t = before;
    before = here;
    here = t;
  }
  free(mem);
}

typedef struct {
  float *next;
  const float *x, *add, *gate, *update;
  size_t n;
} residual_ctx;

static void residual_worker(void *p, int tid, int nthreads) {
  residual_ctx *c = p;
  size_t i0, i1;
  share(c->n, tid, nthreads, &i0, &i1);
  if (c->gate)
    for (size_t i = i0; i < i1; i++) c->next[i] = (float)(((double)c->x[i] + c->add[i]) + sigmoid(c->gate[i]) * c->update[i]);
  else
    for (size_t i = i0; i < i1; i++) c->next[i] = (float)(((double)c->x[i] + c->add[i]) + c->update[i]);
}

typedef struct {
  float *h;
  size_t n;
} relu_square_ctx;

static void relu_square_worker(void *p, int tid, int nthreads) {
  relu_square_ctx *c = p;
  size_t i0, i1;
  share(c->n, tid, nthreads, &i0, &i1);
  // A float32 product rounds once, as the float64 product of two float32 values rounded to float32 does.
  for (size_t i = i0; i < i1; i++) {
    float v = c->h[i] > 0 ? c->h[i] : 0;
    c->h[i] = v * v;
  }
}

// ---- Node-API glue: arguments, length checks, errors.

static napi_value throw_range(napi_env env, const char *fn, const char *message) {
  char text[256];
  snprintf(text, sizeof text, "%s: %s", fn, message);
  napi_throw_range_error(env, "ERR_SHORTGPT_SCAN", text);
  return NULL;
}

static int get_typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  napi_typedarray_type type;
  if (napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) return 0;
  return 1;
}

static int get_size(napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d != floor(d) || d > 9007199254740992.0) return 0;
  *out = (size_t)d;
  return 1;
}

/** The arguments, or a thrown TypeError when there are fewer than n. */
static int get_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, const char *fn) {
  size_t argc = n;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) {
    char text[128];
    snprintf(text, sizeof text, "%s: expected %zu arguments", fn, n);
    napi_throw_type_error(env, "ERR_SHORTGPT_SCAN", text);
    return 0;
  }
  return 1;
}

typedef struct {
  napi_env env;
  const char *fn;
  int ok;
} checker;

/** A typed array of the given type and exactly `want` elements, else a thrown error naming it. */
static void *array_of(checker *ch, napi_value v, napi_typedarray_type type, size_t want, const char *name) {
  if (!ch->ok) return NULL;
  void *data;
  size_t len;
  char text[200];
  if (!get_typed(ch->env, v, type, &data, &len)) {
    snprintf(text, sizeof text, "%s: %s must be a %s", ch->fn, name, type == napi_float64_array ? "Float64Array" : "Float32Array");
    napi_throw_type_error(ch->env, "ERR_SHORTGPT_SCAN", text);
    ch->ok = 0;
    return NULL;
  }
  if (len != want) {
    snprintf(text, sizeof text, "%s has %zu values, expected %zu", name, len, want);
    throw_range(ch->env, ch->fn, text);
    ch->ok = 0;
    return NULL;
  }
  return data;
}

static float *f32_of(checker *ch, napi_value v, size_t want, const char *name) { return array_of(ch, v, napi_float32_array, want, name); }

/** A dimension (a whole number >= min), else a thrown error naming it. */
static size_t dim_of(checker *ch, napi_value v, size_t min, const char *name) {
  if (!ch->ok) return 0;
  size_t d;
  if (!get_size(ch->env, v, &d) || d < min) {
    char text[128];
    snprintf(text, sizeof text, "%s must be an integer >= %zu", name, min);
    throw_range(ch->env, ch->fn, text);
    ch->ok = 0;
    return 0;
  }
  return d;
}

/** The length of a Float32Array, to derive a dimension from, else a thrown error naming it. */
static size_t length_of(checker *ch, napi_value v, const char *name) {
  if (!ch->ok) return 0;
  void *data;
  size_t len;
  if (!get_typed(ch->env, v, napi_float32_array, &data, &len)) {
    char text[128];
    snprintf(text, sizeof text, "%s: %s must be a Float32Array", ch->fn, name);
    napi_throw_type_error(ch->env, "ERR_SHORTGPT_SCAN", text);
    ch->ok = 0;
  }
  return len;
}

/** a * b, or a thrown error when the product of the dimensions overflows (no array is that long). */
static size_t product(checker *ch, size_t a, size_t b) {
  size_t out;
  if (!ch->ok) return 0;
  if (__builtin_mul_overflow(a, b, &out)) {
    throw_range(ch->env, ch->fn, "the dimensions' product overflows");
    ch->ok = 0;
    return 0;
  }
  return out;
}

static int threads_of(checker *ch, napi_value v) {
  size_t t = dim_of(ch, v, 1, "threads");
  return t > MAX_THREADS ? MAX_THREADS : (int)t;
}

static napi_value out_of_memory(napi_env env, const char *fn) {
  napi_throw_error(env, "ERR_SHORTGPT_SCAN", fn);
  return NULL;
}

static napi_value js_rwkv4_wkv(napi_env env, napi_callback_info info) {
  napi_value a[9];
  if (!get_args(env, info, 9, a, "rwkv4Wkv")) return NULL;
  checker ch = {env, "rwkv4Wkv", 1};
  size_t att = length_of(&ch, a[4], "timeDecay");
  size_t n_windows = dim_of(&ch, a[6], 0, "nWindows"), seq_len = dim_of(&ch, a[7], 1, "seqLen");
  int threads = threads_of(&ch, a[8]);
  size_t n = product(&ch, product(&ch, n_windows, seq_len), att);
  rwkv4_ctx c = {f32_of(&ch, a[0], n, "wkv"), f32_of(&ch, a[1], n, "k"), f32_of(&ch, a[2], n, "v"), f32_of(&ch, a[3], n, "r"),
                 f32_of(&ch, a[4], att, "timeDecay"), f32_of(&ch, a[5], att, "timeFirst"), n_windows, seq_len, att, 0};
  if (!ch.ok) return NULL;
  parallel(threads, rwkv4_worker, &c);
  return c.failed ? out_of_memory(env, "rwkv4Wkv: out of memory for the scan state") : NULL;
}

static napi_value js_rwkv7_scan(napi_env env, napi_callback_info info) {
  napi_value a[18];
  if (!get_args(env, info, 18, a, "rwkv7Scan")) return NULL;
  checker ch = {env, "rwkv7Scan", 1};
  size_t dim = length_of(&ch, a[7], "w0");
  size_t n_windows = dim_of(&ch, a[14], 0, "nWindows"), seq_len = dim_of(&ch, a[15], 1, "seqLen"), hs = dim_of(&ch, a[16], 1, "headSize");
  int threads = threads_of(&ch, a[17]);
  if (ch.ok && (dim == 0 || dim % hs != 0)) {
    char text[128];
    snprintf(text, sizeof text, "headSize %zu does not divide dim %zu (the length of w0)", hs, dim);
    return throw_range(env, "rwkv7Scan", text);
  }
  size_t n = product(&ch, product(&ch, n_windows, seq_len), dim);
  rwkv7_ctx c = {
      f32_of(&ch, a[0], n, "y"), f32_of(&ch, a[1], n, "r"), f32_of(&ch, a[2], n, "decayIn"), f32_of(&ch, a[3], n, "k"),
      f32_of(&ch, a[5], n, "aIn"), f32_of(&ch, a[6], n, "gate"), array_of(&ch, a[4], napi_float64_array, n, "v"),
      f32_of(&ch, a[7], dim, "w0"), f32_of(&ch, a[8], dim, "a0"), f32_of(&ch, a[9], dim, "kkScale"), f32_of(&ch, a[10], dim, "ka"),
      f32_of(&ch, a[11], dim, "rk"), f32_of(&ch, a[12], dim, "lnX"), f32_of(&ch, a[13], dim, "lnXBias"),
      n_windows, seq_len, dim, hs, 0,
  };
  if (!ch.ok) return NULL;
  parallel(threads, rwkv7_worker, &c);
  return c.failed ? out_of_memory(env, "rwkv7Scan: out of memory for the scan state") : NULL;
}

static napi_value js_value_residual(napi_env env, napi_callback_info info) {
  napi_value a[6];
  if (!get_args(env, info, 6, a, "rwkv7ValueResidual")) return NULL;
  checker ch = {env, "rwkv7ValueResidual", 1};
  size_t dim = length_of(&ch, a[4], "v0");
  void *data;
  size_t n = 0;
  if (ch.ok && !get_typed(env, a[0], napi_float64_array, &data, &n)) {
    napi_throw_type_error(env, "ERR_SHORTGPT_SCAN", "rwkv7ValueResidual: v must be a Float64Array");
    return NULL;
  }
  int threads = threads_of(&ch, a[5]);
  if (ch.ok && (dim == 0 || n % dim != 0)) return throw_range(env, ch.fn, "v's length is not a whole number of rows of v0's length");
  value_residual_ctx c = {array_of(&ch, a[0], napi_float64_array, n, "v"), f32_of(&ch, a[1], n, "vRaw"), f32_of(&ch, a[3], n, "mix"), f32_of(&ch, a[4], dim, "v0"),
                          array_of(&ch, a[2], napi_float64_array, n, "vFirst"), dim ? n / dim : 0, dim};
  if (!ch.ok) return NULL;
  parallel(threads, value_residual_worker, &c);
  return NULL;
}

static napi_value js_rms_norm(napi_env env, napi_callback_info info) {
  napi_value a[5];
  if (!get_args(env, info, 5, a, "rmsNorm")) return NULL;
  checker ch = {env, "rmsNorm", 1};
  size_t dim = length_of(&ch, a[2], "weight"), n = length_of(&ch, a[1], "x");
  double eps;
  if (ch.ok && napi_get_value_double(env, a[3], &eps) != napi_ok) return throw_range(env, ch.fn, "eps must be a number");
  int threads = threads_of(&ch, a[4]);
  if (ch.ok && (dim == 0 || n % dim != 0)) return throw_range(env, ch.fn, "x's length is not a whole number of rows of weight's length");
  rms_norm_ctx c = {f32_of(&ch, a[0], n, "out"), f32_of(&ch, a[1], n, "x"), f32_of(&ch, a[2], dim, "weight"), dim ? n / dim : 0, dim, eps};
  if (!ch.ok) return NULL;
  parallel(threads, rms_norm_worker, &c);
  return NULL;
}

static napi_value js_mamba_conv_silu(napi_env env, napi_callback_info info) {
  napi_value a[8];
  if (!get_args(env, info, 8, a, "mambaConvSilu")) return NULL;
  checker ch = {env, "mambaConvSilu", 1};
  size_t n_windows = dim_of(&ch, a[4], 0, "nWindows"), seq_len = dim_of(&ch, a[5], 1, "seqLen"), kernel = dim_of(&ch, a[6], 1, "convKernel");
  int threads = threads_of(&ch, a[7]);
  size_t conv_len = length_of(&ch, a[2], "conv");
  if (ch.ok && conv_len % kernel != 0) return throw_range(env, "mambaConvSilu", "conv's length is not a multiple of convKernel");
  size_t di = conv_len / (kernel ? kernel : 1), n = product(&ch, n_windows, seq_len);
  size_t projected_len = product(&ch, n, 2 * di);
  napi_valuetype bias_type;
  napi_typeof(env, a[3], &bias_type);
  conv_ctx c = {f32_of(&ch, a[0], n * di, "u"), f32_of(&ch, a[1], projected_len, "projected"), f32_of(&ch, a[2], conv_len, "conv"),
                bias_type == napi_null || bias_type == napi_undefined ? NULL : f32_of(&ch, a[3], di, "bias"), n_windows, seq_len, di, kernel};
  if (!ch.ok) return NULL;
  parallel(threads, conv_worker, &c);
  return NULL;
}

static napi_value js_mamba_scan(napi_env env, napi_callback_info info) {
  napi_value a[13];
  if (!get_args(env, info, 13, a, "mambaScan")) return NULL;
  checker ch = {env, "mambaScan", 1};
  size_t di = length_of(&ch, a[6], "dtBias");
  size_t n_windows = dim_of(&ch, a[8], 0, "nWindows"), seq_len = dim_of(&ch, a[9], 1, "seqLen"), ds = dim_of(&ch, a[10], 1, "dState"), dt_rank = dim_of(&ch, a[11], 0, "dtRank");
  int threads = threads_of(&ch, a[12]);
  size_t n = product(&ch, n_windows, seq_len);
  size_t projected_len = product(&ch, n, 2 * di), params_len = product(&ch, n, product(&ch, 2, ds) + dt_rank), a_len = product(&ch, di, ds);
  mamba_ctx c = {
      f32_of(&ch, a[0], n * di, "y"), f32_of(&ch, a[1], n * di, "u"), f32_of(&ch, a[2], projected_len, "projected"),
      f32_of(&ch, a[3], params_len, "params"), f32_of(&ch, a[4], n * di, "dtRaw"), f32_of(&ch, a[5], a_len, "aLog"),
      f32_of(&ch, a[6], di, "dtBias"), f32_of(&ch, a[7], di, "d"), n_windows, seq_len, di, ds, dt_rank, 0,
  };
  if (!ch.ok) return NULL;
  parallel(threads, mamba_worker, &c);
  return c.failed ? out_of_memory(env, "mambaScan: out of memory for the scan state") : NULL;
}

/** A JavaScript array of `count` Float32Arrays of `len` values each, else a thrown error naming it; NULL for an empty array. */
static int f32_list(checker *ch, napi_value v, size_t count, size_t len, const char *name, const float **out) {
  if (!ch->ok) return 0;
  uint32_t got;
  char text[160];
  if (napi_get_array_length(ch->env, v, &got) != napi_ok || got != count) {
    snprintf(text, sizeof text, "%s must be an array of %zu Float32Arrays", name, count);
    throw_range(ch->env, ch->fn, text);
    ch->ok = 0;
    return 0;
  }
  for (uint32_t i = 0; i < got; i++) {
    napi_value e;
    napi_get_element(ch->env, v, i, &e);
    snprintf(text, sizeof text, "%s[%u]", name, i);
    out[i] = f32_of(ch, e, len, text);
    if (!ch->ok) return 0;
  }
  return 1;
}

static uint32_t list_length(checker *ch, napi_value v, const char *name) {
  uint32_t n = 0;
  if (ch->ok && napi_get_array_length(ch->env, v, &n) != napi_ok) {
    char text[128];
    snprintf(text, sizeof text, "%s must be an array", name);
    throw_range(ch->env, ch->fn, text);
    ch->ok = 0;
  }
  return n;
}

static int is_null(napi_env env, napi_value v) {
  napi_valuetype type;
  return napi_typeof(env, v, &type) == napi_ok && (type == napi_null || type == napi_undefined);
}

#define MAX_MIXES 8

static napi_value js_shift_mix(napi_env env, napi_callback_info info) {
  napi_value a[11];
  if (!get_args(env, info, 11, a, "layerNormShiftMix")) return NULL;
  checker ch = {env, "layerNormShiftMix", 1};
  size_t dim = length_of(&ch, a[3], "weight");
  size_t n_windows = dim_of(&ch, a[6], 0, "nWindows"), seq_len = dim_of(&ch, a[7], 1, "seqLen");
  double eps;
  if (ch.ok && napi_get_value_double(env, a[8], &eps) != napi_ok) return throw_range(env, ch.fn, "eps must be a number");
  bool lerp = false;
  if (ch.ok && napi_get_value_bool(env, a[9], &lerp) != napi_ok) return throw_range(env, ch.fn, "lerp must be a boolean");
  int threads = threads_of(&ch, a[10]);
  uint32_t n_mixes = list_length(&ch, a[0], "outs");
  if (ch.ok && (n_mixes == 0 || n_mixes > MAX_MIXES)) return throw_range(env, ch.fn, "outs must hold 1 to 8 arrays");
  if (ch.ok && list_length(&ch, a[5], "mixes") != n_mixes) return throw_range(env, ch.fn, "outs and mixes differ in length");
  size_t n = product(&ch, product(&ch, n_windows, seq_len), dim);
  const float *outs[MAX_MIXES], *mixes[MAX_MIXES];
  f32_list(&ch, a[0], n_mixes, n, "outs", outs);
  f32_list(&ch, a[5], n_mixes, dim, "mixes", mixes);
  shift_mix_ctx c = {(float **)outs, mixes, n_mixes, f32_of(&ch, a[1], n, "x"), is_null(env, a[2]) ? NULL : f32_of(&ch, a[2], n, "add"),
                     f32_of(&ch, a[3], dim, "weight"), f32_of(&ch, a[4], dim, "bias"), n_windows, seq_len, dim, eps, lerp, 0};
  if (!ch.ok) return NULL;
  parallel(threads, shift_mix_worker, &c);
  return c.failed ? out_of_memory(env, "layerNormShiftMix: out of memory for two rows") : NULL;
}

static napi_value js_residual(napi_env env, napi_callback_info info) {
  napi_value a[6];
  if (!get_args(env, info, 6, a, "residualAdd")) return NULL;
  checker ch = {env, "residualAdd", 1};
  size_t n = length_of(&ch, a[0], "next");
  int threads = threads_of(&ch, a[5]);
  residual_ctx c = {f32_of(&ch, a[0], n, "next"), f32_of(&ch, a[1], n, "x"), f32_of(&ch, a[2], n, "add"), is_null(env, a[3]) ? NULL : f32_of(&ch, a[3], n, "gate"),
                    f32_of(&ch, a[4], n, "update"), n};
  if (!ch.ok) return NULL;
  parallel(threads, residual_worker, &c);
  return NULL;
}

static napi_value js_relu_square(napi_env env, napi_callback_info info) {
  napi_value a[2];
  if (!get_args(env, info, 2, a, "reluSquare")) return NULL;
  checker ch = {env, "reluSquare", 1};
  size_t n = length_of(&ch, a[0], "h");
  int threads = threads_of(&ch, a[1]);
  relu_square_ctx c = {f32_of(&ch, a[0], n, "h"), n};
  if (!ch.ok) return NULL;
  parallel(threads, relu_square_worker, &c);
  return NULL;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

NAPI_MODULE_INIT() {
  export_function(env, exports, "rwkv4Wkv", js_rwkv4_wkv);
  export_function(env, exports, "rwkv7Scan", js_rwkv7_scan);
  export_function(env, exports, "rwkv7ValueResidual", js_value_residual);
  export_function(env, exports, "rmsNorm", js_rms_norm);
  export_function(env, exports, "mambaConvSilu", js_mamba_conv_silu);
  export_function(env, exports, "mambaScan", js_mamba_scan);
  export_function(env, exports, "layerNormShiftMix", js_shift_mix);
  export_function(env, exports, "residualAdd", js_residual);
  export_function(env, exports, "reluSquare", js_relu_square);
  return exports;
}

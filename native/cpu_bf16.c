// The CPU's bf16 dot-product units for one Llama decoder layer: a bf16 GEMM (AVX512_BF16
// vdpbf16ps, fp32 accumulation) on weights packed once per layer, plus the fp32 pieces around it
// (RMSNorm, RoPE + causal attention, SwiGLU) so that a layer runs without leaving C.
//
// Why: checkpoints are bf16 on disk; expanding them to fp32 for an fp32 GEMM leaves half of a
// bf16-capable CPU unused and doubles the weight traffic. Activations and the residual stream
// stay fp32; only the GEMM inputs are rounded to bf16 (round to nearest even), as PyTorch does.
//
// The layer GEMMs run on oneDNN instead of the kernel below when the build found oneDNN
// (onednn_gemm.h; AMX on the CPUs that have it) unless SHORTGPT_CPU_GEMM=native; the attention's
// small GEMMs always run here.
//
// Every function is compiled for AVX-512 with target attributes, so the file builds with any
// gcc >= 10 on x86-64; JavaScript asks features() before calling anything else.
//
// JavaScript API (src/backend/cpuBf16/native.ts wraps it):
//   features() -> { avx512f, avx512bf16, amxBf16, gemm, gemmImpl }
//   useGemm("onednn" | "native") -> the GEMM now used (choose before packing: the layouts differ)
//   packedLength(n, k) -> elements of a packed (n, k) weight in the current layout
//   packWeights([w0, w1, ...] (rows_i, k) stacked, k[, threads]) -> Uint16Array packed; parts are
//     Float32Array (rounded to bf16 here) or Uint16Array (bf16 bits as stored)
//   packRows(dst, part, row0, k[, threads])               one part into rows row0.. of a zeroed dst
//   gemm(out, a, packed, m, n, k, accumulate, threads)   out (m, n) [+]= a (m, k) @ w^T
//   rmsNorm(out, x, weight, rows, dim, eps)
//   attention(out, qkv, nWindows, seqLen, nHeads, nKvHeads, headDim, cos, sin, threads, positions?, branches?, options?)
//     options: { scale?, softcap?, window? } (Gemma 2/3: score scale, tanh soft-capping, sliding window)
//   swiglu(out, gu, rows, hidden, threads)                 out = silu(gu[:, :h]) * gu[:, h:]
//   geluGate(out, gu, rows, hidden, threads)               out = gelu_tanh(gu[:, :h]) * gu[:, h:] (Gemma)
//   headRmsNorm(qkv, qNorm, kNorm, rows, nHeads, nKvHeads, headDim, eps)  per-head RMSNorm of q and k (Gemma 3)
//   addRmsNorm(y, x, weight, rows, dim, eps)               y += rmsNorm(x) * weight (Gemma's sandwich norms)
#define _GNU_SOURCE
#include <math.h>
#include <node_api.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#define MAX_THREADS 256

#ifdef SHORTGPT_ONEDNN
#include <stdio.h>
#include "onednn_gemm.h"
#endif

// Which kernel the layer GEMMs run on, and so the layout packWeights/packRows write:
// 0: this file's kernel (panels of 16 columns, k in pairs); 1: oneDNN (plain rows of k2 pairs).
static int gemm_uses_onednn = 0;

// ---- threads: the caller is worker 0; the others are created per call (each call is milliseconds)

typedef void (*worker_fn)(void *ctx, int tid, int nthreads);
typedef struct { worker_fn fn; void *ctx; int tid; int n; } worker_arg;

static void *worker_main(void *p) {
  worker_arg *w = (worker_arg *)p;
  w->fn(w->ctx, w->tid, w->n);
  return NULL;
}

static void parallel(int nthreads, worker_fn fn, void *ctx) {
  if (nthreads < 1) nthreads = 1;
  if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
  pthread_t th[MAX_THREADS];
  worker_arg args[MAX_THREADS];
  int started = 1;
  for (int t = 1; t < nthreads; t++) {
    args[t] = (worker_arg){fn, ctx, t, nthreads};
    if (pthread_create(&th[t], NULL, worker_main, &args[t]) != 0) break;
    started++;
  }
  if (started < nthreads) {
    // Could not start every thread: the started ones already split the work for nthreads, so
    // run the missing shares here.
    for (int t = started; t < nthreads; t++) fn(ctx, t, nthreads);
  }
  fn(ctx, 0, nthreads);
  for (int t = 1; t < started; t++) pthread_join(th[t], NULL);
}

#if HAVE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")))

// ---- bf16 GEMM ------------------------------------------------------------------------------
// Packed weights: the n output rows are padded to a multiple of NB (64) and k to an even count;
// panel p holds columns 16p..16p+15 as k/2 groups of 16 (col) x 2 (k, k+1) bf16 = one zmm each.
#define PANEL 16
#define NPANELS 4
#define NB (PANEL * NPANELS)
#define MR 6
#define KC 256 /* k pairs per cache block: 6 x 512 bf16 of A in L1, 512 x 64 of W per block */
#define NC_BLOCKS 4

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

AVX512 static inline uint16_t to_bf16(float f) {
  // Round to nearest even; NaN stays NaN.
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

// out (m, n, row stride ldo) [+]= A (m rows of ka bf16 pairs) @ W^T over the first k2 pairs;
// W's panels hold kw pairs each (kw >= k2: attention multiplies by a causal prefix of the keys).
typedef struct {
  float *out; const uint16_t *a; const uint32_t *w;
  size_t m, n, k2, mp, np; int accumulate;
  size_t ldo, ka, kw;
} gemm_ctx;

// out rows r0..r0+MR-1 (valid: mrows), columns c0..c0+63 (valid: ncols) over k pairs kp0..kp1.
AVX512 static inline void kernel(const gemm_ctx *g, size_t r0, size_t c0, size_t kp0, size_t kp1, int load_c) {
  const uint32_t *a32 = (const uint32_t *)g->a;
  const uint32_t *wp = g->w + (c0 / PANEL) * g->kw * PANEL;
  __m512 acc[MR][NPANELS];
  size_t mrows = g->m - r0 < MR ? g->m - r0 : MR;
  __mmask16 mask[NPANELS];
  for (int p = 0; p < NPANELS; p++) {
    size_t c = c0 + (size_t)p * PANEL;
    size_t valid = c >= g->n ? 0 : (g->n - c >= PANEL ? PANEL : g->n - c);
    mask[p] = (__mmask16)((1u << valid) - 1u);
  }
  for (int r = 0; r < MR; r++)
    for (int p = 0; p < NPANELS; p++)
      acc[r][p] = (load_c && (size_t)r < mrows) ? _mm512_maskz_loadu_ps(mask[p], g->out + (r0 + r) * g->ldo + c0 + p * PANEL) : _mm512_setzero_ps();
  const uint32_t *arow[MR];
  for (int r = 0; r < MR; r++) arow[r] = a32 + (r0 + r) * g->ka;
  for (size_t kp = kp0; kp < kp1; kp++) {
    __m512bh b[NPANELS];
    for (int p = 0; p < NPANELS; p++) b[p] = (__m512bh)_mm512_loadu_si512(wp + ((size_t)p * g->kw + kp) * PANEL);
    for (int r = 0; r < MR; r++) {
      __m512bh av = (__m512bh)_mm512_set1_epi32((int)arow[r][kp]);
      for (int p = 0; p < NPANELS; p++) acc[r][p] = _mm512_dpbf16_ps(acc[r][p], av, b[p]);
    }
  }
  for (int r = 0; r < MR; r++) {
    if ((size_t)r >= mrows) break;
    for (int p = 0; p < NPANELS; p++) _mm512_mask_storeu_ps(g->out + (r0 + r) * g->ldo + c0 + p * PANEL, mask[p], acc[r][p]);
  }
}

AVX512 static void gemm_worker(void *p, int tid, int nthreads) {
  const gemm_ctx *g = (const gemm_ctx *)p;
  size_t nblocks = g->np / NB;
  size_t b0 = nblocks * tid / nthreads, b1 = nblocks * (tid + 1) / nthreads;
  for (size_t bc = b0; bc < b1; bc += NC_BLOCKS) {
    size_t bc1 = bc + NC_BLOCKS < b1 ? bc + NC_BLOCKS : b1;
    for (size_t kp0 = 0; kp0 < g->k2; kp0 += KC) {
      size_t kp1 = kp0 + KC < g->k2 ? kp0 + KC : g->k2;
      int load_c = kp0 > 0 || g->accumulate;
      for (size_t r0 = 0; r0 < g->m; r0 += MR)
        for (size_t b = bc; b < bc1; b++) kernel(g, r0, b * NB, kp0, kp1, load_c);
    }
  }
}

typedef struct { const float *src; uint16_t *dst; size_t m, k, k2; } convert_ctx;

AVX512 static void convert_worker(void *p, int tid, int nthreads) {
  const convert_ctx *c = (const convert_ctx *)p;
  size_t r0 = c->m * tid / nthreads, r1 = c->m * (tid + 1) / nthreads;
  for (size_t r = r0; r < r1; r++) {
    const float *s = c->src + r * c->k;
    uint16_t *d = c->dst + r * c->k2 * 2;
    size_t i = 0;
    for (; i + 32 <= c->k; i += 32) {
      __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + i + 16), _mm512_loadu_ps(s + i));
      _mm512_storeu_si512(d + i, (__m512i)v);
    }
    for (; i < c->k; i++) d[i] = to_bf16(s[i]);
    for (; i < c->k2 * 2; i++) d[i] = 0;
  }
}

// out (m, n) [+]= a (m, k) @ w^T, w packed by pack_weights. Rows of a are rounded to bf16 first.
AVX512 static int gemm_bf16(float *out, const float *a, const uint16_t *w, size_t m, size_t n, size_t k, int accumulate, int threads) {
  size_t k2 = (k + 1) / 2;
  // The kernel reads whole blocks of MR rows: the rows past m are zeros (never stored).
  size_t mp = round_up(m, MR);
  uint16_t *abf = (uint16_t *)aligned_alloc(64, round_up(mp * k2 * 4, 64));
  if (!abf) return -1;
  memset(abf + m * k2 * 2, 0, (mp - m) * k2 * 4);
  convert_ctx c = {a, abf, m, k, k2};
  parallel(threads, convert_worker, &c);
  gemm_ctx g = {out, abf, (const uint32_t *)w, m, n, k2, mp, round_up(n, NB), accumulate, n, k2, k2};
  // Split columns in whole 64-column blocks: fewer threads than blocks when n is small.
  size_t nblocks = g.np / NB;
  int t = threads < (int)nblocks ? threads : (int)nblocks;
  parallel(t, gemm_worker, &g);
  free(abf);
  return 0;
}

// ---- fp32 helpers -----------------------------------------------------------------------------

// e^x for 16 lanes: 2^n * p(r), r = x - n ln2 in [-ln2/2, ln2/2], degree-6 polynomial (~1 ulp).
AVX512 static inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
  x = _mm512_min_ps(x, _mm512_set1_ps(88.7f));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

static inline __mmask16 tail_mask(size_t remaining) { return remaining >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << remaining) - 1u); }

// out = x / sqrt(mean(x^2) + eps) * weight, per row; sums in double like the reference.
AVX512 static void rms_norm(float *out, const float *x, const float *weight, size_t rows, size_t dim, float eps) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * dim;
    double ss = 0;
    for (size_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
    float scale = (float)(1.0 / sqrt(ss / (double)dim + eps));
    __m512 s = _mm512_set1_ps(scale);
    for (size_t i = 0; i < dim; i += 16) {
      __mmask16 mk = tail_mask(dim - i);
      __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + i), s);
      _mm512_mask_storeu_ps(out + r * dim + i, mk, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mk, weight + i)));
    }
  }
}

// y += x / sqrt(mean(x^2) + eps) * weight, per row: a sandwich norm on a block's output before
// the residual add (Gemma 2/3's post-attention and post-feedforward norms).
AVX512 static void add_rms_norm(float *y, const float *x, const float *weight, size_t rows, size_t dim, float eps) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * dim;
    double ss = 0;
    for (size_t i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
    __m512 s = _mm512_set1_ps((float)(1.0 / sqrt(ss / (double)dim + eps)));
    for (size_t i = 0; i < dim; i += 16) {
      __mmask16 mk = tail_mask(dim - i);
      __m512 v = _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + i), s), _mm512_maskz_loadu_ps(mk, weight + i));
      _mm512_mask_storeu_ps(y + r * dim + i, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, y + r * dim + i), v));
    }
  }
}

// Per-head RMSNorm of q and k in place (Gemma 3's q_norm / k_norm, before RoPE): each head's
// headDim values of a qkv row are one norm row; v is left alone.
AVX512 static void head_rms_norm(float *qkv, const float *qn, const float *kn, size_t rows, size_t nh, size_t nkv, size_t d, float eps) {
  size_t ld = (nh + 2 * nkv) * d;
  for (size_t r = 0; r < rows; r++) {
    float *row = qkv + r * ld;
    rms_norm(row, row, qn, nh, d, eps);
    rms_norm(row + nh * d, row + nh * d, kn, nkv, d, eps);
  }
}

// The gate's activation: SiLU (Llama's SwiGLU) or GELU with the tanh approximation (Gemma).
enum gate_act { ACT_SILU, ACT_GELU_TANH };

typedef struct { float *out; const float *gu; size_t rows, hidden; enum gate_act act; } swiglu_ctx;

AVX512 static void swiglu_worker(void *p, int tid, int nthreads) {
  const swiglu_ctx *c = (const swiglu_ctx *)p;
  size_t r0 = c->rows * tid / nthreads, r1 = c->rows * (tid + 1) / nthreads;
  const __m512 one = _mm512_set1_ps(1.0f);
  // gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): the
  // SiLU form with 2u for x, so both use one exp (e^-2u saturates to inf or 0 at the ends, giving 0 or x).
  const __m512 c1 = _mm512_set1_ps(-2.0f * 0.7978845608028654f), c3 = _mm512_set1_ps(-2.0f * 0.7978845608028654f * 0.044715f);
  for (size_t r = r0; r < r1; r++) {
    const float *gate = c->gu + r * 2 * c->hidden, *up = gate + c->hidden;
    for (size_t i = 0; i < c->hidden; i += 16) {
      __mmask16 mk = tail_mask(c->hidden - i);
      __m512 gv = _mm512_maskz_loadu_ps(mk, gate + i);
      __m512 arg = c->act == ACT_SILU ? _mm512_sub_ps(_mm512_setzero_ps(), gv)
                                      : _mm512_mul_ps(gv, _mm512_fmadd_ps(_mm512_mul_ps(gv, gv), c3, c1));
      __m512 act = _mm512_div_ps(gv, _mm512_add_ps(one, exp512(arg)));
      _mm512_mask_storeu_ps(c->out + r * c->hidden + i, mk, _mm512_mul_ps(act, _mm512_maskz_loadu_ps(mk, up + i)));
    }
  }
}

// ---- RoPE + causal attention, fp32 -------------------------------------------------------------
// qkv rows: [q (nHeads*d) | k (nKv*d) | v (nKv*d)]. cos, sin: (seqLen, d/2), rotate-half pairing.
typedef struct {
  float *out; float *qkv; size_t nw, T, nh, nkv, d; const float *cos, *sin;
  int failed; // a worker could not allocate its buffers
  // Packed windows (PackedLayout), or NULL: each token's position in its own sequence, and its
  // branch (0: the shared prefix; key j is visible to query t if branch[j] is 0 or branch[t]).
  const int32_t *positions, *branches;
  float qscale;  // the score scale, folded into q (1/sqrt(d) unless given: Gemma's query_pre_attn_scalar^-0.5)
  float softcap; // 0: none; else scores become softcap * tanh(score / softcap) before the mask (Gemma 2)
  size_t window; // 0: none; else a query at position p sees keys at positions p - window + 1 .. p only
} attn_ctx;

static void rope_rows(const attn_ctx *c, size_t r0, size_t r1) {
  size_t ld = (c->nh + 2 * c->nkv) * c->d, half = c->d / 2;
  float qscale = c->qscale;
  for (size_t r = r0; r < r1; r++) {
    size_t pos = c->positions ? (size_t)c->positions[r] : r % c->T;
    const float *cs = c->cos + pos * half, *sn = c->sin + pos * half;
    float *row = c->qkv + r * ld;
    for (size_t h = 0; h < c->nh + c->nkv; h++) {
      float *v = row + h * c->d;
      float scale = h < c->nh ? qscale : 1.0f; // q carries the scale of the scores
      for (size_t i = 0; i < half; i++) {
        float a = v[i], b = v[i + half];
        v[i] = (a * cs[i] - b * sn[i]) * scale;
        v[i + half] = (b * cs[i] + a * sn[i]) * scale;
      }
    }
  }
}

// One bf16 element pair per uint32 lane: rows of floats (stride ld) -> rows of k2 pairs.
AVX512 static void rows_to_bf16(uint16_t *dst, size_t k2, const float *src, size_t ld, size_t rows, size_t k) {
  for (size_t r = 0; r < rows; r++) {
    const float *s = src + r * ld;
    uint16_t *d = dst + r * k2 * 2;
    size_t i = 0;
    for (; i + 32 <= k; i += 32) _mm512_storeu_si512(d + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + i + 16), _mm512_loadu_ps(s + i)));
    for (; i < k; i++) d[i] = to_bf16(s[i]);
    for (; i < k2 * 2; i++) d[i] = 0;
  }
}

// Packs a (n, k) matrix with element (j, i) at src[j * sn + i * sk] like pack_rows (n padded to NB).
AVX512 static void pack_strided(uint16_t *dst, const float *src, size_t n, size_t k, size_t sn, size_t sk, size_t kw) {
  size_t np = round_up(n, NB);
  memset(dst, 0, np * kw * 4);
  for (size_t j = 0; j < n; j++) {
    uint16_t *base = dst + (j / PANEL) * kw * PANEL * 2 + (j % PANEL) * 2;
    for (size_t i = 0; i < k; i++) base[(i / 2) * PANEL * 2 + (i & 1)] = to_bf16(src[j * sn + i * sk]);
  }
}

// s = cap * tanh(s / cap) over n scores; tanh(y) = 1 - 2 / (1 + e^2y) on the same exp as softmax
// (absolute error ~1e-7 of cap near 0, saturating to +-1 at the ends).
AVX512 static void softcap_row(float *s, size_t n, float cap) {
  const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f), vcap = _mm512_set1_ps(cap), k = _mm512_set1_ps(2.0f / cap);
  for (size_t j = 0; j < n; j += 16) {
    __mmask16 mk = tail_mask(n - j);
    __m512 e = exp512(_mm512_mul_ps(_mm512_maskz_loadu_ps(mk, s + j), k));
    __m512 t = _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(one, e)));
    _mm512_mask_storeu_ps(s + j, mk, _mm512_mul_ps(t, vcap));
  }
}

#define QB 96 /* query rows per block: a multiple of MR; scores for QB x seqLen stay in L2 */

// Per (window, kv head): S = Q K^T and O = P V on the bf16 GEMM kernel, fp32 softmax between,
// blocks of QB queries against the causal prefix of the keys only.
AVX512 static void attention_worker(void *p, int tid, int nthreads) {
  attn_ctx *c = (attn_ctx *)p;
  size_t T = c->T, d = c->d, G = c->nh / c->nkv;
  size_t ld = (c->nh + 2 * c->nkv) * d, qdim = c->nh * d;
  size_t d2 = (d + 1) / 2, T2 = (T + 1) / 2;
  size_t Tn = round_up(T, NB), dn = round_up(d, NB);
  uint16_t *kpack = (uint16_t *)aligned_alloc(64, round_up(Tn * d2 * 4, 64));
  uint16_t *vpack = (uint16_t *)aligned_alloc(64, round_up(dn * T2 * 4, 64));
  uint16_t *qbf = (uint16_t *)aligned_alloc(64, round_up(QB * d2 * 4, 64));
  uint16_t *pbf = (uint16_t *)aligned_alloc(64, round_up(QB * T2 * 4, 64));
  float *scores = (float *)aligned_alloc(64, round_up(QB * Tn * 4, 64));
  if (!kpack || !vpack || !qbf || !pbf || !scores) {
    free(kpack); free(vpack); free(qbf); free(pbf); free(scores);
    __atomic_store_n(&c->failed, 1, __ATOMIC_RELAXED);
    return;
  }
  size_t tasks = c->nw * c->nkv;
  for (size_t task = (size_t)tid; task < tasks; task += (size_t)nthreads) {
    size_t w = task / c->nkv, hk = task % c->nkv;
    const float *base = c->qkv + w * T * ld;
    // K as GEMM weights (n = keys, k = d); V^T as GEMM weights (n = d, k = keys).
    pack_strided(kpack, base + qdim + hk * d, T, d, ld, 1, d2);
    pack_strided(vpack, base + qdim + c->nkv * d + hk * d, d, T, 1, ld, T2);
    for (size_t g = 0; g < G; g++) {
      size_t h = hk * G + g;
      for (size_t t0 = 0; t0 < T; t0 += QB) {
        size_t rows = T - t0 < QB ? T - t0 : QB;
        size_t nkeys = t0 + rows; // the last query of the block sees keys 0..t0+rows-1
        size_t kp2 = (nkeys + 1) / 2;
        rows_to_bf16(qbf, d2, base + t0 * ld + h * d, ld, rows, d);
        gemm_ctx sg = {scores, qbf, (const uint32_t *)kpack, rows, nkeys, d2, round_up(rows, MR), round_up(nkeys, NB), 0, nkeys, d2, d2};
        gemm_worker(&sg, 0, 1);
        for (size_t r = 0; r < rows; r++) {
          float *s = scores + r * nkeys;
          size_t n = t0 + r + 1;
          if (c->softcap > 0) softcap_row(s, n, c->softcap);
          if (c->window > 0) {
            // Positions of the query and keys: in its own sequence when packed, else the row in the window.
            const int32_t *pos = c->positions ? c->positions + w * T : NULL;
            size_t qpos = pos ? (size_t)pos[t0 + r] : t0 + r;
            for (size_t j = 0; j < n; j++) {
              size_t kpos = pos ? (size_t)pos[j] : j;
              if (kpos + c->window <= qpos) s[j] = -INFINITY;
            }
          }
          if (c->branches) {
            const int32_t *br = c->branches + w * T;
            int32_t mine = br[t0 + r];
            for (size_t j = 0; j < n; j++)
              if (br[j] != 0 && br[j] != mine) s[j] = -INFINITY;
          }
          __m512 vmax = _mm512_set1_ps(-INFINITY);
          for (size_t j = 0; j < n; j += 16) vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - j), s + j));
          __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
          __m512 vsum = _mm512_setzero_ps();
          for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = tail_mask(n - j);
            __m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), mx)));
            _mm512_mask_storeu_ps(s + j, mk, e);
            vsum = _mm512_add_ps(vsum, e);
          }
          // Normalised before rounding to bf16, as PyTorch's softmax output is.
          __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
          for (size_t j = 0; j < n; j += 16) {
            __mmask16 mk = tail_mask(n - j);
            _mm512_mask_storeu_ps(s + j, mk, _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, s + j), inv));
          }
          for (size_t j = n; j < nkeys; j++) s[j] = 0; // future keys of this block
        }
        rows_to_bf16(pbf, kp2, scores, nkeys, rows, nkeys);
        gemm_ctx og = {c->out + (w * T + t0) * qdim + h * d, pbf, (const uint32_t *)vpack, rows, d, kp2, round_up(rows, MR), dn, 0, qdim, kp2, T2};
        gemm_worker(&og, 0, 1);
      }
    }
  }
  free(kpack); free(vpack); free(qbf); free(pbf); free(scores);
}

static void rope_worker(void *p, int tid, int nthreads) {
  const attn_ctx *c = (const attn_ctx *)p;
  size_t rows = c->nw * c->T;
  rope_rows(c, rows * tid / nthreads, rows * (tid + 1) / nthreads);
}

// Packing: row n of the stacked weight is column n of the GEMM: panel n/16, lane n%16, with the
// k values of a row in bf16 pairs (one uint32 per pair). Whole panels of 16 rows and runs of 16 k
// go through a 16 x 8-pair tile in L1 so that every store fills a 64-byte line; the ragged edges
// go one pair at a time. src is fp32 (rounded here) or bf16 bits (moved as stored). (The tile path
// rounds with vcvtneps2bf16, which reads float32 denormals as zero, as the GEMM's activations are;
// the edges keep them: weights below 1.2e-38 differ by that much at most.)
typedef struct { uint32_t *dst; const void *src; int src_bf16; size_t row0, rows, k, k2; } pack_ctx;

AVX512 static inline uint32_t pair_at(const pack_ctx *c, size_t r, size_t kk) {
  // Elements kk and kk + 1 of source row r (0 past the end of the row).
  if (c->src_bf16) {
    const uint16_t *s = (const uint16_t *)c->src + r * c->k;
    return (uint32_t)s[kk] | (kk + 1 < c->k ? (uint32_t)s[kk + 1] << 16 : 0u);
  }
  const float *s = (const float *)c->src + r * c->k;
  return (uint32_t)to_bf16(s[kk]) | (kk + 1 < c->k ? (uint32_t)to_bf16(s[kk + 1]) << 16 : 0u);
}

AVX512 static inline __m256i sixteen_bf16(const pack_ctx *c, size_t r, size_t kk) {
  if (c->src_bf16) return _mm256_loadu_si256((const __m256i *)((const uint16_t *)c->src + r * c->k + kk));
  return (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps((const float *)c->src + r * c->k + kk));
}

AVX512 static void pack_worker(void *p, int tid, int nthreads) {
  const pack_ctx *c = (const pack_ctx *)p;
  // Source rows r cover packed rows row0 + r; split the work by packed panel.
  size_t first_panel = c->row0 / PANEL, last_panel = (c->row0 + c->rows - 1) / PANEL;
  size_t npanels = last_panel - first_panel + 1;
  size_t p0 = first_panel + npanels * tid / nthreads, p1 = first_panel + npanels * (tid + 1) / nthreads;
  uint32_t tile[PANEL][8];
  for (size_t panel = p0; panel < p1; panel++) {
    uint32_t *dpanel = c->dst + panel * c->k2 * PANEL;
    size_t n0 = panel * PANEL, n1 = n0 + PANEL;
    if (n0 < c->row0) n0 = c->row0;
    if (n1 > c->row0 + c->rows) n1 = c->row0 + c->rows;
    int full = (n1 - n0 == PANEL);
    size_t kk = 0;
    if (full) {
      for (; kk + 16 <= c->k; kk += 16) {
        for (size_t l = 0; l < PANEL; l++) _mm256_storeu_si256((__m256i *)tile[l], sixteen_bf16(c, n0 + l - c->row0, kk));
        for (size_t q = 0; q < 8; q++) {
          __m512i col = _mm512_i32gather_epi32(_mm512_setr_epi32(0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120), (const int *)&tile[0][q], 4);
          _mm512_storeu_si512(dpanel + (kk / 2 + q) * PANEL, col);
        }
      }
    }
    for (size_t n = n0; n < n1; n++)
      for (size_t k = kk; k < c->k; k += 2) dpanel[(k / 2) * PANEL + n % PANEL] = pair_at(c, n - c->row0, k);
  }
}

// Writes rows (rows, k) of a weight as packed rows row0.. of dst (np x k2 pairs, zeroed by the caller).
AVX512 static void pack_rows(uint16_t *dst, const void *src, int src_bf16, size_t row0, size_t rows, size_t k, size_t k2, int threads) {
  if (rows == 0) return;
  pack_ctx c = {(uint32_t *)dst, src, src_bf16, row0, rows, k, k2};
  parallel(threads, pack_worker, &c);
}

// The plain layout (oneDNN's weights): row j of the weight is row row0 + j of dst, k2 pairs long
// (a zero after an odd k), so that A and W share one row stride.
AVX512 static void pack_rows_plain(uint16_t *dst, const void *src, int src_bf16, size_t row0, size_t rows, size_t k, size_t k2, int threads) {
  uint16_t *d = dst + row0 * k2 * 2;
  if (!src_bf16) {
    convert_ctx c = {(const float *)src, d, rows, k, k2};
    parallel(threads, convert_worker, &c);
    return;
  }
  for (size_t r = 0; r < rows; r++) {
    memcpy(d + r * k2 * 2, (const uint16_t *)src + r * k, k * 2);
    if (k2 * 2 > k) d[r * k2 * 2 + k] = 0;
  }
}

// Packed weights end with LAYOUT_TAG elements naming their layout, so that weights packed for one
// kernel are refused by the other (useGemm between packing and use) instead of multiplied wrongly.
#define LAYOUT_TAG 4
static const uint16_t TAG_NATIVE[LAYOUT_TAG] = {0x5347, 0x4e41, 0x5449, 0x5645}; // "SGNATIVE"
static const uint16_t TAG_ONEDNN[LAYOUT_TAG] = {0x5347, 0x4f4e, 0x4544, 0x4e4e}; // "SGONEDNN"

static size_t packed_body(size_t n, size_t k) {
  size_t k2 = (k + 1) / 2;
  return gemm_uses_onednn ? n * k2 * 2 : round_up(n, NB) * k2 * 2;
}

static size_t packed_length(size_t n, size_t k) { return packed_body(n, k) + LAYOUT_TAG; }

static const uint16_t *layout_tag(void) { return gemm_uses_onednn ? TAG_ONEDNN : TAG_NATIVE; }

static void pack_any(uint16_t *dst, const void *src, int src_bf16, size_t row0, size_t rows, size_t k, size_t k2, int threads) {
  if (gemm_uses_onednn) pack_rows_plain(dst, src, src_bf16, row0, rows, k, k2, threads);
  else pack_rows(dst, src, src_bf16, row0, rows, k, k2, threads);
}

// out (m, n) [+]= a (m, k) @ w^T on oneDNN: a rounded to bf16 rows of k2 pairs, then one matmul.
AVX512 static int gemm_onednn_bf16(float *out, const float *a, const uint16_t *w, size_t m, size_t n, size_t k, int accumulate, int threads) {
#ifdef SHORTGPT_ONEDNN
  size_t k2 = (k + 1) / 2;
  uint16_t *abf = (uint16_t *)aligned_alloc(64, round_up(m * k2 * 4, 64));
  if (!abf) return -1;
  convert_ctx c = {a, abf, m, k, k2};
  parallel(threads, convert_worker, &c);
  // k padded to even on both sides (zeros in A and W): oneDNN then sees dense rows (with an odd k
  // and a row stride of k + 1 its plain-weights path read the wrong rows).
  int status = onednn_gemm(out, abf, w, m, n, k2 * 2, accumulate, threads);
  free(abf);
  return status;
#else
  (void)out; (void)a; (void)w; (void)m; (void)n; (void)k; (void)accumulate; (void)threads;
  return -1;
#endif
}
#endif

// ---- Node-API glue ----------------------------------------------------------------------------

static napi_value throw_error(napi_env env, const char *message) {
  napi_throw_error(env, "ERR_SHORTGPT_CPU_BF16", message);
  return NULL;
}

static int get_f32(napi_env env, napi_value v, float **data, size_t *len) {
  napi_typedarray_type type;
  void *ptr;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok || type != napi_float32_array) return 0;
  *data = (float *)ptr;
  return 1;
}

static int get_u16(napi_env env, napi_value v, uint16_t **data, size_t *len) {
  napi_typedarray_type type;
  void *ptr;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok || type != napi_uint16_array) return 0;
  *data = (uint16_t *)ptr;
  return 1;
}

static int get_size(napi_env env, napi_value v, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0) || d != floor(d) || d > 9007199254740992.0) return 0;
  *out = (size_t)d;
  return 1;
}

#define ARGS(n) \
  size_t argc = n; napi_value argv[n]; \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < n) return throw_error(env, "expected " #n " arguments")

static int has_bf16(void) {
#if HAVE_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bf16");
#else
  return 0;
#endif
}

static napi_value js_features(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value obj, t;
  napi_create_object(env, &obj);
  int avx512f = 0, amx = 0;
#if HAVE_X86
  __builtin_cpu_init();
  avx512f = __builtin_cpu_supports("avx512f");
  unsigned int a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  amx = (d >> 22) & 1; // CPUID.(7,0):EDX[22] AMX-BF16: oneDNN's matmul uses it (this file's kernel does not)
#endif
  napi_get_boolean(env, avx512f, &t); napi_set_named_property(env, obj, "avx512f", t);
  napi_get_boolean(env, has_bf16(), &t); napi_set_named_property(env, obj, "avx512bf16", t);
  napi_get_boolean(env, amx, &t); napi_set_named_property(env, obj, "amxBf16", t);
  char library[64] = "native";
  const char *impl = "";
#ifdef SHORTGPT_ONEDNN
  if (gemm_uses_onednn) {
    onednn_version_string(library, sizeof library);
    impl = onednn.impl;
  }
#endif
  napi_create_string_utf8(env, library, NAPI_AUTO_LENGTH, &t); napi_set_named_property(env, obj, "gemm", t);
  napi_create_string_utf8(env, impl, NAPI_AUTO_LENGTH, &t); napi_set_named_property(env, obj, "gemmImpl", t);
  napi_get_boolean(env,
#ifdef SHORTGPT_ONEDNN
                   1,
#else
                   0,
#endif
                   &t);
  napi_set_named_property(env, obj, "onednnBuilt", t);
  return obj;
}

// useGemm("onednn" | "native"): the kernel for the layer GEMMs from now on (weights packed before
// keep the old layout: pack again). Returns the name now in use; "onednn" is refused when the
// build has no oneDNN or it cannot start.
static napi_value js_use_gemm(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value argv[1];
  char name[16] = "";
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], name, sizeof name, NULL) != napi_ok) return throw_error(env, "useGemm: expected \"onednn\" or \"native\"");
  if (strcmp(name, "native") == 0) gemm_uses_onednn = 0;
  else if (strcmp(name, "onednn") == 0) {
#ifdef SHORTGPT_ONEDNN
    if (!onednn_start()) return throw_error(env, "useGemm: oneDNN could not create its CPU engine");
    gemm_uses_onednn = 1;
#else
    return throw_error(env, "useGemm: this build has no oneDNN (install libdnnl-dev, then npm rebuild)");
#endif
  } else return throw_error(env, "useGemm: expected \"onednn\" or \"native\"");
  napi_value r;
  napi_create_string_utf8(env, gemm_uses_onednn ? "onednn" : "native", NAPI_AUTO_LENGTH, &r);
  return r;
}

// A weight part: fp32 values, or bf16 bits as stored (Uint16Array).
static int get_weight_part(napi_env env, napi_value v, const void **data, int *is_bf16, size_t *len) {
  napi_typedarray_type type;
  void *ptr;
  if (napi_get_typedarray_info(env, v, &type, len, &ptr, NULL, NULL) != napi_ok) return 0;
  if (type != napi_float32_array && type != napi_uint16_array) return 0;
  *data = ptr;
  *is_bf16 = type == napi_uint16_array;
  return 1;
}

static int get_threads(napi_env env, size_t argc, napi_value *argv, size_t index, size_t *threads) {
  *threads = 1;
  if (argc <= index) return 1;
  return get_size(env, argv[index], threads) && *threads >= 1;
}

// packWeights(parts, k[, threads]): the parts (rows_i, k) stacked and packed into a new array.
static napi_value js_pack_weights(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) return throw_error(env, "packWeights: expected (parts, k[, threads])");
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  size_t k, threads;
  if (!get_size(env, argv[1], &k) || k == 0) return throw_error(env, "packWeights: k must be a positive integer");
  if (!get_threads(env, argc, argv, 2, &threads)) return throw_error(env, "packWeights: threads must be a positive integer");
  uint32_t count;
  if (napi_get_array_length(env, argv[0], &count) != napi_ok || count == 0) return throw_error(env, "packWeights: expected an array of Float32Array or Uint16Array (bf16) parts");
  size_t n = 0;
  for (uint32_t i = 0; i < count; i++) {
    napi_value e; const void *p; int bf; size_t len;
    napi_get_element(env, argv[0], i, &e);
    if (!get_weight_part(env, e, &p, &bf, &len) || len % k != 0) return throw_error(env, "packWeights: every part must be a Float32Array or Uint16Array (bf16) of whole rows of k");
    n += len / k;
  }
#if HAVE_X86
  size_t k2 = (k + 1) / 2, length = packed_length(n, k);
  napi_value buffer, result;
  void *mem;
  if (napi_create_arraybuffer(env, length * 2, &mem, &buffer) != napi_ok) return throw_error(env, "packWeights: out of memory");
  memset(mem, 0, length * 2);
  size_t row = 0;
  for (uint32_t i = 0; i < count; i++) {
    napi_value e; const void *p = NULL; int bf = 0; size_t len = 0;
    napi_get_element(env, argv[0], i, &e);
    get_weight_part(env, e, &p, &bf, &len);
    pack_any((uint16_t *)mem, p, bf, row, len / k, k, k2, (int)threads);
    row += len / k;
  }
  memcpy((uint16_t *)mem + length - LAYOUT_TAG, layout_tag(), sizeof TAG_NATIVE);
  napi_create_typedarray(env, napi_uint16_array, length, buffer, 0, &result);
  return result;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

// packRows(dst, part, row0, k[, threads]): one part packed into rows row0.. of an array made by
// packedLength (zeros), so that a layer's weights can be packed one tensor at a time.
static napi_value js_pack_rows(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) return throw_error(env, "packRows: expected (dst, part, row0, k[, threads])");
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  uint16_t *dst; size_t ld, row0, k, threads, len; const void *p; int bf;
  if (!get_u16(env, argv[0], &dst, &ld)) return throw_error(env, "packRows: dst must be a Uint16Array");
  if (!get_weight_part(env, argv[1], &p, &bf, &len)) return throw_error(env, "packRows: the part must be a Float32Array or Uint16Array (bf16)");
  if (!get_size(env, argv[2], &row0) || !get_size(env, argv[3], &k) || k == 0 || len % k != 0) return throw_error(env, "packRows: row0 and k must be integers, k > 0, and the part whole rows of k");
  if (!get_threads(env, argc, argv, 4, &threads)) return throw_error(env, "packRows: threads must be a positive integer");
#if HAVE_X86
  size_t k2 = (k + 1) / 2, rows = len / k;
  // Whole panels of 16 rows (plain layout: the rows) of k2 pairs must fit (divided, not multiplied: no size_t overflow).
  if (ld < LAYOUT_TAG || (ld - LAYOUT_TAG) / (k2 * 2) < (gemm_uses_onednn ? row0 + rows : round_up(row0 + rows, PANEL))) return throw_error(env, "packRows: dst is too small for these rows");
  const uint16_t *tag = dst + ld - LAYOUT_TAG;
  int zeros = 1;
  for (int i = 0; i < LAYOUT_TAG; i++) zeros &= tag[i] == 0;
  if (!zeros && memcmp(tag, layout_tag(), sizeof TAG_NATIVE) != 0) return throw_error(env, "packRows: dst was packed for the other GEMM kernel (useGemm changed since): start from a new emptyPacked");
  pack_any(dst, p, bf, row0, rows, k, k2, (int)threads);
  memcpy(dst + ld - LAYOUT_TAG, layout_tag(), sizeof TAG_NATIVE);
  return NULL;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

static napi_value js_gemm(napi_env env, napi_callback_info info) {
  ARGS(8);
  float *out, *a; uint16_t *w; size_t lo, la, lw, m, n, k, threads; bool acc;
  if (!get_f32(env, argv[0], &out, &lo) || !get_f32(env, argv[1], &a, &la) || !get_u16(env, argv[2], &w, &lw)) return throw_error(env, "gemm: expected (Float32Array out, Float32Array a, Uint16Array packed, ...)");
  if (!get_size(env, argv[3], &m) || !get_size(env, argv[4], &n) || !get_size(env, argv[5], &k) || !get_size(env, argv[7], &threads) || threads < 1 || k == 0) return throw_error(env, "gemm: m, n, k, threads must be integers");
  if (napi_get_value_bool(env, argv[6], &acc) != napi_ok) return throw_error(env, "gemm: accumulate must be a boolean");
#if HAVE_X86
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  if (lo < m * n || la < m * k || lw < packed_length(n, k)) return throw_error(env, "gemm: an array is smaller than its dimensions");
  if (memcmp(w + lw - LAYOUT_TAG, layout_tag(), sizeof TAG_NATIVE) != 0) return throw_error(env, "gemm: the weights were packed for the other GEMM kernel, or not by packWeights/packRows (useGemm changed since?): pack them again");
  if (gemm_uses_onednn) {
    if (gemm_onednn_bf16(out, a, w, m, n, k, acc, (int)threads) != 0) return throw_error(env, "gemm: oneDNN's matmul failed (SHORTGPT_CPU_GEMM=native uses the built-in kernel)");
  } else if (gemm_bf16(out, a, w, m, n, k, acc, (int)threads) != 0) return throw_error(env, "gemm: out of memory");
  return NULL;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

static napi_value js_rms_norm(napi_env env, napi_callback_info info) {
  ARGS(6);
  float *out, *x, *wt; size_t lo, lx, lw, rows, dim; double eps;
  if (!get_f32(env, argv[0], &out, &lo) || !get_f32(env, argv[1], &x, &lx) || !get_f32(env, argv[2], &wt, &lw)) return throw_error(env, "rmsNorm: expected Float32Arrays");
  if (!get_size(env, argv[3], &rows) || !get_size(env, argv[4], &dim) || napi_get_value_double(env, argv[5], &eps) != napi_ok) return throw_error(env, "rmsNorm: bad dimensions");
  if (lo < rows * dim || lx < rows * dim || lw < dim) return throw_error(env, "rmsNorm: an array is smaller than its dimensions");
#if HAVE_X86
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  rms_norm(out, x, wt, rows, dim, (float)eps);
  return NULL;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

// swiglu / geluGate(out, gu, rows, hidden, threads): out = act(gu[:, :hidden]) * gu[:, hidden:].
static napi_value gated_activation(napi_env env, napi_callback_info info, const char *name, int act) {
  ARGS(5);
  float *out, *gu; size_t lo, lg, rows, hidden, threads;
  if (!get_f32(env, argv[0], &out, &lo) || !get_f32(env, argv[1], &gu, &lg)) return throw_error(env, name);
  if (!get_size(env, argv[2], &rows) || !get_size(env, argv[3], &hidden) || !get_size(env, argv[4], &threads) || threads < 1) return throw_error(env, name);
  if (lo < rows * hidden || lg < rows * hidden * 2) return throw_error(env, name);
#if HAVE_X86
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  swiglu_ctx c = {out, gu, rows, hidden, (enum gate_act)act};
  parallel((int)threads, swiglu_worker, &c);
  return NULL;
#else
  (void)act;
  return throw_error(env, "not an x86-64 build");
#endif
}

static napi_value js_swiglu(napi_env env, napi_callback_info info) {
  return gated_activation(env, info, "swiglu: expected (Float32Array out, Float32Array gu, rows, hidden, threads) with out >= rows x hidden and gu >= rows x 2 hidden", 0);
}

static napi_value js_gelu_gate(napi_env env, napi_callback_info info) {
  return gated_activation(env, info, "geluGate: expected (Float32Array out, Float32Array gu, rows, hidden, threads) with out >= rows x hidden and gu >= rows x 2 hidden", 1);
}

static napi_value js_add_rms_norm(napi_env env, napi_callback_info info) {
  ARGS(6);
  float *y, *x, *wt; size_t ly, lx, lw, rows, dim; double eps;
  if (!get_f32(env, argv[0], &y, &ly) || !get_f32(env, argv[1], &x, &lx) || !get_f32(env, argv[2], &wt, &lw)) return throw_error(env, "addRmsNorm: expected Float32Arrays");
  if (!get_size(env, argv[3], &rows) || !get_size(env, argv[4], &dim) || napi_get_value_double(env, argv[5], &eps) != napi_ok) return throw_error(env, "addRmsNorm: bad dimensions");
  if (ly < rows * dim || lx < rows * dim || lw < dim) return throw_error(env, "addRmsNorm: an array is smaller than its dimensions");
#if HAVE_X86
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  add_rms_norm(y, x, wt, rows, dim, (float)eps);
  return NULL;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

static napi_value js_head_rms_norm(napi_env env, napi_callback_info info) {
  ARGS(8);
  float *qkv, *qn, *kn; size_t lq, lqn, lkn, rows, nh, nkv, d; double eps;
  if (!get_f32(env, argv[0], &qkv, &lq) || !get_f32(env, argv[1], &qn, &lqn) || !get_f32(env, argv[2], &kn, &lkn)) return throw_error(env, "headRmsNorm: expected Float32Arrays");
  if (!get_size(env, argv[3], &rows) || !get_size(env, argv[4], &nh) || !get_size(env, argv[5], &nkv) || !get_size(env, argv[6], &d) || napi_get_value_double(env, argv[7], &eps) != napi_ok) return throw_error(env, "headRmsNorm: bad dimensions");
  if (lq < rows * (nh + 2 * nkv) * d || lqn < d || lkn < d) return throw_error(env, "headRmsNorm: an array is smaller than its dimensions");
#if HAVE_X86
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  head_rms_norm(qkv, qn, kn, rows, nh, nkv, d, (float)eps);
  return NULL;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

// A number property of an options object; absent or undefined leaves *out as it was.
static int get_option(napi_env env, napi_value obj, const char *key, double *out) {
  bool has;
  if (napi_has_named_property(env, obj, key, &has) != napi_ok) return 0;
  if (!has) return 1;
  napi_value v;
  napi_valuetype t;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_undefined) return 1;
  return t == napi_number && napi_get_value_double(env, v, out) == napi_ok;
}

static int get_i32_or_null(napi_env env, napi_value v, const int32_t **data, size_t need) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t == napi_null || t == napi_undefined) { *data = NULL; return 1; }
  napi_typedarray_type type;
  size_t len;
  void *ptr;
  if (napi_get_typedarray_info(env, v, &type, &len, &ptr, NULL, NULL) != napi_ok || type != napi_int32_array || len < need) return 0;
  *data = (const int32_t *)ptr;
  return 1;
}

static napi_value js_attention(napi_env env, napi_callback_info info) {
  // positions and branches may be left out (plain windows): missing arguments read as undefined.
  size_t argc = 13; napi_value argv[13];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 10) return throw_error(env, "expected 10 to 13 arguments");
  float *out, *qkv, *cs, *sn; size_t lo, lq, lc, ls, nw, T, nh, nkv, d, threads;
  if (!get_f32(env, argv[0], &out, &lo) || !get_f32(env, argv[1], &qkv, &lq) || !get_f32(env, argv[7], &cs, &lc) || !get_f32(env, argv[8], &sn, &ls)) return throw_error(env, "attention: expected Float32Arrays");
  if (!get_size(env, argv[2], &nw) || !get_size(env, argv[3], &T) || !get_size(env, argv[4], &nh) || !get_size(env, argv[5], &nkv) || !get_size(env, argv[6], &d) || !get_size(env, argv[9], &threads) || threads < 1)
    return throw_error(env, "attention: bad dimensions");
  if (nkv == 0 || nh % nkv != 0 || d % 2 != 0 || T == 0) return throw_error(env, "attention: nHeads must be a multiple of nKvHeads and headDim even");
  if (lo < nw * T * nh * d || lq < nw * T * (nh + 2 * nkv) * d || lc < T * d / 2 || ls < T * d / 2) return throw_error(env, "attention: an array is smaller than its dimensions");
#if HAVE_X86
  if (!has_bf16()) return throw_error(env, "this CPU has no AVX512_BF16");
  const int32_t *positions, *branches;
  if (!get_i32_or_null(env, argv[10], &positions, nw * T) || !get_i32_or_null(env, argv[11], &branches, nw * T)) return throw_error(env, "attention: positions and branches must be Int32Arrays of one value per token, or null");
  if (positions)
    for (size_t i = 0; i < nw * T; i++)
      if (positions[i] < 0 || (size_t)positions[i] >= T) return throw_error(env, "attention: a position is outside 0..seqLen-1");
  // options { scale?, softcap?, window? }: undefined or null means the plain Llama attention.
  double scale = 1.0 / sqrt((double)d), softcap = 0, window = 0;
  napi_valuetype ot;
  napi_typeof(env, argv[12], &ot);
  if (ot != napi_undefined && ot != napi_null) {
    if (ot != napi_object || !get_option(env, argv[12], "scale", &scale) || !get_option(env, argv[12], "softcap", &softcap) || !get_option(env, argv[12], "window", &window))
      return throw_error(env, "attention: options must be an object of numbers { scale?, softcap?, window? }");
    if (!(scale > 0) || !isfinite(scale) || !(softcap >= 0) || !isfinite(softcap) || !(window >= 0) || window != floor(window) || window > 9007199254740992.0)
      return throw_error(env, "attention: options scale must be positive, softcap positive (0: none) and window a whole number of positions (0: none)");
  }
  attn_ctx c = {out, qkv, nw, T, nh, nkv, d, cs, sn, 0, positions, branches, (float)scale, (float)softcap, (size_t)window};
  parallel((int)threads, rope_worker, &c);
  parallel((int)threads, attention_worker, &c);
  if (c.failed) return throw_error(env, "attention: out of memory");
  return NULL;
#else
  return throw_error(env, "not an x86-64 build");
#endif
}

static napi_value js_packed_length(napi_env env, napi_callback_info info) {
  ARGS(2);
  size_t n, k;
  if (!get_size(env, argv[0], &n) || !get_size(env, argv[1], &k)) return throw_error(env, "packedLength: n and k must be integers");
  napi_value r;
#if HAVE_X86
  napi_create_double(env, (double)packed_length(n, k), &r);
#else
  napi_create_double(env, 0, &r);
#endif
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
#ifdef SHORTGPT_ONEDNN
  // oneDNN by default when it starts: its code for this CPU (AMX where present) is the faster one.
  const char *choice = getenv("SHORTGPT_CPU_GEMM");
  if (!(choice && strcmp(choice, "native") == 0) && has_bf16() && onednn_start()) gemm_uses_onednn = 1;
#endif
  napi_property_descriptor props[] = {
      {"useGemm", NULL, js_use_gemm, NULL, NULL, NULL, napi_default, NULL},
      {"packedLength", NULL, js_packed_length, NULL, NULL, NULL, napi_default, NULL},
      {"features", NULL, js_features, NULL, NULL, NULL, napi_default, NULL},
      {"packWeights", NULL, js_pack_weights, NULL, NULL, NULL, napi_default, NULL},
      {"packRows", NULL, js_pack_rows, NULL, NULL, NULL, napi_default, NULL},
      {"gemm", NULL, js_gemm, NULL, NULL, NULL, napi_default, NULL},
      {"rmsNorm", NULL, js_rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"swiglu", NULL, js_swiglu, NULL, NULL, NULL, napi_default, NULL},
      {"geluGate", NULL, js_gelu_gate, NULL, NULL, NULL, napi_default, NULL},
      {"addRmsNorm", NULL, js_add_rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"headRmsNorm", NULL, js_head_rms_norm, NULL, NULL, NULL, napi_default, NULL},
      {"attention", NULL, js_attention, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

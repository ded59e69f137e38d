// Causal attention on the device for the cuda backend: batched cuBLAS GEMMs around a masked
// softmax (kernelSource.ts), by blocks of queries so that the causal mask costs no GEMM work or
// score memory beyond each block's diagonal; or the fused (flash) kernel. Both paths, with or
// without a key/value cache, form scores by the same rule (ScoreRule: Gemma's scale, soft cap and
// sliding window, LongRoPE's factor).

import type { LayerShape } from "../backend.js";
import { CUBLAS_OP_N, CUBLAS_OP_T, CUDA_R_32F, type CudaApi, type DevicePtr, type KernelArg } from "./api.js";
import { FLASH_HEAD_DIMS, type KernelName, SOFTMAX_PER_THREAD, SOFTMAX_SLOTS } from "./kernelSource.js";

/** What attention needs of the backend: the API, the GEMM input type, scratch memory, launches. */
export interface AttentionContext {
  api: CudaApi;
  ginType: number;
  ginBytes: number;
  /** Most bytes of scores at once; windows are chunked to stay under it. */
  scoresLimit: number;
  /** Queries per block. */
  attentionBlock: number;
  /** Whether the fused kernel may run (bf16 GEMM inputs and not turned off). */
  flash: boolean;
  scratch(slot: string, bytes: number): DevicePtr;
  launch(kernel: KernelName, grid: [number, number?, number?], block: number, args: KernelArg[]): void;
  countGemms(n: number): void;
}

/**
 * How a layer's attention scores are formed and masked beyond causality, as the kernels take it:
 * score = softcap(scale * (q . k)) for keys within the sliding window. 0 means none for softcap
 * and window. The kernels' handling of it is checked by compiling, by the stand-in's launch log
 * and by running the kernels on the CPU, not yet on a GPU (see kernelSource.ts; on a device,
 * bench/gpu/familyChecks.ts compares the results with the reference).
 */
export interface ScoreRule {
  scale: number;
  softcap: number;
  window: number;
}

/** The largest window the kernels' int takes; any window at least this long hides nothing. */
const NO_WINDOW_LIMIT = 2 ** 31 - 1;

/** A layer shape's score rule (see LayerShape's attnScale, attnSoftcap, slidingWindow, ropeAttentionFactor). */
export function scoreRule(shape: LayerShape): ScoreRule {
  // LongRoPE multiplies q and k by the factor after RoPE; they meet only in q . k, so its square
  // scales the score instead: the same product, without rounding q and k again to bf16.
  const factor = shape.ropeAttentionFactor ?? 1;
  const window = shape.slidingWindow;
  return {
    scale: (shape.attnScale ?? 1 / Math.sqrt(shape.headDim)) * factor * factor,
    softcap: shape.attnSoftcap ?? 0,
    // Positions are integers: distance >= w hides exactly what distance >= ceil(w) hides.
    window: window === undefined ? 0 : Math.min(Math.ceil(window), NO_WINDOW_LIMIT),
  };
}

/** The score rule's kernel arguments, in the order the softmax and flash kernels take them after scale. */
function ruleArgs(rule: ScoreRule): KernelArg[] {
  return [{ f32: rule.softcap }, { i32: rule.window }];
}

/** Head-major Q (window, head, t, d), K and V (window, kvHead, t, d); branches per token (packed windows) or none. Output: rows (window * seqLen + t, head * d) as GEMM inputs. */
export interface AttentionInputs {
  qh: DevicePtr;
  kh: DevicePtr;
  vh: DevicePtr;
  out: DevicePtr;
  branches: DevicePtr | undefined;
  /** Packed windows: each token's position (the sliding window measures by them), else undefined. */
  positions: DevicePtr | undefined;
  rule: ScoreRule;
  nWindows: number;
  seqLen: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
}

/** The softmax variant and block size for rows of `keys` scores: 128 threads with the fewest slots that cover the row, else more threads with 32. */
export function softmaxLaunch(keys: number): { kernel: KernelName; block: number } {
  for (const slots of SOFTMAX_SLOTS) if (keys <= slots * 128) return { kernel: `attention_softmax_${slots}`, block: 128 };
  return { kernel: "attention_softmax_32", block: Math.ceil(keys / SOFTMAX_PER_THREAD / 32) * 32 };
}

/**
 * The fused kernel for this head size, when it applies: bf16, no packed branches, a compiled head
 * size; its _rule variant when the scores are soft-capped or windowed (the plain one compiles
 * those away and keeps fewer registers).
 */
export function flashKernel(ctx: Pick<AttentionContext, "flash">, headDim: number, packed: boolean, rule?: ScoreRule): KernelName | undefined {
  if (!ctx.flash || packed || !(FLASH_HEAD_DIMS as readonly number[]).includes(headDim)) return undefined;
  const masked = rule !== undefined && (rule.softcap > 0 || rule.window > 0);
  return `flash_attention_${headDim}${masked ? "_rule" : ""}` as KernelName;
}

export function causalAttention(ctx: AttentionContext, x: AttentionInputs): void {
  const flash = flashKernel(ctx, x.headDim, x.branches !== undefined, x.rule);
  if (flash) {
    const { nWindows, seqLen, nHeads, nKvHeads } = x;
    ctx.launch(flash, [Math.ceil(seqLen / 64), nHeads, nWindows], 128, [
      { ptr: x.qh }, { ptr: x.kh }, { ptr: x.vh }, { ptr: x.out }, { i32: seqLen }, { i32: seqLen }, { i32: seqLen }, { i32: 0 }, { i32: nHeads }, { i32: nKvHeads }, { f32: x.rule.scale }, ...ruleArgs(x.rule),
    ]);
    return;
  }
  const oh = ctx.scratch("oh", x.nWindows * x.seqLen * x.nHeads * x.headDim * ctx.ginBytes);
  gemmAttention(ctx, x, oh);
  const n = x.nWindows * x.seqLen * x.nHeads * x.headDim;
  ctx.launch("heads_to_rows", [Math.max(1, Math.min(Math.ceil(n / 256), 132 * 32))], 256, [{ ptr: oh }, { ptr: x.out }, { i32: x.seqLen }, { i32: x.nHeads }, { i32: x.headDim }, { i64: n }]);
}

/** Attention as batched GEMMs around the masked softmax, output head-major into oh (window, head, t, d). */
function gemmAttention(ctx: AttentionContext, x: AttentionInputs, oh: DevicePtr): void {
  const { qh, kh, vh, branches, positions, nWindows, seqLen, nHeads, nKvHeads, headDim } = x;
  const kvDim = nKvHeads * headDim;
  const group = nHeads / nKvHeads;
  const ptr = (p: DevicePtr | null | undefined): KernelArg => ({ ptr: p ?? null });
  const i32 = (v: number): KernelArg => ({ i32: v });
  const f32 = (v: number): KernelArg => ({ f32: v });
  // Attention, by blocks of queries: block [q0, q1) needs only keys [0, q1), so the causal mask
  // costs no GEMM work or score memory beyond the block's diagonal. For each block and each query
  // head j of a KV group, over a chunk of windows (batch b = window * nKvHeads + kvHead):
  //   scores[b][i][s] = sum_d Q[head][q0 + i][d] K[kvHead][s][d]   (fp32, s < q1)
  //   softmax in place as gin_t, then O[head][q0 + i][d] = sum_s P[b][i][s] V[kvHead][s][d].
  // Head-major layouts: Q (window, head, t, d), K and V (window, kvHead, t, d), O as Q.
  const queryBlock = Math.min(seqLen, ctx.attentionBlock);
  // Score bytes per window for the largest block: a whole-window block holds every query head's rows.
  const blockScores = (queryBlock === seqLen ? nHeads : nKvHeads) * queryBlock * seqLen * 4;
  const perChunk = Math.max(1, Math.min(nWindows, Math.floor(ctx.scoresLimit / blockScores)));
  const scores = ctx.scratch("scores", perChunk * blockScores);
  const hd = headDim;
  for (let w0 = 0; w0 < nWindows; w0 += perChunk) {
    const cw = Math.min(perChunk, nWindows - w0);
    const batches = cw * nKvHeads;
    const kAt = kh + BigInt(w0 * seqLen * kvDim * ctx.ginBytes);
    const vAt = vh + BigInt(w0 * seqLen * kvDim * ctx.ginBytes);
    const branchesAt = branches === undefined ? null : branches + BigInt(w0 * seqLen * 4);
    const positionsAt = positions === undefined ? null : positions + BigInt(w0 * seqLen * 4);
    for (let q0 = 0; q0 < seqLen; q0 += queryBlock) {
      const nq = Math.min(queryBlock, seqLen - q0);
      const keys = q0 + nq;
      const pLd = ctx.ginBytes === 2 ? 2 * keys : keys;
      const softmax = softmaxLaunch(keys);
      // A block of the whole window takes a KV group's query heads in one call: their rows are
      // contiguous (group * seqLen of them per batch); a smaller block needs one call per head.
      const fused = nq === seqLen;
      const heads = fused ? 1 : group;
      const queryRows = fused ? group * seqLen : nq;
      for (let j = 0; j < heads; j++) {
        // Head kvHead * group + j of window w0 + b / nKvHeads, from its row q0; the next batch's heads are group * seqLen rows on.
        const qAt = qh + BigInt(((w0 * nHeads + j) * seqLen + q0) * hd * ctx.ginBytes);
        const oAt = oh + BigInt(((w0 * nHeads + j) * seqLen + q0) * hd * ctx.ginBytes);
        ctx.api.gemmStridedBatched(
          { transA: CUBLAS_OP_T, transB: CUBLAS_OP_N, m: keys, n: queryRows, k: hd, a: kAt, aType: ctx.ginType, lda: hd, b: qAt, bType: ctx.ginType, ldb: hd, beta: 0, c: scores, cType: CUDA_R_32F, ldc: keys },
          { strideA: seqLen * hd, strideB: group * seqLen * hd, strideC: queryRows * keys, count: batches },
        );
        // Fused, score row r is (batch * group + j) * seqLen + t: "batches" of seqLen rows, nHeads of them per window.
        ctx.launch(softmax.kernel, [batches * queryRows], softmax.block, [
          ptr(scores), i32(keys), i32(fused ? seqLen : nq), i32(q0), i32(fused ? nHeads : nKvHeads), f32(x.rule.scale), ptr(branchesAt), i32(seqLen), i32(pLd),
          ...ruleArgs(x.rule), ptr(positionsAt),
        ]);
        ctx.api.gemmStridedBatched(
          { transA: CUBLAS_OP_N, transB: CUBLAS_OP_N, m: hd, n: queryRows, k: keys, a: vAt, aType: ctx.ginType, lda: hd, b: scores, bType: ctx.ginType, ldb: pLd, beta: 0, c: oAt, cType: ctx.ginType, ldc: hd },
          { strideA: seqLen * hd, strideB: queryRows * pLd, strideC: group * seqLen * hd, count: batches },
        );
        ctx.countGemms(2);
      }
    }
  }
}

/** One sequence's new tokens against a key/value cache: Q (head, n, d); caches (kvHead, capacity, d) holding positions 0..start+n-1. */
export interface CachedAttentionInputs {
  qh: DevicePtr;
  kCache: DevicePtr;
  vCache: DevicePtr;
  capacity: number;
  /** Position of the first new token (keys before it are the cache's). */
  start: number;
  n: number;
  out: DevicePtr;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  rule: ScoreRule;
}

/** Decoding: each new token attends to the cached keys and the new ones up to its own position. */
export function cachedAttention(ctx: AttentionContext, x: CachedAttentionInputs): void {
  const { qh, kCache, vCache, capacity, start, n, nHeads, nKvHeads, headDim: hd } = x;
  const keys = start + n;
  const flash = flashKernel(ctx, hd, false, x.rule);
  if (flash) {
    ctx.launch(flash, [Math.ceil(n / 64), nHeads, 1], 128, [
      { ptr: qh }, { ptr: kCache }, { ptr: vCache }, { ptr: x.out }, { i32: n }, { i32: keys }, { i32: capacity }, { i32: start }, { i32: nHeads }, { i32: nKvHeads }, { f32: x.rule.scale }, ...ruleArgs(x.rule),
    ]);
    return;
  }
  // Per KV head (a batch): its group's query rows (j, t) are contiguous, group * n of them.
  const group = nHeads / nKvHeads;
  const rows = group * n;
  const pLd = ctx.ginBytes === 2 ? 2 * keys : keys;
  const scores = ctx.scratch("scores", nKvHeads * rows * keys * 4);
  const oh = ctx.scratch("oh", nHeads * n * hd * ctx.ginBytes);
  ctx.api.gemmStridedBatched(
    { transA: CUBLAS_OP_T, transB: CUBLAS_OP_N, m: keys, n: rows, k: hd, a: kCache, aType: ctx.ginType, lda: hd, b: qh, bType: ctx.ginType, ldb: hd, beta: 0, c: scores, cType: CUDA_R_32F, ldc: keys },
    { strideA: capacity * hd, strideB: rows * hd, strideC: rows * keys, count: nKvHeads },
  );
  // Score row r: batch r / n (one per query head), query start + r % n; a token's position is its index in the cache.
  const softmax = softmaxLaunch(keys);
  ctx.launch(softmax.kernel, [nKvHeads * rows], softmax.block, [
    { ptr: scores }, { i32: keys }, { i32: n }, { i32: start }, { i32: nHeads }, { f32: x.rule.scale }, { ptr: null }, { i32: keys }, { i32: pLd }, ...ruleArgs(x.rule), { ptr: null },
  ]);
  ctx.api.gemmStridedBatched(
    { transA: CUBLAS_OP_N, transB: CUBLAS_OP_N, m: hd, n: rows, k: keys, a: vCache, aType: ctx.ginType, lda: hd, b: scores, bType: ctx.ginType, ldb: pLd, beta: 0, c: oh, cType: ctx.ginType, ldc: hd },
    { strideA: capacity * hd, strideB: rows * pLd, strideC: rows * hd, count: nKvHeads },
  );
  ctx.countGemms(2);
  const total = n * nHeads * hd;
  ctx.launch("heads_to_rows", [Math.max(1, Math.min(Math.ceil(total / 256), 132 * 32))], 256, [{ ptr: oh }, { ptr: x.out }, { i32: n }, { i32: nHeads }, { i32: hd }, { i64: total }]);
}

// Causal attention on the device for the cuda backend: batched cuBLAS GEMMs around a masked
// softmax (kernelSource.ts), by blocks of queries so that the causal mask costs no GEMM work or
// score memory beyond each block's diagonal.

import { CUBLAS_OP_N, CUBLAS_OP_T, CUDA_R_32F, type CudaApi, type DevicePtr, type KernelArg } from "./api.js";
import { type KernelName, SOFTMAX_PER_THREAD, SOFTMAX_SLOTS } from "./kernelSource.js";

/** What attention needs of the backend: the API, the GEMM input type, scratch memory, launches. */
export interface AttentionContext {
  api: CudaApi;
  ginType: number;
  ginBytes: number;
  /** Most bytes of scores at once; windows are chunked to stay under it. */
  scoresLimit: number;
  /** Queries per block. */
  attentionBlock: number;
  scratch(slot: string, bytes: number): DevicePtr;
  launch(kernel: KernelName, grid: [number, number?], block: number, args: KernelArg[]): void;
  countGemms(n: number): void;
}

/** Head-major Q (window, head, t, d), K and V (window, kvHead, t, d), O as Q; branches per token (packed windows) or none. */
export interface AttentionInputs {
  qh: DevicePtr;
  kh: DevicePtr;
  vh: DevicePtr;
  oh: DevicePtr;
  branches: DevicePtr | undefined;
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

export function causalAttention(ctx: AttentionContext, x: AttentionInputs): void {
  const { qh, kh, vh, oh, branches, nWindows, seqLen, nHeads, nKvHeads, headDim } = x;
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
  const scale = 1 / Math.sqrt(headDim);
  const hd = headDim;
  for (let w0 = 0; w0 < nWindows; w0 += perChunk) {
    const cw = Math.min(perChunk, nWindows - w0);
    const batches = cw * nKvHeads;
    const kAt = kh + BigInt(w0 * seqLen * kvDim * ctx.ginBytes);
    const vAt = vh + BigInt(w0 * seqLen * kvDim * ctx.ginBytes);
    const branchesAt = branches === undefined ? null : branches + BigInt(w0 * seqLen * 4);
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
          ptr(scores), i32(keys), i32(fused ? seqLen : nq), i32(q0), i32(fused ? nHeads : nKvHeads), f32(scale), ptr(branchesAt), i32(seqLen), i32(pLd),
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

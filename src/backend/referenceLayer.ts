// One Llama decoder layer on the reference kernels, shared by the in-memory model (with a
// key/value cache, for generation) and the reference backend (fresh windows).

import type { LayerShape, LayerWeightsF32, PackedLayout } from "./backend.js";
import { addInPlace, causalAttention, geluTanhMul, matmul, rmsNorm, ropeHalf, siluMul } from "./reference.js";

/** rows x cols += bias (cols) on every row. */
function addRowBias(x: Float64Array, bias: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) x[r * cols + c]! += bias[c]!;
}

/**
 * x: (T, C) float64 at positions startPos..startPos+T-1, updated in place:
 *   h = x + wo @ attn(rope(wq @ rms(x)), rope(wk @ rms(x)), wv @ rms(x)); x = h + down(silu(gate @ rms(h)) * (up @ rms(h))).
 * keys, values: (>= startPos+T, kvDim); rows startPos.. are written here, rows before are the cache.
 * invFreq: RoPE inverse frequencies (headDim/2).
 * layout: this window's packed sequences (startPos 0), see PackedLayout.
 */
export function referenceDecoderLayer(
  x: Float64Array, T: number, startPos: number, w: LayerWeightsF32, shape: LayerShape,
  keys: Float64Array, values: Float64Array, invFreq: Float64Array, layout?: PackedLayout,
): void {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = shape;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const xn = new Float64Array(T * dim);
  const q = new Float64Array(T * qDim);
  const k = keys.subarray(startPos * kvDim, (startPos + T) * kvDim);
  const v = values.subarray(startPos * kvDim, (startPos + T) * kvDim);
  const att = new Float64Array(T * qDim);
  const proj = new Float64Array(T * dim);
  const gate = new Float64Array(T * hiddenDim);
  const up = new Float64Array(T * hiddenDim);
  const scores = new Float64Array(startPos + T);
  // Attention block
  rmsNorm(xn, x, w.attnNorm, T, dim, normEps);
  matmul(q, xn, w.wq, T, dim, qDim);
  matmul(k, xn, w.wk, T, dim, kvDim);
  matmul(v, xn, w.wv, T, dim, kvDim);
  if (shape.qkvBias) {
    addRowBias(q, w.bq!, T, qDim);
    addRowBias(k, w.bk!, T, kvDim);
    addRowBias(v, w.bv!, T, kvDim);
  }
  if (shape.qkNorm) {
    // Each head's vector is one row of headDim: RMSNorm in place.
    rmsNorm(q, q, w.qNorm!, T * nHeads, headDim, normEps);
    rmsNorm(k, k, w.kNorm!, T * nKvHeads, headDim, normEps);
  }
  ropeHalf(q, T, nHeads, headDim, startPos, invFreq, layout?.positions);
  ropeHalf(k, T, nKvHeads, headDim, startPos, invFreq, layout?.positions);
  causalAttention(att, q, keys, values, scores, T, startPos, nHeads, nKvHeads, headDim, layout?.branches);
  matmul(proj, att, w.wo, T, qDim, dim);
  addInPlace(x, proj, T * dim);
  // MLP block
  rmsNorm(xn, x, w.ffnNorm, T, dim, normEps);
  matmul(gate, xn, w.wGate, T, dim, hiddenDim);
  matmul(up, xn, w.wUp, T, dim, hiddenDim);
  if (shape.activation === "gelu_tanh") geluTanhMul(gate, up, T * hiddenDim);
  else siluMul(gate, up, T * hiddenDim);
  matmul(proj, gate, w.wDown, T, hiddenDim, dim);
  addInPlace(x, proj, T * dim);
}

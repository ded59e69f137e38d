// One Llama decoder layer on the reference kernels, shared by the in-memory model (with a
// key/value cache, for generation) and the reference backend (fresh windows).

import type { LayerShape, LayerWeightsF32, PackedLayout } from "./backend.js";
import { activate, addInPlace, causalAttention, layerNorm, matmul, rmsNorm, ropeHalf } from "./reference.js";

/**
 * Optional views of a layer's internals while it runs (calibration statistics for width pruning):
 * each callback gets (T, width) float64 rows valid only during the call.
 */
export interface LayerProbe {
  /** The residual stream entering the MLP block (after attention), (T, dim). */
  mlpInput?(h: Float64Array): void;
  /** The gated activation entering the down projection, act(gate) * up, (T, hiddenDim). */
  gatedActivation?(inner: Float64Array): void;
}

/** x *= factor over n elements. */
function scaleInPlace(x: Float64Array, n: number, factor: number): void {
  for (let i = 0; i < n; i++) x[i]! *= factor;
}

/** rows x cols += bias (cols) on every row. */
function addRowBias(x: Float64Array, bias: Float32Array, rows: number, cols: number): void {
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) x[r * cols + c]! += bias[c]!;
}

/**
 * x: (T, C) float64 at positions startPos..startPos+T-1, updated in place:
 *   h = x + wo @ attn(rope(wq @ norm(x)), rope(wk @ norm(x)), wv @ norm(x)); x = h + mlp(norm(h)),
 *   mlp(y) = down(act(gate @ y) * (up @ y)), or down(act(up @ y)) for a plain MLP; norm = RMSNorm or
 *   LayerNorm, biases and RoPE as the shape's flags say (see LayerShape); with postNorms (Gemma 2/3)
 *   the attention and MLP outputs are RMS-normed before each residual add.
 * keys, values: (>= startPos+T, kvDim); rows startPos.. are written here, rows before are the cache.
 * invFreq: RoPE inverse frequencies (headDim/2).
 * layout: this window's packed sequences (startPos 0), see PackedLayout.
 * probe: views of the MLP's input and gated activation (see LayerProbe).
 */
export function referenceDecoderLayer(
  x: Float64Array, T: number, startPos: number, w: LayerWeightsF32, shape: LayerShape,
  keys: Float64Array, values: Float64Array, invFreq: Float64Array, layout?: PackedLayout, probe?: LayerProbe,
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
  const up = new Float64Array(T * hiddenDim);
  const scores = new Float64Array(startPos + T);
  const norm = (out: Float64Array, input: Float64Array, weight: Float32Array, bias: Float32Array | undefined): void => {
    if (shape.layerNorm) layerNorm(out, input, weight, bias!, T, dim, normEps);
    else rmsNorm(out, input, weight, T, dim, normEps);
  };
  // Attention block
  norm(xn, x, w.attnNorm, w.attnNormBias);
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
  if (!shape.noRope) {
    ropeHalf(q, T, nHeads, headDim, startPos, invFreq, layout?.positions);
    ropeHalf(k, T, nKvHeads, headDim, startPos, invFreq, layout?.positions);
  }
  if (shape.ropeAttentionFactor !== undefined) {
    scaleInPlace(q, T * qDim, shape.ropeAttentionFactor);
    scaleInPlace(k, T * kvDim, shape.ropeAttentionFactor);
  }
  causalAttention(att, q, keys, values, scores, T, startPos, nHeads, nKvHeads, headDim, layout?.branches, {
    scale: shape.attnScale, softcap: shape.attnSoftcap, window: shape.slidingWindow, positions: layout?.positions,
  });
  matmul(proj, att, w.wo, T, qDim, dim);
  if (shape.outputBiases) addRowBias(proj, w.bo!, T, dim);
  if (shape.postNorms) rmsNorm(proj, proj, w.attnPostNorm!, T, dim, normEps);
  addInPlace(x, proj, T * dim);
  // MLP block
  probe?.mlpInput?.(x);
  norm(xn, x, w.ffnNorm, w.ffnNormBias);
  matmul(up, xn, w.wUp, T, dim, hiddenDim);
  if (shape.outputBiases) addRowBias(up, w.bUp!, T, hiddenDim);
  let inner = up;
  if (shape.plainMlp) {
    activate(up, T * hiddenDim, shape.activation ?? "silu");
  } else {
    inner = new Float64Array(T * hiddenDim);
    matmul(inner, xn, w.wGate!, T, dim, hiddenDim);
    activate(inner, T * hiddenDim, shape.activation ?? "silu", up);
  }
  probe?.gatedActivation?.(inner);
  matmul(proj, inner, w.wDown, T, hiddenDim, dim);
  if (shape.outputBiases) addRowBias(proj, w.bDown!, T, dim);
  if (shape.postNorms) rmsNorm(proj, proj, w.ffnPostNorm!, T, dim, normEps);
  addInPlace(x, proj, T * dim);
}

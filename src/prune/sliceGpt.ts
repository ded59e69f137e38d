// SliceGPT-style embedding-dimension deletion (Ashkboos et al., 2024) with one global rotation:
// fold every RMSNorm's weight into the linears that read it, rotate the residual stream onto the
// principal axes Q of the calibration covariance (embedding E Q, readers W diag(w) Q, writers
// Q^T W, head C diag(w_final) Q) and keep the first d' axes. A weightless RMSNorm commutes with an
// orthogonal Q, so with d' = d the model computes the same function.
//
// How it differs from the paper: SliceGPT rotates each layer by its own Q_l and puts Q_l^T Q_{l+1}
// on the residual shortcuts, which no plain Llama checkpoint can hold; one Q for the whole stream
// (PCA of every norm's input pooled) keeps a normal LlamaForCausalLM that transformers loads. The
// paper also computes each Q_l on the already-sliced model layer by layer; this is one pass.
//
// RMSNorm over d' dims: HF's norm divides by sqrt(|x'|^2 / d'), the original by sqrt(|x|^2 / d).
// When the kept axes hold most of the energy (|x'| ~ |x|), the sliced norm's output is too small
// by sqrt(d'/d); every norm weight is therefore set to sqrt(d/d'), as the paper's RMSN divides by
// the original width. (eps then acts as eps * d'/d, a negligible change.)
// The classifier is untied (it carries the final norm's weight, the embedding does not).

import { OptionError } from "../errors.js";
import type { WidthStats } from "../metrics/widthStats.js";
import type { LlamaConfig, LlamaLayerWeights, LlamaWeights } from "../models/llama.js";
import { symmetricEigen } from "./symmetricEigen.js";
import { hfTensorsOf, layerParameterCount, llamaParameterCount, type WidthPrunedModel } from "./widthModel.js";

/**
 * The hidden size d' whose (untied) model has the parameters closest to the model without
 * `layers` whole layers, among the multiples of the head count: transformers' LlamaConfig refuses
 * a hidden_size that is not a multiple of num_attention_heads, even with head_dim set.
 */
export function sliceDimForLayers(config: LlamaConfig, tied: boolean, layers: number, option = "--match-layers"): number {
  const target = llamaParameterCount(config, tied) - layers * layerParameterCount(config);
  // Every parameter count is linear in the hidden size once head_dim is fixed.
  const fixed = llamaParameterCount({ ...config, dim: 0 }, false);
  const perDim = llamaParameterCount({ ...config, dim: 1 }, false) - fixed;
  const dPrime = Math.round((target - fixed) / perDim / config.nHeads) * config.nHeads;
  if (dPrime < config.nHeads) throw new OptionError(`matching ${layers} layers leaves no hidden dimension`, { option, hint: "match fewer layers" });
  return Math.min(dPrime, config.dim);
}

/** w: (rows, d), each column i scaled by scale[i] (when given), times Q[:, :dPrime] -> (rows, dPrime). */
export function rotateInputs(w: Float32Array, rows: number, d: number, scale: Float32Array | undefined, q: Float64Array, dPrime: number): Float32Array {
  const out = new Float32Array(rows * dPrime);
  const row = new Float64Array(d);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < d; i++) row[i] = w[r * d + i]! * (scale ? scale[i]! : 1);
    for (let k = 0; k < dPrime; k++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += row[i]! * q[i * d + k]!;
      out[r * dPrime + k] = s;
    }
  }
  return out;
}

/** Q[:, :dPrime]^T times w: (d, cols) -> (dPrime, cols). */
export function rotateOutputs(w: Float32Array, d: number, cols: number, q: Float64Array, dPrime: number): Float32Array {
  const out = new Float32Array(dPrime * cols);
  const acc = new Float64Array(cols);
  for (let k = 0; k < dPrime; k++) {
    acc.fill(0);
    for (let i = 0; i < d; i++) {
      const qik = q[i * d + k]!;
      if (qik === 0) continue;
      for (let j = 0; j < cols; j++) acc[j]! += qik * w[i * cols + j]!;
    }
    for (let j = 0; j < cols; j++) out[k * cols + j] = acc[j]!;
  }
  return out;
}

/** Slices the residual stream to dPrime dimensions (weights are not modified). */
export function sliceGpt(weights: LlamaWeights, config: LlamaConfig, stats: WidthStats, dPrime: number): WidthPrunedModel {
  const { dim: d, vocabSize, hiddenDim, nHeads, nKvHeads, headDim } = config;
  if (!Number.isInteger(dPrime) || dPrime < 1 || dPrime > d) throw new OptionError(`cannot slice the hidden size ${d} to ${dPrime}`, { option: "--hidden-size", hint: `give 1..${d}` });
  if (dPrime % nHeads !== 0) {
    throw new OptionError(`hidden size ${dPrime} is not a multiple of the ${nHeads} attention heads`, {
      option: "--hidden-size", hint: `transformers refuses such a config.json; use a multiple of ${nHeads}`,
    });
  }
  const { values, vectors: q } = symmetricEigen(stats.covariance, d);
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const normScale = new Float32Array(dPrime).fill(Math.sqrt(d / dPrime));
  const layers = weights.layers.map((w): LlamaLayerWeights => ({
    ...w,
    attnNorm: Float32Array.from(normScale), ffnNorm: Float32Array.from(normScale),
    wq: rotateInputs(w.wq, qDim, d, w.attnNorm, q, dPrime),
    wk: rotateInputs(w.wk, kvDim, d, w.attnNorm, q, dPrime),
    wv: rotateInputs(w.wv, kvDim, d, w.attnNorm, q, dPrime),
    wo: rotateOutputs(w.wo, d, qDim, q, dPrime),
    wGate: rotateInputs(w.wGate!, hiddenDim, d, w.ffnNorm, q, dPrime),
    wUp: rotateInputs(w.wUp, hiddenDim, d, w.ffnNorm, q, dPrime),
    wDown: rotateOutputs(w.wDown, d, hiddenDim, q, dPrime),
  }));
  const sliced: LlamaWeights = {
    embedding: rotateInputs(weights.embedding, vocabSize, d, undefined, q, dPrime),
    finalNorm: Float32Array.from(normScale),
    classifier: rotateInputs(weights.classifier, vocabSize, d, weights.finalNorm, q, dPrime),
    layers,
  };
  const newConfig: LlamaConfig = { ...config, dim: dPrime };
  const total = values.reduce((a, b) => a + Math.max(b, 0), 0);
  const kept = values.subarray(0, dPrime).reduce((a, b) => a + Math.max(b, 0), 0);
  return {
    method: "slicegpt", config: newConfig, tied: false, tensors: hfTensorsOf(sliced, newConfig, false),
    configPatch: { hidden_size: dPrime, head_dim: headDim, tie_word_embeddings: false }, parameters: llamaParameterCount(newConfig, false),
    detail: { hiddenSize: dPrime, originalHiddenSize: d, normWeight: Math.sqrt(d / dPrime), keptVariance: total > 0 ? kept / total : 1, calibrationTokens: stats.tokens },
  };
}

// Structured FFN-channel pruning (a Wanda-style score, per channel): channel c of a layer scores
// ||act_c||_2 over the calibration tokens times ||W_down[:, c]||_2, the size of what the channel
// adds to the residual stream; the lowest-scoring channels lose their gate and up rows and their
// down column. Every layer loses the same number, so config.json keeps one intermediate_size.

import { OptionError } from "../errors.js";
import type { WidthStats } from "../metrics/widthStats.js";
import type { LlamaConfig, LlamaWeights } from "../models/llama.js";
import { hfTensorsOf, layerParameterCount, llamaParameterCount, type WidthPrunedModel } from "./widthModel.js";

/** Channel scores of one layer: sqrt(sum of act_c^2) * ||W_down[:, c]||. */
export function ffnChannelScores(squares: Float64Array, wDown: Float32Array, dim: number, hiddenDim: number): Float64Array {
  const scores = new Float64Array(hiddenDim);
  for (let c = 0; c < hiddenDim; c++) {
    let col = 0;
    for (let r = 0; r < dim; r++) col += wDown[r * hiddenDim + c]! ** 2;
    scores[c] = Math.sqrt(squares[c]!) * Math.sqrt(col);
  }
  return scores;
}

/** The channels of each layer removed to save about as many parameters as removing `layers` whole layers. */
export function ffnChannelsForLayers(config: LlamaConfig, layers: number, option = "--match-layers"): number {
  const perChannel = 3 * config.dim * config.nLayers; // a gate row, an up row and a down column in every layer
  const n = Math.round((layers * layerParameterCount(config)) / perChannel);
  if (n >= config.hiddenDim) {
    throw new OptionError(`matching ${layers} layers would remove ${n} of ${config.hiddenDim} FFN channels per layer`, { option, hint: "match fewer layers" });
  }
  return n;
}

/** Rows `keep` of a (rows, cols) matrix. */
function keepRows(w: Float32Array, cols: number, keep: readonly number[]): Float32Array {
  const out = new Float32Array(keep.length * cols);
  keep.forEach((r, i) => out.set(w.subarray(r * cols, (r + 1) * cols), i * cols));
  return out;
}

/** Columns `keep` of a (rows, cols) matrix. */
function keepColumns(w: Float32Array, rows: number, cols: number, keep: readonly number[]): Float32Array {
  const out = new Float32Array(rows * keep.length);
  for (let r = 0; r < rows; r++) keep.forEach((c, i) => { out[r * keep.length + i] = w[r * cols + c]!; });
  return out;
}

/** Removes `nRemove` channels from every layer's MLP (weights are not modified; the result shares untouched arrays). */
export function pruneFfnChannels(weights: LlamaWeights, config: LlamaConfig, tied: boolean, stats: WidthStats, nRemove: number): WidthPrunedModel {
  const { dim, hiddenDim } = config;
  if (!Number.isInteger(nRemove) || nRemove < 0 || nRemove >= hiddenDim) throw new OptionError(`cannot remove ${nRemove} of ${hiddenDim} FFN channels`);
  const removed: number[][] = [];
  const layers = weights.layers.map((layer, l) => {
    const scores = ffnChannelScores(stats.channelSquares[l]!, layer.wDown, dim, hiddenDim);
    // Lowest scores go; ties by index keep the result deterministic; the kept channels stay in order.
    const order = Array.from({ length: hiddenDim }, (_, c) => c).sort((a, b) => scores[a]! - scores[b]! || a - b);
    const keep = order.slice(nRemove).sort((a, b) => a - b);
    removed.push(order.slice(0, nRemove).sort((a, b) => a - b));
    return { ...layer, wGate: keepRows(layer.wGate!, dim, keep), wUp: keepRows(layer.wUp, dim, keep), wDown: keepColumns(layer.wDown, dim, hiddenDim, keep) };
  });
  const newConfig: LlamaConfig = { ...config, hiddenDim: hiddenDim - nRemove };
  return {
    method: "ffn-channels", config: newConfig, tied, tensors: hfTensorsOf({ ...weights, layers }, newConfig, tied),
    configPatch: { intermediate_size: newConfig.hiddenDim }, parameters: llamaParameterCount(newConfig, tied),
    detail: { channelsRemovedPerLayer: nRemove, intermediateSize: newConfig.hiddenDim, removedChannels: removed },
  };
}

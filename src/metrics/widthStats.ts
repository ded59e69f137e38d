// Calibration statistics for width pruning, from the residual stream the streaming engine hands
// its hooks: per layer and FFN channel the sum of squares of the gated activation entering
// down_proj, and the float64 covariance of the RMS-normalized residual stream where a norm reads it.

import type { DecoderBackend } from "../backend/backend.js";
import { ropeInverseFrequencies } from "../backend/reference.js";
import { referenceDecoderLayer } from "../backend/referenceLayer.js";
import type { Window } from "../data/windows.js";
import { type LlamaLayerWeights, layerShape, loadLlamaLayer } from "../models/llama.js";
import { releaseBatches, runLayersStreaming, type StreamHooks, type StreamingSource } from "../models/streaming.js";

export interface WidthStats {
  /** Per layer, per FFN channel c: sum over calibration tokens of act_c^2 (act = act(gate) * up). */
  channelSquares: Float64Array[];
  /**
   * (dim, dim) row-major, sum over the inputs of every norm (each layer's attention and MLP input,
   * the final norm's input) of u u^T, u = x / rms(x): the directions the linears read, with every
   * token weighted equally.
   */
  covariance: Float64Array;
  /** Calibration tokens seen (each counted once, not once per norm). */
  tokens: number;
}

export interface WidthStatsOptions {
  backend: DecoderBackend;
  /** Token-layers done so far and in all. */
  onProgress?: (done: number, total: number) => void;
}

/** cov += u u^T for each row x of rows (n, dim), u = x / sqrt(mean(x^2)) (zero rows skipped). */
export function addNormalizedOuterProducts(cov: Float64Array, rows: Float32Array | Float64Array, n: number, dim: number): void {
  const u = new Float64Array(dim);
  for (let r = 0; r < n; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += rows[r * dim + i]! ** 2;
    if (ss === 0) continue;
    const scale = 1 / Math.sqrt(ss / dim);
    for (let i = 0; i < dim; i++) u[i] = rows[r * dim + i]! * scale;
    for (let i = 0; i < dim; i++) {
      const ui = u[i]!;
      const off = i * dim;
      for (let j = i; j < dim; j++) cov[off + j]! += ui * u[j]!;
    }
  }
}

/** Fills the lower triangle from the upper one (addNormalizedOuterProducts writes only j >= i). */
function symmetrize(cov: Float64Array, dim: number): void {
  for (let i = 0; i < dim; i++) for (let j = 0; j < i; j++) cov[i * dim + j] = cov[j * dim + i]!;
}

/**
 * Runs the calibration windows through the model on the backend; at each layer the layer's input
 * rows are copied to the host and the layer is run again there with the plain reference code
 * (float64), which exposes the MLP's input and gated activation. That host pass costs one
 * reference forward of the model: fine for small models, slow for billions of parameters.
 */
export async function collectWidthStats(source: StreamingSource, windows: readonly Window[], options: WidthStatsOptions): Promise<WidthStats> {
  const { config } = source;
  const { dim, hiddenDim, nKvHeads, headDim, nLayers } = config;
  const shape = layerShape(config);
  const invFreq = ropeInverseFrequencies(headDim, config.ropeTheta, config.ropeFreqFactors);
  const channelSquares = Array.from({ length: nLayers }, () => new Float64Array(hiddenDim));
  const covariance = new Float64Array(dim * dim);
  let weights: { layer: number; w: LlamaLayerWeights } | undefined;
  const hooks: StreamHooks = {
    async onLayer(layer, input, output, batch, backend) {
      if (weights?.layer !== layer) weights = { layer, w: loadLlamaLayer(source.provider, config, source.names, layer) };
      const x = await backend.readRows(input);
      const { seqLen } = batch;
      const nWindows = batch.windows.length;
      addNormalizedOuterProducts(covariance, x, nWindows * seqLen, dim);
      const kvDim = nKvHeads * headDim;
      const keys = new Float64Array(seqLen * kvDim);
      const values = new Float64Array(seqLen * kvDim);
      const squares = channelSquares[layer]!;
      for (let w = 0; w < nWindows; w++) {
        const rows = Float64Array.from(x.subarray(w * seqLen * dim, (w + 1) * seqLen * dim));
        referenceDecoderLayer(rows, seqLen, 0, weights.w, shape, keys, values, invFreq, undefined, {
          mlpInput: (h) => addNormalizedOuterProducts(covariance, h, seqLen, dim),
          gatedActivation: (act) => {
            for (let t = 0; t < seqLen; t++) for (let c = 0; c < hiddenDim; c++) squares[c]! += act[t * hiddenDim + c]! ** 2;
          },
        });
      }
      if (layer === nLayers - 1) addNormalizedOuterProducts(covariance, await backend.readRows(output), nWindows * seqLen, dim);
    },
  };
  const { onProgress } = options;
  releaseBatches(await runLayersStreaming(source, windows, { backend: options.backend, hooks, ...(onProgress ? { onProgress } : {}) }), options.backend);
  symmetrize(covariance, dim);
  return { channelSquares, covariance, tokens: windows.reduce((n, w) => n + w.tokens.length, 0) };
}

// Which layers the native bf16 layer computes (a light module: the CLI asks it before choosing a
// precision, without loading the engine).

import { layerKind, type LayerShape } from "../backend.js";
import { type AttentionFamilyFeature, attentionFamilyFeatures } from "../shapeFeatures.js";

/**
 * The Gemma 2/3 and Phi-3 layer features the native layer computes: every one a layer shape
 * carries (logit soft-capping belongs to the head, which runs on the fp32 kernels).
 */
export const NATIVE_LAYER_FEATURES: ReadonlySet<AttentionFamilyFeature> = new Set(["postNorms", "attnScale", "attnSoftcap", "slidingWindow", "ropeAttentionFactor"]);

/** Whether the native layer computes this shape; else the fp32 kernels do. */
export function nativeLayerSupports(shape: LayerShape): boolean {
  // An attention layer of the Llama outline with RMSNorms and a gated MLP, plus Gemma 2/3's and
  // Phi-3's features (sandwich norms, score scale, soft-capping, sliding window, LongRoPE's
  // factor, per-head q/k norms, the GELU-tanh gate); no biases, LayerNorm, learned positions or
  // plain MLP (Qwen2, GPT-2), nor llama.cpp's float16-table GELU.
  return layerKind(shape) === "attention" && attentionFamilyFeatures(shape).every((f) => NATIVE_LAYER_FEATURES.has(f)) &&
    !shape.qkvBias && !shape.layerNorm && !shape.noRope && !shape.plainMlp && !shape.outputBiases &&
    (shape.activation === undefined || shape.activation === "gelu_tanh") && shape.headDim % 2 === 0 && shape.nHeads % shape.nKvHeads === 0 &&
    // The values the native attention takes (it refuses others): a positive scale and cap, a window of whole positions.
    (shape.attnScale === undefined || shape.attnScale > 0) && (shape.attnSoftcap === undefined || shape.attnSoftcap > 0) &&
    (shape.slidingWindow === undefined || (Number.isInteger(shape.slidingWindow) && shape.slidingWindow > 0));
}

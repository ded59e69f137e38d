// Which optional layer and head features (LayerShape, HeadWeights) a backend computes, so that a
// backend that lacks one refuses the model up front instead of computing a different network.

import { UnsupportedError } from "../errors.js";
import type { HeadWeights, LayerShape } from "./backend.js";

/** The features added for Gemma 2/3 and Phi-3; the reference kernels compute every one. */
export const ATTENTION_FAMILY_FEATURES = ["postNorms", "attnScale", "attnSoftcap", "slidingWindow", "ropeAttentionFactor", "logitSoftcap"] as const;
export type AttentionFamilyFeature = (typeof ATTENTION_FAMILY_FEATURES)[number];

/** Every feature: what the CPU backends (reference kernels, onnx/wasm graphs) compute. */
export const ALL_ATTENTION_FAMILY_FEATURES: ReadonlySet<AttentionFamilyFeature> = new Set(ATTENTION_FAMILY_FEATURES);

/** The Gemma 2/3 / Phi-3 features a layer shape (and the head, when given) asks for. */
export function attentionFamilyFeatures(shape: LayerShape, head?: Pick<HeadWeights, "logitSoftcap">): AttentionFamilyFeature[] {
  const used = ATTENTION_FAMILY_FEATURES.filter((f) => f !== "logitSoftcap" && shape[f] !== undefined && shape[f] !== false);
  if (head?.logitSoftcap !== undefined) used.push("logitSoftcap");
  return used;
}

/**
 * Throws UnsupportedError when `shape` (or the head) needs a feature outside `supported`. The
 * streaming engine calls it with DecoderBackend.shapeFeatures before running a model, so that a
 * backend declaring fewer (none, when it declares no set) refuses the model up front.
 */
export function assertShapeFeatures(backend: string, shape: LayerShape, supported: ReadonlySet<AttentionFamilyFeature>, head?: Pick<HeadWeights, "logitSoftcap">): void {
  const missing = attentionFamilyFeatures(shape, head).filter((f) => !supported.has(f));
  if (missing.length === 0) return;
  throw new UnsupportedError(`the ${backend} backend does not compute ${missing.join(", ")} (Gemma 2/3 or Phi-3 layers) yet`, {
    hint: "run this model with --backend reference or --backend onnx",
  });
}

// Which layers the native bf16 layer computes (a light module: the CLI asks it before choosing a
// precision, without loading the engine).

import { layerKind, type LayerShape } from "../backend.js";
import { attentionFamilyFeatures } from "../shapeFeatures.js";

/** Whether the native layer computes this shape; else the fp32 kernels do. */
export function nativeLayerSupports(shape: LayerShape): boolean {
  // An attention layer of the plain Llama outline: no recurrent kind, none of Gemma 2/3's or Phi-3's features.
  return layerKind(shape) === "attention" && attentionFamilyFeatures(shape).length === 0 && !shape.qkvBias && !shape.qkNorm && !shape.layerNorm && !shape.noRope && !shape.plainMlp && !shape.outputBiases &&
    shape.activation === undefined && shape.headDim % 2 === 0 && shape.nHeads % shape.nKvHeads === 0;
}

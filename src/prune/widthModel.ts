// A width-pruned model held in memory: its resolved config and float32 tensors under Hugging Face
// names (Q/K rows in the rotate-half layout), with a TensorProvider view so that the streaming
// engine evaluates it exactly as it would the written directory, and parameter accounting.

import { isRecurrentShape, layerWeightDims, type LayerWeightName } from "../backend/backend.js";
import { UnsupportedError } from "../errors.js";
import type { OpenedModel } from "../load.js";
import { HF_LLAMA_NAMES } from "../models/hfLlamaConfig.js";
import { layerShape, type LlamaConfig, type LlamaLayerWeights, type LlamaTensorNames, type LlamaWeights } from "../models/llama.js";
import { elementCount, type TensorProvider } from "../tensor/provider.js";

export type WidthMethod = "ffn-channels" | "slicegpt";

export interface WidthTensor {
  shape: number[];
  data: Float32Array;
}

export interface WidthPrunedModel {
  method: WidthMethod;
  config: LlamaConfig;
  /** The classifier is the embedding (no lm_head.weight). */
  tied: boolean;
  /** Every tensor of the model, by its Hugging Face name. */
  tensors: Map<string, WidthTensor>;
  /** config.json keys the written directory sets (hidden_size, intermediate_size, head_dim, tie_word_embeddings). */
  configPatch: Record<string, number | boolean>;
  /** Parameters of the pruned model (every tensor's elements). */
  parameters: number;
  /** What was chosen and why, for --json. */
  detail: Record<string, unknown>;
}

/** The name a tied classifier has in the in-memory provider: absent from it, so the loader uses the embedding. */
const TIED = "(tied to model.embed_tokens.weight)";

export function widthTensorNames(tied: boolean): LlamaTensorNames {
  return { ...HF_LLAMA_NAMES, classifier: tied ? TIED : HF_LLAMA_NAMES.classifier, ignored: new Set() };
}

/** Parameters of a Llama with this config: embedding, classifier unless tied, final norm, every layer's weights. */
export function llamaParameterCount(config: LlamaConfig, tied: boolean): number {
  const perLayer = Object.values(layerWeightDims(layerShape(config))).reduce((n, dims) => n + elementCount(dims), 0);
  return config.vocabSize * config.dim * (tied ? 1 : 2) + config.dim + config.nLayers * perLayer;
}

/** Parameters of one decoder layer (what removing one layer saves). */
export function layerParameterCount(config: LlamaConfig): number {
  return Object.values(layerWeightDims(layerShape(config))).reduce((n, dims) => n + elementCount(dims), 0);
}

/**
 * The families whose layers width pruning rewrites: a Llama-style pre-norm decoder with RMSNorm
 * and a gated MLP. Refused: LayerNorm/GPT-2 (means and biases do not commute with slicing the
 * way RMSNorm does), Gemma (1 + w norms and a scaled embedding), MLP biases.
 */
export function checkWidthPrunable(config: LlamaConfig, architecture: string, source: string): void {
  const unsupported = [
    config.layerNorm && "LayerNorm", config.plainMlp && "an MLP without a gate", config.outputBiases && "output biases",
    config.learnedPositions && "learned positions", config.normWeightOffset !== undefined && "(1 + w) norm weights", config.embeddingScale !== undefined && "a scaled embedding",
    architecture === "baichuan" && "Baichuan's fused W_pack",
    isRecurrentShape(layerShape(config)) && `recurrent ${layerShape(config).kind} blocks (no attention heads or FFN channels to slice)`,
  ].filter((x): x is string => typeof x === "string");
  if (unsupported.length > 0) {
    throw new UnsupportedError(`${source}: width pruning supports Llama-style models (RMSNorm, gated MLP); this one has ${unsupported.join(", ")}`, {
      file: source, hint: "use depth pruning (shortgpt prune) for this family",
    });
  }
}

/** The tensors of LlamaWeights under Hugging Face names (the classifier only when untied). */
export function hfTensorsOf(weights: LlamaWeights, config: LlamaConfig, tied: boolean): Map<string, WidthTensor> {
  const { dim, vocabSize } = config;
  const tensors = new Map<string, WidthTensor>();
  tensors.set(HF_LLAMA_NAMES.embedding, { shape: [vocabSize, dim], data: weights.embedding });
  tensors.set(HF_LLAMA_NAMES.finalNorm, { shape: [dim], data: weights.finalNorm });
  if (!tied) tensors.set(HF_LLAMA_NAMES.classifier, { shape: [vocabSize, dim], data: weights.classifier });
  const dims = layerWeightDims(layerShape(config));
  weights.layers.forEach((layer: LlamaLayerWeights, i) => {
    const names = HF_LLAMA_NAMES.layer(i);
    for (const [key, shape] of Object.entries(dims) as [LayerWeightName, number[]][]) {
      tensors.set(names[key]!, { shape, data: layer[key]! });
    }
  });
  return tensors;
}

export function widthProvider(model: WidthPrunedModel, source: string): TensorProvider {
  return {
    source,
    entries: () => [...model.tensors].map(([name, t]) => ({ name, shape: t.shape, dtype: "F32" })),
    readF32(name) {
      const t = model.tensors.get(name);
      if (!t) throw new UnsupportedError(`${source}: the width-pruned model has no tensor ${name}`);
      return Float32Array.from(t.data); // callers may change what they get (norm offsets), so hand out copies
    },
  };
}

/** The pruned model as an opened checkpoint: the evaluations run on it as on the written directory. */
export function widthOpenedModel(opened: OpenedModel, model: WidthPrunedModel): OpenedModel {
  const source = `${opened.path} (${model.method})`;
  return {
    ...opened, path: source, config: model.config, provider: widthProvider(model, source), names: widthTensorNames(model.tied),
    dtypes: { F32: model.tensors.size }, close: () => {},
  };
}

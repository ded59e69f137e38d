// Gemma 2 and Gemma 3 (text) on the Llama decoder: what their config.json adds to Gemma's
// (scaled embedding, (1 + w) norms, GELU gate): sandwich norms around attention and the MLP,
// query_pre_attn_scalar, tanh soft-caps of the attention scores and the logits, local
// (sliding-window) and global layers by layer_types, and Gemma 3's q/k norms and per-type RoPE.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { jsonPreview } from "../formats/json.js";
import type { LayerAttentionType, LayerTensorNames, LlamaConfig } from "./llama.js";

export const GEMMA_SANDWICH_MODEL_TYPES: ReadonlySet<string> = new Set(["gemma2", "gemma3_text"]);

/** The config.json fields these families add, spelled as on disk. */
export interface GemmaSandwichRawFields {
  query_pre_attn_scalar?: number | null;
  attn_logit_softcapping?: number | null;
  final_logit_softcapping?: number | null;
  sliding_window?: number | null;
  /** Gemma 3 configs written before layer_types existed: every n-th layer is global (default 6). */
  sliding_window_pattern?: number;
  use_bidirectional_attention?: boolean | null;
  layer_types?: string[];
}

/** transformers' defaults (Gemma2Config, Gemma3TextConfig) for these fields. */
const DEFAULTS: Readonly<Record<string, { attnSoftcap: number | null; logitSoftcap: number | null }>> = {
  gemma2: { attnSoftcap: 50, logitSoftcap: 30 },
  gemma3_text: { attnSoftcap: null, logitSoftcap: null },
};

/**
 * Each layer's attention type as transformers derives it when config.json has no layer_types:
 * Gemma 2 alternates (even layers local), Gemma 3 makes every `pattern`-th layer global.
 */
export function defaultGemmaLayerTypes(modelType: string, nLayers: number, pattern?: number): LayerAttentionType[] {
  const every = modelType === "gemma2" ? 2 : pattern ?? 6;
  return Array.from({ length: nLayers }, (_, i) => ((i + 1) % every !== 0 ? "sliding_attention" : "full_attention"));
}

function positive(value: unknown, key: string, source: string): number {
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    throw new CheckpointError(`${source}: ${key} is ${jsonPreview(value)}, expected a positive number`, { file: source, hint: "config.json is corrupt" });
  }
  return value;
}

/** The sandwich-norm family's config fields, resolved with transformers' defaults. */
export function resolveGemmaSandwich(modelType: string, raw: GemmaSandwichRawFields, nLayers: number, headDim: number, source: string): Partial<LlamaConfig> {
  if (raw.use_bidirectional_attention === true) {
    throw new UnsupportedError(`${source}: use_bidirectional_attention (an encoder) is not supported`, { file: source, hint: "only causal language models can be pruned and evaluated" });
  }
  const defaults = DEFAULTS[modelType]!;
  const layerTypes = raw.layer_types ?? defaultGemmaLayerTypes(modelType, nLayers, raw.sliding_window_pattern);
  if (layerTypes.length !== nLayers) {
    throw new CheckpointError(`${source}: layer_types has ${layerTypes.length} entries but num_hidden_layers is ${nLayers}`, { file: source, expected: nLayers, got: layerTypes.length, hint: "config.json is inconsistent" });
  }
  const unknown = layerTypes.find((t) => t !== "sliding_attention" && t !== "full_attention");
  if (unknown !== undefined) throw new UnsupportedError(`${source}: layer type ${jsonPreview(unknown)} is not supported (sliding_attention and full_attention are)`, { file: source });
  const window = raw.sliding_window === undefined ? 4096 : raw.sliding_window;
  const attnSoftcap = raw.attn_logit_softcapping === undefined ? defaults.attnSoftcap : raw.attn_logit_softcapping;
  const logitSoftcap = raw.final_logit_softcapping === undefined ? defaults.logitSoftcap : raw.final_logit_softcapping;
  const scalar = raw.query_pre_attn_scalar == null ? 256 : positive(raw.query_pre_attn_scalar, "query_pre_attn_scalar", source);
  const hasLocal = layerTypes.includes("sliding_attention");
  if (hasLocal && window === null) throw new CheckpointError(`${source}: sliding_window is null but layer_types has sliding_attention layers`, { file: source, hint: "config.json is inconsistent" });
  return {
    postNorms: true,
    // transformers scales by query_pre_attn_scalar ** -0.5 (a Python float); float32 would round it.
    ...(scalar === headDim ? {} : { attnScale: scalar ** -0.5 }),
    ...(attnSoftcap === null ? {} : { attnSoftcap: positive(attnSoftcap, "attn_logit_softcapping", source) }),
    ...(logitSoftcap === null ? {} : { logitSoftcap: positive(logitSoftcap, "final_logit_softcapping", source) }),
    layerTypes: layerTypes as LayerAttentionType[],
    ...(hasLocal ? { slidingWindow: positive(window, "sliding_window", source) } : {}),
    ...(modelType === "gemma3_text" ? { qkNorm: true } : {}),
  };
}

/** Gemma 2/3's layer tensor names: post_attention_layernorm is the sandwich norm, pre_feedforward_layernorm the MLP's input norm. */
export function gemmaSandwichLayerNames(base: LayerTensorNames, layer: number): LayerTensorNames {
  const p = `model.layers.${layer}`;
  return {
    ...base,
    ffnNorm: `${p}.pre_feedforward_layernorm.weight`,
    attnPostNorm: `${p}.post_attention_layernorm.weight`,
    ffnPostNorm: `${p}.post_feedforward_layernorm.weight`,
  };
}

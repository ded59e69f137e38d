// Hugging Face config.json for the Llama family (model_type llama; mistral as an alias; qwen2,
// a Llama with q/k/v biases; qwen3, a Llama with per-head q/k RMSNorm; gemma, a Llama with a
// scaled embedding, (1 + w) norms and a GELU gate):
// the raw fields with their on-disk spelling, one resolve step with transformers' defaults,
// and the HF tensor names.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { ropeInverseFrequencies } from "../backend/reference.js";
import { jsonPreview } from "../formats/json.js";
import { GEMMA_SANDWICH_MODEL_TYPES, gemmaSandwichLayerNames, resolveGemmaSandwich } from "./gemma2.js";
import { checkConfigCount, checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";

/** config.json fields this family reads, spelled as on disk; all optional as in the file. */
export interface HfLlamaRawConfig {
  model_type?: string;
  architectures?: string[];
  hidden_size?: number;
  intermediate_size?: number;
  num_hidden_layers?: number;
  num_attention_heads?: number;
  num_key_value_heads?: number | null;
  head_dim?: number | null;
  vocab_size?: number;
  max_position_embeddings?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  rope_scaling?: Record<string, unknown> | null;
  /** transformers >= 5 spelling of rope_theta / rope_scaling. */
  rope_parameters?: Record<string, unknown> | null;
  partial_rotary_factor?: number;
  tie_word_embeddings?: boolean;
  torch_dtype?: string;
  /** transformers >= 5 spelling of torch_dtype. */
  dtype?: string;
  hidden_act?: string;
  /** Gemma's spelling of the MLP activation (wins over hidden_act). */
  hidden_activation?: string | null;
  attention_bias?: boolean;
  mlp_bias?: boolean;
  /** Mistral: attend to at most this many previous positions. */
  sliding_window?: number | null;
  /** Qwen2/Qwen3: whether sliding_window applies at all. */
  use_sliding_window?: boolean;
  layer_types?: string[];
  /** Present on GPTQ/AWQ/bitsandbytes/fp8 checkpoints, whose tensors this family cannot run. */
  quantization_config?: Record<string, unknown> | null;
  /** Gemma 2/3 (models/gemma2.ts). */
  query_pre_attn_scalar?: number | null;
  attn_logit_softcapping?: number | null;
  final_logit_softcapping?: number | null;
  sliding_window_pattern?: number;
  use_bidirectional_attention?: boolean | null;
  /** Gemma 3 before rope_parameters: the RoPE base of the local layers. */
  rope_local_base_freq?: number;
  /** Phi-3 LongRoPE: the pretraining context, which picks short_factor (at most this many positions) or long_factor. */
  original_max_position_embeddings?: number;
}

/** model_type -> the family that runs it. */
export const HF_LLAMA_MODEL_TYPES: Readonly<Record<string, "llama">> = {
  llama: "llama", mistral: "llama", qwen2: "llama", qwen3: "llama", gemma: "llama", baichuan: "llama", gemma2: "llama", gemma3_text: "llama", phi3: "llama",
};

/** transformers' defaults (LlamaConfig / MistralConfig) for fields a config.json may omit. */
const DEFAULTS = {
  llama: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: undefined, max_position_embeddings: 2048, rms_norm_eps: 1e-6, sliding_window: null },
  mistral: { vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 4096 * 32, rms_norm_eps: 1e-6, sliding_window: 4096 },
  // Qwen2Config / Qwen3Config: sliding_window only counts with use_sliding_window (default false).
  qwen2: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, max_position_embeddings: 32768, rms_norm_eps: 1e-6, sliding_window: null },
  // Baichuan2-7B (the remote-code BaichuanConfig has no defaults worth trusting; a real config.json lists its fields).
  baichuan: { vocab_size: 125696, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, max_position_embeddings: 4096, rms_norm_eps: 1e-6, sliding_window: null },
  gemma: { vocab_size: 256000, hidden_size: 3072, intermediate_size: 24576, num_hidden_layers: 28, num_attention_heads: 16, num_key_value_heads: 16, max_position_embeddings: 8192, rms_norm_eps: 1e-6, sliding_window: null },
  qwen3: { vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, max_position_embeddings: 32768, rms_norm_eps: 1e-6, sliding_window: null },
  // Gemma2Config / Gemma3TextConfig: their sliding_window is per layer (models/gemma2.ts), not a context cap.
  gemma2: { vocab_size: 256000, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 8192, rms_norm_eps: 1e-6, sliding_window: null },
  gemma3_text: { vocab_size: 262208, hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8, num_key_value_heads: 4, max_position_embeddings: 131072, rms_norm_eps: 1e-6, sliding_window: null },
  phi3: { vocab_size: 32064, hidden_size: 3072, intermediate_size: 8192, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: undefined, max_position_embeddings: 4096, rms_norm_eps: 1e-5, sliding_window: null },
} as const;
const DEFAULT_ROPE_THETA = 10000;

export type FieldKind = "int" | "number" | "string" | "boolean" | "object" | "string[]";
/** How one config.json field must look. */
export type FieldSpec = { kind: FieldKind; nullable?: boolean };
const FIELDS: Record<keyof HfLlamaRawConfig, FieldSpec> = {
  model_type: { kind: "string" },
  architectures: { kind: "string[]" },
  hidden_size: { kind: "int" },
  intermediate_size: { kind: "int" },
  num_hidden_layers: { kind: "int" },
  num_attention_heads: { kind: "int" },
  num_key_value_heads: { kind: "int", nullable: true },
  head_dim: { kind: "int", nullable: true },
  vocab_size: { kind: "int" },
  max_position_embeddings: { kind: "int" },
  rms_norm_eps: { kind: "number" },
  rope_theta: { kind: "number" },
  rope_scaling: { kind: "object", nullable: true },
  rope_parameters: { kind: "object", nullable: true },
  partial_rotary_factor: { kind: "number" },
  tie_word_embeddings: { kind: "boolean" },
  torch_dtype: { kind: "string" },
  dtype: { kind: "string" },
  hidden_act: { kind: "string" },
  hidden_activation: { kind: "string", nullable: true },
  attention_bias: { kind: "boolean" },
  mlp_bias: { kind: "boolean" },
  sliding_window: { kind: "int", nullable: true },
  use_sliding_window: { kind: "boolean" },
  layer_types: { kind: "string[]" },
  quantization_config: { kind: "object", nullable: true },
  query_pre_attn_scalar: { kind: "number", nullable: true },
  attn_logit_softcapping: { kind: "number", nullable: true },
  final_logit_softcapping: { kind: "number", nullable: true },
  sliding_window_pattern: { kind: "int" },
  use_bidirectional_attention: { kind: "boolean", nullable: true },
  rope_local_base_freq: { kind: "number" },
  original_max_position_embeddings: { kind: "int" },
};

function fits(v: unknown, kind: FieldKind): boolean {
  switch (kind) {
    case "int":
      return typeof v === "number" && Number.isSafeInteger(v);
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "string":
      return typeof v === "string";
    case "boolean":
      return typeof v === "boolean";
    case "object":
      return typeof v === "object" && v !== null && !Array.isArray(v);
    case "string[]":
      return Array.isArray(v) && v.every((s) => typeof s === "string");
  }
}

/** Type-checks the fields this family reads (others are kept in the file but not looked at). */
export function parseHfLlamaConfig(json: Readonly<Record<string, unknown>>, source: string): HfLlamaRawConfig {
  return parseHfConfigFields<HfLlamaRawConfig>(json, FIELDS, source);
}

/** Type-checks the config.json fields that `fields` lists; absent ones stay absent. */
export function parseHfConfigFields<T>(json: Readonly<Record<string, unknown>>, fields: Readonly<Record<keyof T, FieldSpec>>, source: string): T {
  const raw: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries<FieldSpec>(fields)) {
    const v = json[key];
    if (v === undefined) continue;
    if (v === null && spec.nullable) {
      raw[key] = null;
      continue;
    }
    if (!fits(v, spec.kind)) {
      throw new CheckpointError(`${source}: ${key} is ${jsonPreview(v)}, expected ${spec.kind === "int" ? "an integer" : `a ${spec.kind}`}${spec.nullable ? " or null" : ""}`, {
        file: source, got: jsonPreview(v), hint: "config.json is corrupt or from an unsupported model",
      });
    }
    raw[key] = v;
  }
  return raw as T;
}

/** RoPE's base, and its scaling as per-frequency divisors (llama.cpp's rope_freqs) with the dict it came from. */
interface RopeSettings {
  theta: number;
  factors?: number[];
  scaling?: Record<string, unknown>;
  /** LongRoPE: q and k scaled by this after RoPE. */
  attentionFactor?: number;
  /** LongRoPE: the short factors hold up to this many positions (original_max_position_embeddings). */
  contextCap?: number;
  /** LongRoPE: the factors past contextCap. */
  longFactors?: number[];
}

/**
 * The divisor of each RoPE frequency, as transformers computes the scaled inverse frequencies:
 * "linear" divides every frequency by `factor`; "llama3" keeps the fast ones (wavelength below
 * original_max_position_embeddings / high_freq_factor), divides the slow ones (above
 * original / low_freq_factor) by `factor`, and blends in between.
 */
function ropeScalingFactors(type: string, params: Readonly<Record<string, unknown>>, headDim: number, theta: number, source: string): number[] {
  const number = (key: string): number => {
    const v = params[key];
    if (typeof v !== "number" || !(v > 0)) throw new CheckpointError(`${source}: rope_scaling ${key} is ${v === undefined ? "missing" : jsonPreview(v)}`, { file: source, hint: "config.json is corrupt" });
    return v;
  };
  const factor = number("factor");
  if (type === "linear") return new Array<number>(headDim / 2).fill(factor);
  const low = number("low_freq_factor");
  const high = number("high_freq_factor");
  const original = number("original_max_position_embeddings");
  const inv = ropeInverseFrequencies(headDim, theta);
  return Array.from(inv, (freq) => {
    const wavelength = (2 * Math.PI) / freq;
    if (wavelength < original / high) return 1;
    if (wavelength > original / low) return factor;
    const smooth = (original / wavelength - low) / (high - low);
    return 1 / ((1 - smooth) / factor + smooth);
  });
}

/**
 * LongRoPE (Phi-3's rope_scaling type longrope, formerly su), as transformers computes it: the
 * inverse frequencies divided by short_factor while the sequence fits the original context
 * (long_factor beyond it: shortgpt caps its windows there instead), cos and sin multiplied by
 * attention_factor, by default sqrt(1 + ln(factor) / ln(original)) with factor =
 * max_position_embeddings / original_max_position_embeddings.
 */
function longRopeSettings(raw: HfLlamaRawConfig, params: Readonly<Record<string, unknown>>, headDim: number, theta: number, maxPositions: number, source: string): RopeSettings {
  const short = params["short_factor"];
  if (!Array.isArray(short) || short.length !== headDim / 2 || !short.every((v) => typeof v === "number" && v > 0)) {
    throw new CheckpointError(`${source}: rope_scaling short_factor is ${jsonPreview(short ?? null)}, expected ${headDim / 2} positive numbers`, { file: source, hint: "config.json is corrupt" });
  }
  const originalValue = raw.original_max_position_embeddings ?? params["original_max_position_embeddings"] ?? maxPositions;
  if (typeof originalValue !== "number" || !(originalValue > 1)) throw new CheckpointError(`${source}: original_max_position_embeddings is ${jsonPreview(originalValue)}`, { file: source, hint: "config.json is corrupt" });
  const factorValue = params["factor"] ?? maxPositions / originalValue;
  if (typeof factorValue !== "number" || !(factorValue > 0)) throw new CheckpointError(`${source}: rope_scaling factor is ${jsonPreview(factorValue)}`, { file: source, hint: "config.json is corrupt" });
  const given = params["attention_factor"];
  if (given != null && !(typeof given === "number" && given > 0)) throw new CheckpointError(`${source}: rope_scaling attention_factor is ${jsonPreview(given)}`, { file: source, hint: "config.json is corrupt" });
  const attentionFactor = typeof given === "number" ? given : factorValue <= 1 ? 1 : Math.sqrt(1 + Math.log(factorValue) / Math.log(originalValue));
  const long = params["long_factor"];
  if (!Array.isArray(long) || long.length !== headDim / 2 || !long.every((v) => typeof v === "number" && v > 0)) {
    throw new CheckpointError(`${source}: rope_scaling long_factor is ${jsonPreview(long ?? null)}, expected ${headDim / 2} positive numbers`, { file: source, hint: "config.json is corrupt" });
  }
  return {
    theta, factors: short as number[], scaling: { ...params }, contextCap: originalValue, longFactors: long as number[],
    ...(attentionFactor === 1 ? {} : { attentionFactor }),
  };
}

function ropeSettings(raw: HfLlamaRawConfig, headDim: number, source: string, maxPositions: number, layerType?: string, defaultTheta = DEFAULT_ROPE_THETA): RopeSettings {
  // As transformers does: rope_scaling (legacy) wins over rope_parameters; a rope_theta inside
  // the parameters wins over the top-level one.
  let params = (raw.rope_scaling && Object.keys(raw.rope_scaling).length > 0 ? raw.rope_scaling : raw.rope_parameters) ?? {};
  const key = raw.rope_scaling && Object.keys(raw.rope_scaling).length > 0 ? "rope_scaling" : "rope_parameters";
  // Parameters nested by layer type ({"full_attention": {...}}) when layer_types names them.
  const nested = Object.keys(params).filter((k) => raw.layer_types?.includes(k) || k === layerType);
  if (nested.length > 0 && layerType !== undefined) {
    const inner = params[layerType];
    params = typeof inner === "object" && inner !== null && !Array.isArray(inner) ? (inner as Record<string, unknown>) : {};
  } else if (nested.length > 0) {
    const inner = nested.map((k) => params[k]).filter((v): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v));
    const first = inner[0] ?? {};
    if (inner.some((p) => JSON.stringify(p) !== JSON.stringify(first))) {
      throw new UnsupportedError(`${source}: different RoPE parameters per layer type (${key}) are not supported yet`, { file: source });
    }
    params = first;
  }
  const type = params["rope_type"] ?? params["type"] ?? "default";
  const theta = params["rope_theta"] ?? raw.rope_theta ?? defaultTheta;
  if (typeof theta !== "number" || !(theta > 0)) {
    throw new CheckpointError(`${source}: rope_theta is ${jsonPreview(theta)}`, { file: source, hint: "config.json is corrupt" });
  }
  const partialFactor = params["partial_rotary_factor"] ?? raw.partial_rotary_factor;
  if (partialFactor !== undefined && partialFactor !== 1) {
    throw new UnsupportedError(`${source}: partial rotary embeddings (partial_rotary_factor ${jsonPreview(partialFactor)}) are not supported yet`, { file: source });
  }
  if (type === "longrope" || type === "su") return longRopeSettings(raw, params, headDim, theta, maxPositions, source);
  if (type !== "default" && type !== "linear" && type !== "llama3") {
    throw new UnsupportedError(`${source}: RoPE scaling (${key} type ${jsonPreview(type)}) is not supported yet; unscaled, linear, llama3 and longrope are`, {
      file: source, got: jsonPreview(type), hint: "models with YaRN or dynamic scaling cannot be evaluated by this version",
    });
  }
  const attentionFactor = params["attention_factor"];
  if (attentionFactor !== undefined && attentionFactor !== null && attentionFactor !== 1) {
    throw new UnsupportedError(`${source}: RoPE attention_factor ${jsonPreview(attentionFactor)} is not supported yet`, { file: source });
  }
  if (type === "default") return { theta };
  return { theta, factors: ropeScalingFactors(type as string, params, headDim, theta, source), scaling: { ...params } };
}

/** Gemma 3's local layers: RoPE unscaled, base rope_parameters.sliding_attention.rope_theta (older configs: rope_local_base_freq, default 10000). */
function gemma3LocalRope(raw: HfLlamaRawConfig, headDim: number, source: string, maxPositions: number): { theta: number } {
  const nested = raw.rope_parameters?.["sliding_attention"];
  if (typeof nested !== "object" || nested === null) return { theta: raw.rope_local_base_freq ?? 10_000 };
  const local = ropeSettings(raw, headDim, source, maxPositions, "sliding_attention", raw.rope_local_base_freq ?? 10_000);
  if (local.factors || local.attentionFactor !== undefined) throw new UnsupportedError(`${source}: RoPE scaling on Gemma 3's sliding-window layers is not supported yet`, { file: source });
  return { theta: local.theta };
}

/**
 * Resolves config.json into the family's config, filling transformers' defaults once.
 * Features the forward pass does not implement are refused with UnsupportedError rather than
 * computed wrongly: RoPE scaling, partial rotary, biases, activations other than SiLU,
 * attention types other than full. Mistral's sliding window is exact for windows no longer
 * than it, so it caps the context length instead.
 */
export function resolveHfLlamaConfig(raw: HfLlamaRawConfig, source: string): LlamaConfig {
  const modelType = raw.model_type;
  if (modelType === undefined || !(modelType in HF_LLAMA_MODEL_TYPES)) {
    const supported = [...Object.keys(HF_LLAMA_MODEL_TYPES), "gpt2"].join(", "); // gpt2: models/gpt2.ts
    throw new UnsupportedError(`${source}: model_type ${jsonPreview(modelType ?? null)} is not supported yet (supported: ${supported})`, {
      file: source, got: modelType ?? "(missing)", hint: `config.json model_type must be one of: ${supported}`,
    });
  }
  const qwen = modelType === "qwen2" || modelType === "qwen3";
  const defaults = DEFAULTS[modelType as keyof typeof DEFAULTS] ?? DEFAULTS.llama;
  const unsupported = (what: string): never => {
    throw new UnsupportedError(`${source}: ${what} is not supported yet`, { file: source, hint: "this version runs Llama, Mistral, Qwen2 and Qwen3 decoders" });
  };
  // Gemma 2/3 are Gemma (scaled embedding, (1 + w) norms, GELU gate) with sandwich norms and more (models/gemma2.ts).
  const sandwich = GEMMA_SANDWICH_MODEL_TYPES.has(modelType);
  const gemma = modelType === "gemma" || sandwich;
  // Baichuan2-13B replaces RoPE by ALiBi (same config fields, hidden size 5120).
  if (modelType === "baichuan" && (raw.hidden_size ?? 4096) === 5120) unsupported("Baichuan 13B (ALiBi position bias)");
  // Gemma runs GELU with the tanh approximation (transformers uses it when hidden_activation is unset).
  const activation = gemma ? raw.hidden_activation ?? "gelu_pytorch_tanh" : raw.hidden_act ?? "silu";
  if (gemma ? activation !== "gelu_pytorch_tanh" : activation !== "silu") unsupported(`hidden activation ${jsonPreview(activation)} (${gemma ? "only gelu_pytorch_tanh for gemma" : "only silu"})`);
  if (raw.attention_bias === true) unsupported("attention_bias true");
  if (raw.mlp_bias === true) unsupported("mlp_bias true");
  if (raw.quantization_config) unsupported(`a quantized checkpoint (quant_method ${jsonPreview(raw.quantization_config["quant_method"] ?? "unknown")})`);
  if (raw.architectures !== undefined && raw.architectures.length > 0 && !raw.architectures.some((a) => a.endsWith("ForCausalLM"))) {
    unsupported(`architecture ${raw.architectures.join(", ")} (only *ForCausalLM language models)`);
  }

  const dim = raw.hidden_size ?? defaults.hidden_size;
  const nHeads = raw.num_attention_heads ?? defaults.num_attention_heads;
  const nLayers = raw.num_hidden_layers ?? defaults.num_hidden_layers;
  if (raw.layer_types !== undefined && !sandwich) {
    if (raw.layer_types.length !== nLayers) {
      throw new CheckpointError(`${source}: layer_types has ${raw.layer_types.length} entries but num_hidden_layers is ${nLayers}`, {
        file: source, expected: nLayers, got: raw.layer_types.length, hint: "config.json is inconsistent",
      });
    }
    const other = raw.layer_types.find((t) => t !== "full_attention");
    if (other !== undefined) unsupported(`layer type ${jsonPreview(other)} (only full_attention)`);
  }
  const maxPositions = raw.max_position_embeddings ?? defaults.max_position_embeddings;
  let contextLength = maxPositions;
  // Gemma 2/3's window applies to their local layers only (models/gemma2.ts).
  const slidingWindow = sandwich || (qwen && raw.use_sliding_window !== true) ? null : raw.sliding_window === undefined ? defaults.sliding_window : raw.sliding_window;
  if (slidingWindow !== null) {
    if (!(slidingWindow > 0)) throw new CheckpointError(`${source}: sliding_window is ${slidingWindow}`, { file: source, hint: "config.json is corrupt" });
    // Up to `sliding_window` positions, sliding-window attention equals full causal attention.
    contextLength = Math.min(contextLength, slidingWindow);
  }
  if (nHeads <= 0 || (raw.head_dim == null && dim % nHeads !== 0)) {
    throw new CheckpointError(`${source}: hidden_size ${dim} is not a multiple of num_attention_heads ${nHeads}`, { file: source, hint: "config.json is corrupt" });
  }
  const headDim = raw.head_dim ?? (modelType === "qwen3" ? 128 : gemma ? 256 : Math.floor(dim / nHeads));
  checkConfigCount("headDim", headDim, source); // RoPE scaling allocates headDim / 2 factors
  // Gemma 3: global layers take rope_parameters.full_attention (base 1e6 by default), local ones sliding_attention.
  const rope = ropeSettings(raw, headDim, source, maxPositions, modelType === "gemma3_text" ? "full_attention" : undefined, modelType === "gemma3_text" ? 1_000_000 : DEFAULT_ROPE_THETA);
  if (rope.contextCap !== undefined) contextLength = Math.min(contextLength, rope.contextCap);
  const localRope = modelType === "gemma3_text" ? gemma3LocalRope(raw, headDim, source, maxPositions) : undefined;
  const config: LlamaConfig = {
    nLayers,
    dim,
    hiddenDim: raw.intermediate_size ?? defaults.intermediate_size,
    nHeads,
    // An explicit null means "same as num_attention_heads"; absent means the family's default.
    nKvHeads: (raw.num_key_value_heads === undefined ? defaults.num_key_value_heads : raw.num_key_value_heads) ?? nHeads,
    headDim,
    vocabSize: raw.vocab_size ?? defaults.vocab_size,
    contextLength,
    normEps: raw.rms_norm_eps ?? defaults.rms_norm_eps,
    ropeTheta: rope.theta,
    ...(rope.factors ? { ropeFreqFactors: rope.factors, ropeScaling: rope.scaling! } : {}),
    ...(modelType === "qwen2" ? { qkvBias: true } : {}),
    ...(modelType === "qwen3" ? { qkNorm: true } : {}),
    ...(gemma ? { activation: "gelu_tanh" as const, embeddingScale: Math.fround(Math.sqrt(dim)), normWeightOffset: 1 } : {}),
    ...(sandwich ? resolveGemmaSandwich(modelType, raw, nLayers, headDim, source) : {}),
    ...(localRope ? { localRope } : {}),
    ...(rope.attentionFactor !== undefined ? { ropeAttentionFactor: rope.attentionFactor } : {}),
    ...(rope.longFactors && rope.contextCap !== undefined ? { longRope: { longFactors: rope.longFactors, originalContext: rope.contextCap, trainedContext: maxPositions } } : {}),
  };
  checkLlamaConfig(config, source);
  if (config.headDim % 2 !== 0) throw new CheckpointError(`${source}: head_dim ${config.headDim} must be even for RoPE`, { file: source });
  return config;
}

const LM_HEAD = "lm_head.weight";
/** A name no checkpoint uses, so the loader falls back to the embedding (tied classifier). */
const TIED_CLASSIFIER = "(tied to model.embed_tokens.weight)";

function hfLayerNames(i: number): ReturnType<LlamaTensorNames["layer"]> {
  const p = `model.layers.${i}`;
  return {
    attnNorm: `${p}.input_layernorm.weight`,
    wq: `${p}.self_attn.q_proj.weight`,
    wk: `${p}.self_attn.k_proj.weight`,
    wv: `${p}.self_attn.v_proj.weight`,
    wo: `${p}.self_attn.o_proj.weight`,
    ffnNorm: `${p}.post_attention_layernorm.weight`,
    wGate: `${p}.mlp.gate_proj.weight`,
    wDown: `${p}.mlp.down_proj.weight`,
    wUp: `${p}.mlp.up_proj.weight`,
    bq: `${p}.self_attn.q_proj.bias`,
    bk: `${p}.self_attn.k_proj.bias`,
    bv: `${p}.self_attn.v_proj.bias`,
    qNorm: `${p}.self_attn.q_norm.weight`,
    kNorm: `${p}.self_attn.k_norm.weight`,
  };
}

/** RoPE inverse-frequency buffers that old transformers versions saved with the weights. */
function rotaryBuffers(nLayers: number): string[] {
  return Array.from({ length: nLayers }, (_, i) => `model.layers.${i}.self_attn.rotary_emb.inv_freq`);
}

/**
 * Hugging Face tensor names. Q/K rows are already in the rotate-half layout. The ignored set
 * covers saved rotary buffers of up to 1024 layers; use hfLlamaTensorNames for the exact set
 * and for tied classifiers.
 */
export const HF_LLAMA_NAMES: LlamaTensorNames = {
  embedding: "model.embed_tokens.weight",
  finalNorm: "model.norm.weight",
  classifier: LM_HEAD,
  layer: hfLayerNames,
  ignored: new Set(["model.rotary_emb.inv_freq", ...rotaryBuffers(1024)]),
  interleavedRope: false,
};

/**
 * The names for one checkpoint, following transformers: with tie_word_embeddings the
 * classifier is the embedding and a stored lm_head.weight is ignored; without it,
 * lm_head.weight must be present (transformers would initialise it randomly).
 */
export function hfLlamaTensorNames(raw: HfLlamaRawConfig, config: LlamaConfig, tensorNames: Iterable<string>, source: string): LlamaTensorNames {
  // GemmaConfig, Gemma2Config and Gemma3TextConfig tie by default.
  const tied = raw.tie_word_embeddings ?? (raw.model_type === "gemma" || GEMMA_SANDWICH_MODEL_TYPES.has(raw.model_type ?? ""));
  const present = new Set(tensorNames);
  const ignored = new Set(["model.rotary_emb.inv_freq", ...rotaryBuffers(config.nLayers)]);
  const layer = config.postNorms ? (i: number) => gemmaSandwichLayerNames(hfLayerNames(i), i) : hfLayerNames;
  if (tied) {
    ignored.add(LM_HEAD);
    return { ...HF_LLAMA_NAMES, layer, classifier: TIED_CLASSIFIER, ignored };
  }
  if (!present.has(LM_HEAD)) {
    throw new CheckpointError(`${source}: tensor ${LM_HEAD} is missing and tie_word_embeddings is false`, {
      file: source, tensor: LM_HEAD, hint: "the checkpoint is incomplete, or config.json should say tie_word_embeddings: true",
    });
  }
  return { ...HF_LLAMA_NAMES, layer, ignored };
}

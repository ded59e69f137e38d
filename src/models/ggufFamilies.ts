// The GGUF architectures that run on the Llama decoder, and what distinguishes them in a GGUF
// file (facts of llama.cpp's format): metadata under "<arch>.", the same blk.N tensor names
// (plus attn_{q,k,v}.bias for qwen2 and attn_{q,k}_norm for qwen3), and the RoPE layout: only
// "llama" stores Q/K rows interleaved; qwen2, qwen3 and gemma use the rotate-half ("NEOX")
// layout. Gemma's GGUF norm weights already hold 1 + w, and its embedding is scaled by sqrt(dim).
// gpt2 has its own names and layout (models/gpt2.ts). "baichuan" files (llama.cpp's converter)
// are Llama tensors; their output.weight is Baichuan2's head as stored, not row-normalized, and
// llama.cpp runs it so: shortgpt reads it the same way. shortgpt's own convert writes Baichuan
// as "llama" with the head normalized (the Hugging Face model's meaning), which llama.cpp runs
// at any depth (its baichuan graph only knows 32 and 40 layers).
// gemma2 and gemma3 are Gemma with sandwich norms (post_attention_norm, post_ffw_norm; gemma3 adds
// attn_q_norm/attn_k_norm, all stored as 1 + w). Which of their layers attend through a sliding
// window is not stored: llama.cpp derives it from the layer's position (gemma2: even layers;
// gemma3: all but every 6th), and scales attention by 1/sqrt(head_dim) whatever
// query_pre_attn_scalar was, except for the 27B layer counts (46, 62), which use
// 1/sqrt(embedding / heads). phi3 is a Llama with fused tensors (models/phi3.ts) and LongRoPE.

import { UnsupportedError } from "../errors.js";
import { GGUF_GPT2_NAMES, GPT2_FLAGS, isGpt2Config } from "./gpt2.js";
import { GGUF_MAMBA_NAMES } from "./mamba.js";
import { checkMamba2ForGguf, GGUF_MAMBA2_NAMES } from "./mamba2.js";
import { GGUF_RWKV6_NAMES } from "./rwkv6.js";
import { GGUF_RWKV7_NAMES } from "./rwkv7.js";
import { GGUF_LLAMA_NAMES, type LayerAttentionType, type LlamaConfig, type LlamaTensorNames } from "./llama.js";
import { GGUF_PHI3_NAMES } from "./phi3.js";

export const GGUF_ARCHITECTURES = ["llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3", "gpt2", "baichuan", "mamba", "mamba2", "rwkv6", "rwkv7"] as const;
export type GgufArchitecture = (typeof GGUF_ARCHITECTURES)[number];

export function isGgufArchitecture(arch: string | undefined): arch is GgufArchitecture {
  return (GGUF_ARCHITECTURES as readonly (string | undefined)[]).includes(arch);
}

export function ggufNames(arch: GgufArchitecture): LlamaTensorNames {
  if (arch === "gpt2") return GGUF_GPT2_NAMES;
  if (arch === "mamba") return GGUF_MAMBA_NAMES;
  if (arch === "phi3") return GGUF_PHI3_NAMES;
  if (arch === "gemma2" || arch === "gemma3") return GGUF_GEMMA_SANDWICH_NAMES;
  if (arch === "mamba2") return GGUF_MAMBA2_NAMES;
  if (arch === "rwkv6") return GGUF_RWKV6_NAMES;
  if (arch === "rwkv7") return GGUF_RWKV7_NAMES;
  // llama.cpp's converter splits Baichuan's W_pack into attn_q/k/v and permutes q and k like Llama's.
  return arch === "llama" || arch === "baichuan" ? GGUF_LLAMA_NAMES : { ...GGUF_LLAMA_NAMES, interleavedRope: false };
}

/** gemma2/gemma3 tensor names: rotate-half Q/K rows, and the sandwich norms. */
const GGUF_GEMMA_SANDWICH_NAMES: LlamaTensorNames = {
  ...GGUF_LLAMA_NAMES,
  layer: (i) => ({ ...GGUF_LLAMA_NAMES.layer(i), attnPostNorm: `blk.${i}.post_attention_norm.weight`, ffnPostNorm: `blk.${i}.post_ffw_norm.weight` }),
  interleavedRope: false,
};

/** Every how many layers llama.cpp makes one global (the rest slide): its set_swa_pattern for gemma2 and gemma3. */
const SWA_PATTERN: Readonly<Record<"gemma2" | "gemma3", number>> = { gemma2: 2, gemma3: 6 };
/** The layer counts llama.cpp takes for the 27B models, which it scales by 1/sqrt(embedding / heads). */
const GEMMA_27B_LAYERS: Readonly<Record<"gemma2" | "gemma3", number>> = { gemma2: 46, gemma3: 62 };
/** The RoPE base llama.cpp gives gemma3's sliding layers (rope_freq_base_train_swa; not stored in the file). */
export const GEMMA3_LOCAL_ROPE_THETA = 10_000;

/** Each layer's attention type as llama.cpp assigns it by position: every `pattern`-th layer global. */
export function ggufGemmaLayerTypes(arch: "gemma2" | "gemma3", nLayers: number): LayerAttentionType[] {
  const pattern = SWA_PATTERN[arch];
  return Array.from({ length: nLayers }, (_, i) => (i % pattern < pattern - 1 ? "sliding_attention" : "full_attention"));
}

/** The attention scale llama.cpp uses for a gemma2/gemma3 file of this shape, as shortgpt's attnScale (undefined: 1/sqrt(headDim)). */
export function ggufGemmaAttnScale(arch: "gemma2" | "gemma3", nLayers: number, dim: number, nHeads: number, headDim: number): number | undefined {
  if (nLayers !== GEMMA_27B_LAYERS[arch] || dim / nHeads === headDim) return undefined;
  return 1 / Math.sqrt(dim / nHeads);
}

export function isGemmaSandwichArchitecture(arch: string): arch is "gemma2" | "gemma3" {
  return arch === "gemma2" || arch === "gemma3";
}

/** What a family reads from the file's "<arch>." metadata besides the shared hyperparameters. */
export interface GgufHyperparameters {
  number(key: string): number | undefined;
  nLayers: number;
  nHeads: number;
  headDim: number;
}

/** gemma2/gemma3 as llama.cpp loads them (llama_model::load_hparams): defaults, soft-caps, window, layer types. */
function gemmaSandwichFlags(arch: "gemma2" | "gemma3", dim: number, h: GgufHyperparameters): Partial<LlamaConfig> {
  // gemma2: window 4096 and soft-caps 50 / 30 unless stored; gemma3: no attention soft-cap, a final one only when stored.
  const window = h.number("attention.sliding_window") ?? (arch === "gemma2" ? 4096 : 0);
  const attnSoftcap = arch === "gemma2" ? h.number("attn_logit_softcapping") ?? 50 : undefined;
  const logitSoftcap = h.number("final_logit_softcapping") ?? (arch === "gemma2" ? 30 : 0);
  const attnScale = ggufGemmaAttnScale(arch, h.nLayers, dim, h.nHeads, h.headDim);
  return {
    activation: "gelu_tanh", embeddingScale: Math.fround(Math.sqrt(dim)), postNorms: true,
    ...(arch === "gemma3" ? { qkNorm: true } : {}),
    ...(attnScale !== undefined ? { attnScale } : {}),
    ...(attnSoftcap !== undefined && attnSoftcap > 0 ? { attnSoftcap } : {}),
    ...(logitSoftcap > 0 ? { logitSoftcap } : {}),
    // gemma3 without a window: every layer global (llama.cpp: LLAMA_SWA_TYPE_NONE).
    ...(window > 0 ? { layerTypes: ggufGemmaLayerTypes(arch, h.nLayers), slidingWindow: window } : {}),
    ...(arch === "gemma3" && window > 0 ? { localRope: { theta: GEMMA3_LOCAL_ROPE_THETA } } : {}),
  };
}

/** The family's flags on top of the shared hyperparameters. */
export function ggufFamilyFlags(arch: GgufArchitecture, dim: number, h: GgufHyperparameters): Partial<LlamaConfig> {
  switch (arch) {
    case "gemma2":
    case "gemma3":
      return gemmaSandwichFlags(arch, dim, h);
    case "qwen2":
      return { qkvBias: true };
    case "qwen3":
      return { qkNorm: true };
    case "gemma":
      return { activation: "gelu_tanh", embeddingScale: Math.fround(Math.sqrt(dim)) };
    case "gpt2":
      return GPT2_FLAGS;
    default:
      return {};
  }
}

/** The architecture a config runs as in GGUF; `family` is the checkpoint's own (a Phi-3 without LongRoPE stays phi3). */
export function ggufArchitectureOf(config: LlamaConfig, family?: string): GgufArchitecture {
  if (config.mamba) return "mamba";
  if (config.mamba2) {
    checkMamba2ForGguf(config.mamba2);
    return "mamba2";
  }
  if (config.rwkv6) return "rwkv6";
  if (config.rwkv7) return "rwkv7";
  if (config.rwkvAttDim !== undefined) {
    throw new UnsupportedError("RWKV-4 has no GGUF architecture in llama.cpp (it runs rwkv6 and rwkv7)", { hint: "keep RWKV-4 as a Hugging Face directory; prune it there" });
  }
  if (isGpt2Config(config)) return "gpt2";
  if (config.qkvBias) return "qwen2";
  if (config.postNorms) return config.qkNorm ? "gemma3" : "gemma2";
  if (config.longRope || family === "phi3") return "phi3";
  if (config.qkNorm) return "qwen3";
  if (config.activation !== undefined) return "gemma";
  return "llama";
}

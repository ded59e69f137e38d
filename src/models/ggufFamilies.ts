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

import { UnsupportedError } from "../errors.js";
import { GGUF_GPT2_NAMES, GPT2_FLAGS, isGpt2Config } from "./gpt2.js";
import { GGUF_MAMBA_NAMES } from "./mamba.js";
import { GGUF_RWKV7_NAMES } from "./rwkv7.js";
import { GGUF_LLAMA_NAMES, type LlamaConfig, type LlamaTensorNames } from "./llama.js";

export const GGUF_ARCHITECTURES = ["llama", "qwen2", "qwen3", "gemma", "gpt2", "baichuan", "mamba", "rwkv7"] as const;
export type GgufArchitecture = (typeof GGUF_ARCHITECTURES)[number];

export function isGgufArchitecture(arch: string | undefined): arch is GgufArchitecture {
  return (GGUF_ARCHITECTURES as readonly (string | undefined)[]).includes(arch);
}

export function ggufNames(arch: GgufArchitecture): LlamaTensorNames {
  if (arch === "gpt2") return GGUF_GPT2_NAMES;
  if (arch === "mamba") return GGUF_MAMBA_NAMES;
  if (arch === "rwkv7") return GGUF_RWKV7_NAMES;
  // llama.cpp's converter splits Baichuan's W_pack into attn_q/k/v and permutes q and k like Llama's.
  return arch === "llama" || arch === "baichuan" ? GGUF_LLAMA_NAMES : { ...GGUF_LLAMA_NAMES, interleavedRope: false };
}

/** The family's flags on top of the shared hyperparameters. */
export function ggufFamilyFlags(arch: GgufArchitecture, dim: number): Partial<LlamaConfig> {
  switch (arch) {
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

/** The architecture a config runs as in GGUF. */
export function ggufArchitectureOf(config: LlamaConfig): GgufArchitecture {
  if (config.mamba) return "mamba";
  if (config.rwkv7) return "rwkv7";
  if (config.rwkvAttDim !== undefined) {
    throw new UnsupportedError("RWKV-4 has no GGUF architecture in llama.cpp (it runs rwkv6 and rwkv7)", { hint: "keep RWKV-4 as a Hugging Face directory; prune it there" });
  }
  if (isGpt2Config(config)) return "gpt2";
  if (config.qkvBias) return "qwen2";
  if (config.qkNorm) return "qwen3";
  if (config.activation !== undefined) return "gemma";
  return "llama";
}

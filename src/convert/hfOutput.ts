// The config.json of a Hugging Face checkpoint written by shortgpt convert, per family.

import { UnsupportedError } from "../errors.js";
import type { GgufArchitecture } from "../models/ggufFamilies.js";
import { linearRopeFactor } from "./ggufMetadata.js";
import type { LlamaConfig } from "../models/llama.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";

/** Files that make up a Hugging Face tokenizer, copied along when the input has them. */
export const HF_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json"];

const TORCH_DTYPE: Record<string, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/**
 * rope_scaling for config.json: the dict the model came with, or "linear" when every frequency
 * has one divisor. Llama 3's parameters cannot be recovered from a GGUF rope_freqs tensor.
 */
function ropeScalingJson(config: LlamaConfig): Record<string, unknown> | undefined {
  if (!config.ropeFreqFactors) return undefined;
  if (config.ropeScaling) return { ...config.ropeScaling };
  const factor = linearRopeFactor(config.ropeFreqFactors);
  if (factor !== undefined) return { rope_type: "linear", factor };
  throw new UnsupportedError("the model's RoPE scaling (per-frequency factors from a GGUF rope_freqs tensor) has no Hugging Face rope_scaling equivalent shortgpt can write", {
    hint: "convert from the original Hugging Face checkpoint, or keep the model as GGUF",
  });
}

/** config.json for the family, with the fields transformers reads for it (GPT-2 spells its own). */
export function hfConfigJson(family: GgufArchitecture, config: LlamaConfig, tokenizer: Tokenizer, dtype: string, tiedEmbeddings: boolean): Record<string, unknown> {
  // The BOS token itself (a tokenizer that does not add it still has one), null when there is none.
  const bos = tokenizer.bosId;
  const special = { bos_token_id: bos >= 0 ? bos : null, eos_token_id: tokenizer.eosId >= 0 ? tokenizer.eosId : null, torch_dtype: TORCH_DTYPE[dtype] ?? "float32" };
  if (family === "gpt2") {
    return {
      architectures: ["GPT2LMHeadModel"], model_type: "gpt2",
      n_embd: config.dim, n_layer: config.nLayers, n_head: config.nHeads, n_positions: config.contextLength, n_ctx: config.contextLength,
      n_inner: config.hiddenDim, activation_function: "gelu_new", layer_norm_epsilon: config.normEps, vocab_size: config.vocabSize,
      scale_attn_weights: true, scale_attn_by_inverse_layer_idx: false, reorder_and_upcast_attn: false, tie_word_embeddings: tiedEmbeddings, ...special,
    };
  }
  // (mamba, mamba2, rwkv6, rwkv7: convert refuses them before a config is made.)
  const architecture: Record<Exclude<GgufArchitecture, "gpt2" | "mamba" | "mamba2" | "rwkv6" | "rwkv7" | "gemma2" | "gemma3" | "phi3">, [string, string]> = {
    llama: ["LlamaForCausalLM", "llama"], baichuan: ["LlamaForCausalLM", "llama"], qwen2: ["Qwen2ForCausalLM", "qwen2"], qwen3: ["Qwen3ForCausalLM", "qwen3"], gemma: ["GemmaForCausalLM", "gemma"],
  };
  if (family === "mamba" || family === "mamba2" || family === "rwkv6" || family === "rwkv7") throw new UnsupportedError(`a ${family} config.json is not written yet`, { got: family });
  // (gemma2, gemma3, phi3: toSafetensors refuses them; their sandwich norms, layer types and LongRoPE have no writer here.)
  if (family === "gemma2" || family === "gemma3" || family === "phi3") throw new UnsupportedError(`a ${family} config.json is not written yet`, { got: family });
  const [className, modelType] = architecture[family];
  const scaling = ropeScalingJson(config);
  const act = family === "gemma" ? { hidden_act: "gelu_pytorch_tanh", hidden_activation: "gelu_pytorch_tanh" } : { hidden_act: "silu" };
  return {
    architectures: [className],
    model_type: modelType,
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    head_dim: config.headDim,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.contextLength,
    rms_norm_eps: config.normEps,
    rope_theta: config.ropeTheta,
    ...(scaling ? { rope_scaling: scaling } : {}),
    ...act,
    // Qwen2's q/k/v biases are implied by its model type; Llama and Qwen3 say they have none.
    ...(family === "qwen2" ? { use_sliding_window: false } : { attention_bias: false }),
    ...(family === "qwen3" ? { use_sliding_window: false } : {}),
    ...(family === "llama" || family === "baichuan" ? { mlp_bias: false } : {}),
    tie_word_embeddings: tiedEmbeddings,
    ...special,
  };
}

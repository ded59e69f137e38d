// The config.json of a Hugging Face Llama checkpoint written by shortgpt convert.

import type { LlamaConfig } from "../models/llama.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";

/** Files that make up a Hugging Face tokenizer, copied along when the input has them. */
export const HF_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json"];

const TORCH_DTYPE: Record<string, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

export function hfLlamaConfigJson(config: LlamaConfig, tokenizer: Tokenizer, dtype: string, tiedEmbeddings: boolean): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
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
    hidden_act: "silu",
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: tiedEmbeddings,
    bos_token_id: tokenizer.bosId,
    eos_token_id: tokenizer.eosId,
    torch_dtype: TORCH_DTYPE[dtype] ?? "float32",
  };
}

// RWKV-6 ("Finch") as llama.cpp's GGUF architecture "rwkv6" on the shared layer-streaming engine:
// its metadata resolved once into a config whose layers are of kind "rwkv6", its tensor names, and
// the view that applies token_embd_norm to the embedding table. As with RWKV-4's ln0, that norm
// belongs to the embedding: the stream entering block 0 is after it, and removing block 0 keeps it
// (it is not a block tensor in the file, so prune leaves it where it is).
//
// Facts of the format (llama.cpp's converter and llama_model_rwkv6): metadata rwkv6.{embedding_length,
// block_count, feed_forward_length, attention.layer_norm_epsilon, wkv.head_size, time_mix_extra_dim,
// time_decay_extra_dim, rescale_every_n_layers (optional, 0 = never), token_shift_count (2)};
// attention.head_count is written as 0 and unused. Tensors token_embd, token_embd_norm.{weight,bias},
// output_norm.{weight,bias}, output; per block blk.N.{attn_norm, attn_norm_2 (with biases),
// time_mix_{lerp_x, w1, w2, lerp_fused, first, decay, decay_w1, decay_w2, key, value, receptance,
// gate, ln (with bias), output}, channel_mix_{lerp_k, lerp_r, key, value, receptance}}. Older files
// with separate time_mix_lerp_{w,k,v,r,g} instead of lerp_fused are refused with a hint.

import { CheckpointError, UnsupportedError } from "../errors.js";
import type { TensorProvider } from "../tensor/provider.js";
import { checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";
import { RECURRENT_CONTEXT } from "./mamba.js";
import { embeddingNormView } from "./rwkv.js";

/** The LayerNorm llama.cpp applies to the embedding before block 0. */
export const RWKV6_EMBEDDING_NORM = { weight: "token_embd_norm.weight", bias: "token_embd_norm.bias" } as const;
const EMBEDDING = "token_embd.weight";

export const GGUF_RWKV6_NAMES: LlamaTensorNames = {
  embedding: EMBEDDING,
  finalNorm: "output_norm.weight",
  finalNormBias: "output_norm.bias",
  classifier: "output.weight",
  layer: (i) => {
    const b = `blk.${i}`;
    return {
      attnNorm: `${b}.attn_norm.weight`, attnNormBias: `${b}.attn_norm.bias`,
      ffnNorm: `${b}.attn_norm_2.weight`, ffnNormBias: `${b}.attn_norm_2.bias`,
      rwkv6LerpX: `${b}.time_mix_lerp_x.weight`, rwkv6MixW1: `${b}.time_mix_w1.weight`, rwkv6MixW2: `${b}.time_mix_w2.weight`,
      rwkv6LerpFused: `${b}.time_mix_lerp_fused.weight`,
      rwkvTimeFirst: `${b}.time_mix_first.weight`, rwkvTimeDecay: `${b}.time_mix_decay.weight`,
      rwkv6DecayW1: `${b}.time_mix_decay_w1.weight`, rwkv6DecayW2: `${b}.time_mix_decay_w2.weight`,
      wk: `${b}.time_mix_key.weight`, wv: `${b}.time_mix_value.weight`, rwkvReceptance: `${b}.time_mix_receptance.weight`, rwkv6Gate: `${b}.time_mix_gate.weight`,
      rwkv6LnX: `${b}.time_mix_ln.weight`, rwkv6LnXBias: `${b}.time_mix_ln.bias`, wo: `${b}.time_mix_output.weight`,
      rwkv6FfnLerpK: `${b}.channel_mix_lerp_k.weight`, rwkv6FfnLerpR: `${b}.channel_mix_lerp_r.weight`,
      wUp: `${b}.channel_mix_key.weight`, wDown: `${b}.channel_mix_value.weight`, rwkvFfnReceptance: `${b}.channel_mix_receptance.weight`,
    };
  },
  // token_embd_norm is read by ggufRwkv6View into the embedding.
  ignored: new Set([RWKV6_EMBEDDING_NORM.weight, RWKV6_EMBEDDING_NORM.bias]),
  interleavedRope: false,
};

/**
 * The config of an rwkv6 GGUF from its metadata (`meta(key)` reads rwkv6.<key>); `hasTensor` tells
 * the fused token-shift lerp from the older separate tensors.
 */
export function rwkv6ConfigFromGguf(meta: (key: string) => number | undefined, hasTensor: (name: string) => boolean, vocabSize: number, source: string): LlamaConfig {
  const need = (key: string): number => {
    const v = meta(key);
    if (v === undefined) throw new CheckpointError(`${source}: metadata rwkv6.${key} is missing`, { file: source, hint: "the GGUF file is incomplete; llama.cpp's converter writes it" });
    return v;
  };
  const dim = need("embedding_length");
  const headSize = need("wkv.head_size");
  if (!(Number.isInteger(headSize) && headSize > 0 && dim % headSize === 0)) {
    throw new CheckpointError(`${source}: rwkv6.wkv.head_size ${headSize} does not divide the embedding length ${dim}`, { file: source, expected: `a divisor of ${dim}`, got: headSize, hint: "the GGUF file is corrupt" });
  }
  const shifts = meta("token_shift_count") ?? 2;
  if (shifts !== 2) throw new UnsupportedError(`${source}: rwkv6.token_shift_count is ${shifts}; RWKV-6 shifts 2 (time and channel mixing)`, { file: source, got: shifts, hint: "the file is not an RWKV-6 model llama.cpp runs" });
  if (!hasTensor("blk.0.time_mix_lerp_fused.weight") && hasTensor("blk.0.time_mix_lerp_w.weight")) {
    throw new UnsupportedError(`${source}: the token-shift lerps are stored separately (time_mix_lerp_w/k/v/r/g), not fused`, {
      file: source, tensor: "blk.0.time_mix_lerp_fused.weight", hint: "reconvert the model with a current llama.cpp convert_hf_to_gguf.py, which writes time_mix_lerp_fused",
    });
  }
  const rescaleEvery = meta("rescale_every_n_layers") ?? 0;
  const config: LlamaConfig = {
    nLayers: need("block_count"), dim, hiddenDim: need("feed_forward_length"),
    // The WKV heads stand in for attention heads (the shared config checks stay meaningful).
    nHeads: dim / headSize, nKvHeads: dim / headSize, headDim: headSize,
    vocabSize: meta("vocab_size") ?? vocabSize, contextLength: RECURRENT_CONTEXT,
    normEps: need("attention.layer_norm_epsilon"), ropeTheta: 10000, // unused
    layerNorm: true,
    rwkv6: { headSize, mixExtraDim: need("time_mix_extra_dim"), decayExtraDim: need("time_decay_extra_dim") },
    ...(rescaleEvery > 0 ? { rwkvRescaleEvery: rescaleEvery } : {}),
  };
  checkLlamaConfig(config, source);
  return config;
}

/** The stored tensors with the embedding read as token_embd_norm(embedding). */
export function ggufRwkv6View(stored: TensorProvider, eps: number): TensorProvider {
  return embeddingNormView(stored, eps, { embedding: EMBEDDING, ...RWKV6_EMBEDDING_NORM }, "llama.cpp's rwkv6 holds token_embd_norm (the first block's LayerNorm on the embedding); the file is incomplete");
}

// RWKV-7 ("Goose") as llama.cpp's GGUF architecture rwkv7 on the shared layer-streaming engine:
// its metadata resolved once into a config whose layers are of kind "rwkv7", its tensor names,
// and the view that reads the embedding through token_embd_norm (as RWKV-4's ln0: the residual
// stream entering block 0 is after it, so Block Influence of block 0 compares that stream with
// block 0's output, and removing block 0 keeps the norm, which is not a block tensor).
//
// The value residual: every block after the first mixes the first block's value vectors
// ("v_first") into its own. That is a per-token input the residual stream does not carry, so the
// engine carries it beside the stream (SideStreams, backend.ts): the first block that RUNS sets
// it and the later ones read it. That is what llama.cpp computes on a pruned file, whose first
// kept block is its il == 0; scoring with blocks skipped therefore predicts the pruned file
// exactly. Block Influence stays the cosine of the residual stream alone.
//
// Facts of the format (llama.cpp's rwkv7 loader, gguf-py's MODEL_ARCH.RWKV7): metadata
// rwkv7.{embedding_length, block_count, feed_forward_length, attention.layer_norm_epsilon,
// wkv.head_size, attention.{decay, iclr, value_residual_mix, gate}_lora_rank}; tensors
// token_embd, token_embd_norm, output_norm (LayerNorms with biases), output, blk.N.{attn_norm,
// attn_norm_2, time_mix_{lerp_fused (r, w, k, v, a, g), w0, w1, w2, a0, a1, a2, v0, v1, v2, g1,
// g2, k_k, k_a, r_k, key, value, receptance, ln, output}, channel_mix_{lerp_k, key, value}}.
// Block 0's v0/v1/v2 are stored with the iclr rank and never read (block 0 sets v_first).

import { CheckpointError } from "../errors.js";
import { gatherTensorRows, readTensorRows, type TensorProvider } from "../tensor/provider.js";
import { checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";
import { RECURRENT_CONTEXT } from "./mamba.js";
import { embeddingNormView, GGUF_RWKV_EMBEDDING, GGUF_RWKV_EMBEDDING_NORM, ggufRwkvNames } from "./rwkv.js";

/** The LayerNorm on the embedding (RWKV's ln0). */

export const GGUF_RWKV7_NAMES: LlamaTensorNames = ggufRwkvNames((b) => {
  const t = (name: string): string => `${b}.time_mix_${name}.weight`;
  return {
    rwkv7Lerp: t("lerp_fused"), rwkv7W0: t("w0"), rwkv7W1: t("w1"), rwkv7W2: t("w2"),
    rwkv7A0: t("a0"), rwkv7A1: t("a1"), rwkv7A2: t("a2"), rwkv7V0: t("v0"), rwkv7V1: t("v1"), rwkv7V2: t("v2"),
    rwkv7G1: t("g1"), rwkv7G2: t("g2"), rwkv7KK: t("k_k"), rwkv7KA: t("k_a"), rwkv7RK: t("r_k"),
    wk: t("key"), wv: t("value"), rwkvReceptance: t("receptance"), wo: t("output"),
    rwkv7LnX: t("ln"), rwkv7LnXBias: `${b}.time_mix_ln.bias`,
    rwkvFfnMixK: `${b}.channel_mix_lerp_k.weight`, wUp: `${b}.channel_mix_key.weight`, wDown: `${b}.channel_mix_value.weight`,
  };
});

/** The config of an rwkv7 GGUF from its metadata (`meta(key)` reads rwkv7.<key>). */
export function rwkv7ConfigFromGguf(meta: (key: string) => number | undefined, vocabSize: number, source: string): LlamaConfig {
  const need = (key: string): number => {
    const v = meta(key);
    if (v === undefined) throw new CheckpointError(`${source}: metadata rwkv7.${key} is missing`, { file: source, hint: "the GGUF file is incomplete (llama.cpp's rwkv7 needs it too)" });
    if (!(Number.isInteger(v) && v >= 1 && v <= 1 << 20) && key !== "attention.layer_norm_epsilon") {
      throw new CheckpointError(`${source}: metadata rwkv7.${key} is ${v}, expected a positive integer`, { file: source, got: v, hint: "the GGUF file is corrupt" });
    }
    return v;
  };
  const dim = need("embedding_length");
  const headSize = need("wkv.head_size");
  if (dim % headSize !== 0) {
    throw new CheckpointError(`${source}: rwkv7.wkv.head_size ${headSize} does not divide the embedding length ${dim}`, { file: source, expected: `a divisor of ${dim}`, got: headSize, hint: "the GGUF file is corrupt" });
  }
  const config: LlamaConfig = {
    nLayers: need("block_count"), dim, hiddenDim: need("feed_forward_length"),
    // The heads of the WKV state stand in for attention heads in the shared config checks.
    nHeads: dim / headSize, nKvHeads: dim / headSize, headDim: headSize,
    vocabSize: meta("vocab_size") ?? vocabSize, contextLength: RECURRENT_CONTEXT,
    normEps: need("attention.layer_norm_epsilon"), ropeTheta: 10000, // unused
    layerNorm: true,
    rwkv7: {
      headSize, decayRank: need("attention.decay_lora_rank"), iclrRank: need("attention.iclr_lora_rank"),
      valueRank: need("attention.value_residual_mix_lora_rank"), gateRank: need("attention.gate_lora_rank"),
    },
  };
  checkLlamaConfig(config, source);
  return config;
}

const FIRST_BLOCK_VALUE_LORA = /^blk\.0\.time_mix_v[12]\.weight$/;

/**
 * An rwkv7 GGUF's tensors as the engine reads them: the embedding through token_embd_norm, and
 * block 0's unused value-residual LoRA (stored with the iclr rank) as zeros of the value rank,
 * so that every block has one shape. Block 0 never reads it: it runs first whenever it runs.
 */
export function ggufRwkv7View(stored: TensorProvider, config: LlamaConfig): TensorProvider {
  const normed = embeddingNormView(stored, config.normEps, { embedding: GGUF_RWKV_EMBEDDING, ...GGUF_RWKV_EMBEDDING_NORM }, "an rwkv7 GGUF holds token_embd_norm (the LayerNorm on the embedding); the file is incomplete");
  const { dim } = config;
  const { iclrRank, valueRank } = config.rwkv7!;
  // (rank, dim) for v1, (dim, rank) for v2, with the rank llama.cpp stores at block 0.
  const asValueRank = (name: string, shape: readonly number[]): number[] | undefined => {
    const v1 = name.endsWith("v1.weight");
    const stored = v1 ? [iclrRank, dim] : [dim, iclrRank];
    if (shape.length !== 2 || shape[0] !== stored[0] || shape[1] !== stored[1]) return undefined; // left for the strict shape check to name
    return v1 ? [valueRank, dim] : [dim, valueRank];
  };
  return {
    source: stored.source,
    entries: () => normed.entries().map((e) => {
      const shape = FIRST_BLOCK_VALUE_LORA.test(e.name) ? asValueRank(e.name, e.shape) : undefined;
      return shape ? { ...e, shape } : e;
    }),
    readF32: (name) => (FIRST_BLOCK_VALUE_LORA.test(name) ? new Float32Array(valueRank * dim) : normed.readF32(name)),
    // A run embeds its tokens' rows alone: normalizing the whole table (65536 x 2048 for the 1.5B) cost more than a layer.
    readRowsF32: (name, rows) =>
      FIRST_BLOCK_VALUE_LORA.test(name) ? gatherTensorRows(new Float32Array(valueRank * dim), name.endsWith("v1.weight") ? valueRank : dim, rows, name, stored.source) : readTensorRows(normed, name, rows),
  };
}

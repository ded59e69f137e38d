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
// store time_mix_lerp_{w,k,v,r,g} separately instead of lerp_fused (llama.cpp still loads them):
// the view reads them as one fused tensor.

import { CheckpointError, UnsupportedError } from "../errors.js";
import type { TensorProvider } from "../tensor/provider.js";
import { checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";
import { RECURRENT_CONTEXT } from "./mamba.js";
import { embeddingNormView, GGUF_RWKV_EMBEDDING, GGUF_RWKV_EMBEDDING_NORM, ggufRwkvNames } from "./rwkv.js";

/** The LayerNorm llama.cpp applies to the embedding before block 0. */

export const GGUF_RWKV6_NAMES: LlamaTensorNames = ggufRwkvNames((b) => ({
  rwkv6LerpX: `${b}.time_mix_lerp_x.weight`, rwkv6MixW1: `${b}.time_mix_w1.weight`, rwkv6MixW2: `${b}.time_mix_w2.weight`,
  rwkv6LerpFused: `${b}.time_mix_lerp_fused.weight`,
  rwkvTimeFirst: `${b}.time_mix_first.weight`, rwkvTimeDecay: `${b}.time_mix_decay.weight`,
  rwkv6DecayW1: `${b}.time_mix_decay_w1.weight`, rwkv6DecayW2: `${b}.time_mix_decay_w2.weight`,
  wk: `${b}.time_mix_key.weight`, wv: `${b}.time_mix_value.weight`, rwkvReceptance: `${b}.time_mix_receptance.weight`, rwkv6Gate: `${b}.time_mix_gate.weight`,
  rwkv6LnX: `${b}.time_mix_ln.weight`, rwkv6LnXBias: `${b}.time_mix_ln.bias`, wo: `${b}.time_mix_output.weight`,
  rwkv6FfnLerpK: `${b}.channel_mix_lerp_k.weight`, rwkv6FfnLerpR: `${b}.channel_mix_lerp_r.weight`,
  wUp: `${b}.channel_mix_key.weight`, wDown: `${b}.channel_mix_value.weight`, rwkvFfnReceptance: `${b}.channel_mix_receptance.weight`,
}));

/** The config of an rwkv6 GGUF from its metadata (`meta(key)` reads rwkv6.<key>). */
export function rwkv6ConfigFromGguf(meta: (key: string) => number | undefined, vocabSize: number, source: string): LlamaConfig {
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

/**
 * The stored tensors with the embedding read as token_embd_norm(embedding), separate token-shift
 * lerps read fused, and, in a file with rescale_every_n_layers n, each block's output weights
 * read unscaled (see unscaledOutputsView).
 */
export function ggufRwkv6View(stored: TensorProvider, eps: number, rescaleEvery = 0): TensorProvider {
  const viewed = embeddingNormView(fusedLerpView(stored), eps, { embedding: GGUF_RWKV_EMBEDDING, ...GGUF_RWKV_EMBEDDING_NORM }, "llama.cpp's rwkv6 holds token_embd_norm (the first block's LayerNorm on the embedding); the file is incomplete");
  return rescaleEvery > 0 ? unscaledOutputsView(viewed, rescaleEvery) : viewed;
}

const RESCALED_OUTPUT = /^blk\.(\d+)\.(time_mix_output|channel_mix_value)\.weight$/;

/**
 * llama.cpp halves the stream after every n blocks of a file with rescale_every_n_layers n, and
 * block b's output weights are stored divided by 2^floor(b/n) to match. Since every block reads
 * the stream through a LayerNorm (and the head through one), that is the unscaled model with the
 * stream 2^floor(b/n) smaller (up to LayerNorm's eps): the engine computes the unscaled model,
 * reading block b's output weights times 2^floor(b/n) (exact). Then skipping a block in memory is
 * the same model as the file prune writes without it, which rescales by the new index, and Block
 * Influence (a cosine) is the same either way.
 */
function unscaledOutputsView(stored: TensorProvider, every: number): TensorProvider {
  return {
    ...stored,
    readF32: (name) => {
      const values = stored.readF32(name);
      const match = RESCALED_OUTPUT.exec(name);
      const scale = match ? 2 ** Math.floor(Number(match[1]) / every) : 1;
      if (scale !== 1) for (let i = 0; i < values.length; i++) values[i]! *= scale;
      return values;
    },
  };
}

/** The five token-shift branches in llama.cpp's fused order. */
const LERP_BRANCHES = ["w", "k", "v", "r", "g"] as const;
const SEPARATE_LERP = /^blk\.(\d+)\.time_mix_lerp_([wkvrg])\.weight$/;

/**
 * A block that stores time_mix_lerp_{w,k,v,r,g} (older converters) shows them as one
 * time_mix_lerp_fused (5, 1, 1, dim), as llama.cpp's graph treats either. A block with only some
 * of the five is left as stored, so the strict loader names what is missing or extra.
 */
function fusedLerpView(stored: TensorProvider): TensorProvider {
  const entries = stored.entries();
  const byName = new Map(entries.map((e) => [e.name, e]));
  const fusedBlocks = new Map<string, string[]>(); // fused name -> the five stored names
  for (const e of entries) {
    const match = SEPARATE_LERP.exec(e.name);
    if (!match || match[2] !== "w") continue;
    const parts = LERP_BRANCHES.map((b) => `blk.${match[1]}.time_mix_lerp_${b}.weight`);
    const fused = `blk.${match[1]}.time_mix_lerp_fused.weight`;
    if (!byName.has(fused) && parts.every((name) => byName.has(name))) fusedBlocks.set(fused, parts);
  }
  if (fusedBlocks.size === 0) return stored;
  const hidden = new Set([...fusedBlocks.values()].flat());
  return {
    source: stored.source,
    entries: () => entries.flatMap((e) => {
      if (!hidden.has(e.name)) return [e];
      const match = SEPARATE_LERP.exec(e.name)!;
      if (match[2] !== "w") return [];
      const dim = e.shape.reduce((a, b) => a * b, 1);
      return [{ name: `blk.${match[1]}.time_mix_lerp_fused.weight`, shape: [5, 1, 1, dim], dtype: e.dtype }];
    }),
    readF32: (name) => {
      const parts = fusedBlocks.get(name);
      if (!parts) return stored.readF32(name);
      const values = parts.map((part) => stored.readF32(part));
      const dim = values[0]!.length;
      const bad = parts.find((_, i) => values[i]!.length !== dim);
      if (bad !== undefined) throw new CheckpointError(`${stored.source}: tensor ${bad} has ${values[parts.indexOf(bad)]!.length} values, ${parts[0]} has ${dim}`, { file: stored.source, tensor: bad, expected: dim, hint: "the file is corrupt" });
      const out = new Float32Array(5 * dim);
      values.forEach((v, i) => out.set(v, i * dim));
      return out;
    },
  };
}

/** The block tensors llama.cpp's converter divides by 2^floor(block / rescale_every_n_layers). */
const RESCALED_TENSORS: ReadonlySet<string> = new Set(["time_mix_output.weight", "channel_mix_value.weight"]);

/**
 * In a file with rescale_every_n_layers `every`, block b's output weights are divided by
 * 2^floor(b / every) to match the stream, halved after every `every` blocks. A kept block moving from
 * `from` to `to` when blocks are removed must then be multiplied by 2^exponent (this exponent) for its
 * `suffix` (the name after "blk.N."), so that the file equals the converter's output for the model
 * with those blocks removed. 0 for every other tensor, and when `every` is 0.
 */
export function rwkv6RescaleExponent(suffix: string, from: number, to: number, every: number): number {
  if (every <= 0 || !RESCALED_TENSORS.has(suffix)) return 0;
  return Math.floor(from / every) - Math.floor(to / every);
}

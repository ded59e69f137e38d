// RWKV-4 (transformers' RwkvForCausalLM) on the shared layer-streaming engine: its config.json
// resolved once into a config whose layers are of kind "rwkv4", its tensor names, and the view
// that applies the first block's pre_ln (ln0) to the embedding table. As in the official code,
// ln0 belongs to the embedding: the residual stream entering block 0 is after it, so Block
// Influence of block 0 compares that stream with block 0's output, and removing block 0 keeps ln0
// (prune moves it to the new first block).
//
// Facts of the format (transformers' modeling_rwkv): names rwkv.embeddings, rwkv.blocks.N.{pre_ln
// (N = 0 only), ln1, ln2, attention.{key, value, receptance, output, time_decay, time_first,
// time_mix_key, time_mix_value, time_mix_receptance}, feed_forward.{key, value, receptance,
// time_mix_key, time_mix_receptance}}, rwkv.ln_out, head; attention_hidden_size defaults to
// hidden_size, intermediate_size to 4 * hidden_size. rescale_every (halving the stream every N
// blocks at inference, with the weights scaled to match) changes nothing but the stream's scale
// up to LayerNorm's eps; the engine computes the unscaled model.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { readTensorRows, type TensorProvider } from "../tensor/provider.js";
import { type FieldSpec, parseHfConfigFields } from "./hfLlamaConfig.js";
import type { LayerWeightName } from "../backend/backend.js";
import { checkConfigCount, checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";
import { RECURRENT_CONTEXT } from "./mamba.js";

interface HfRwkvRawConfig {
  hidden_size?: number;
  num_hidden_layers?: number;
  vocab_size?: number;
  attention_hidden_size?: number | null;
  intermediate_size?: number | null;
  layer_norm_epsilon?: number;
  tie_word_embeddings?: boolean;
}

const FIELDS: Record<keyof HfRwkvRawConfig, FieldSpec> = {
  hidden_size: { kind: "int" },
  num_hidden_layers: { kind: "int" },
  vocab_size: { kind: "int" },
  attention_hidden_size: { kind: "int", nullable: true },
  intermediate_size: { kind: "int", nullable: true },
  layer_norm_epsilon: { kind: "number" },
  tie_word_embeddings: { kind: "boolean" },
};

/** RwkvConfig's defaults (transformers). */
const DEFAULTS = { hidden_size: 4096, num_hidden_layers: 32, vocab_size: 50277, layer_norm_epsilon: 1e-5 };

/** The first block's LayerNorm on the embedding (ln0). */
export const RWKV_PRE_LN = { weight: "rwkv.blocks.0.pre_ln.weight", bias: "rwkv.blocks.0.pre_ln.bias" } as const;
const EMBEDDING = "rwkv.embeddings.weight";

export function isRwkvConfigJson(json: Readonly<Record<string, unknown>>): boolean {
  return json["model_type"] === "rwkv";
}

/** Resolves an RWKV-4 config.json once, with transformers' defaults. */
export function resolveHfRwkvConfig(json: Readonly<Record<string, unknown>>, source: string): LlamaConfig {
  const raw = parseHfConfigFields<HfRwkvRawConfig>(json, FIELDS, source);
  // The embedding is read with ln0 applied; a classifier tied to it would need the raw table.
  if (raw.tie_word_embeddings === true) throw new UnsupportedError(`${source}: tie_word_embeddings true is not supported for RWKV`, { file: source, hint: "released RWKV-4 checkpoints have a separate head" });
  const dim = raw.hidden_size ?? DEFAULTS.hidden_size;
  checkConfigCount("dim", dim, source);
  const config: LlamaConfig = {
    nLayers: raw.num_hidden_layers ?? DEFAULTS.num_hidden_layers,
    dim,
    hiddenDim: raw.intermediate_size ?? 4 * dim,
    // No attention heads: one "head" spanning the stream keeps the shared config checks meaningful.
    nHeads: 1,
    nKvHeads: 1,
    headDim: dim,
    vocabSize: raw.vocab_size ?? DEFAULTS.vocab_size,
    contextLength: RECURRENT_CONTEXT,
    normEps: raw.layer_norm_epsilon ?? DEFAULTS.layer_norm_epsilon,
    ropeTheta: 10000, // unused
    layerNorm: true,
    rwkvAttDim: raw.attention_hidden_size ?? dim,
  };
  checkLlamaConfig(config, source);
  return config;
}

export const HF_RWKV_NAMES: LlamaTensorNames = {
  embedding: EMBEDDING,
  finalNorm: "rwkv.ln_out.weight",
  finalNormBias: "rwkv.ln_out.bias",
  classifier: "head.weight",
  layer: (i) => {
    const b = `rwkv.blocks.${i}`;
    return {
      attnNorm: `${b}.ln1.weight`, attnNormBias: `${b}.ln1.bias`,
      ffnNorm: `${b}.ln2.weight`, ffnNormBias: `${b}.ln2.bias`,
      wk: `${b}.attention.key.weight`, wv: `${b}.attention.value.weight`, rwkvReceptance: `${b}.attention.receptance.weight`, wo: `${b}.attention.output.weight`,
      rwkvTimeDecay: `${b}.attention.time_decay`, rwkvTimeFirst: `${b}.attention.time_first`,
      rwkvMixK: `${b}.attention.time_mix_key`, rwkvMixV: `${b}.attention.time_mix_value`, rwkvMixR: `${b}.attention.time_mix_receptance`,
      wUp: `${b}.feed_forward.key.weight`, wDown: `${b}.feed_forward.value.weight`, rwkvFfnReceptance: `${b}.feed_forward.receptance.weight`,
      rwkvFfnMixK: `${b}.feed_forward.time_mix_key`, rwkvFfnMixR: `${b}.feed_forward.time_mix_receptance`,
    };
  },
  // ln0 is read by rwkvView into the embedding.
  ignored: new Set([RWKV_PRE_LN.weight, RWKV_PRE_LN.bias]),
  interleavedRope: false,
};

/** The stored tensors with the embedding read as ln0(embedding), row by row (float64 inside). */
export function rwkvView(stored: TensorProvider, eps: number): TensorProvider {
  return embeddingNormView(stored, eps, { embedding: EMBEDDING, ...RWKV_PRE_LN }, "an RWKV checkpoint's first block holds pre_ln (ln0); the file is incomplete");
}

/**
 * The stored tensors with the embedding read as LayerNorm(embedding) by the given weight and bias,
 * row by row (float64 inside): the stream entering block 0 of RWKV-4 (ln0) and RWKV-6 (llama.cpp's
 * token_embd_norm). `missingHint` says what to do when the norm's tensors are absent.
 */
export function embeddingNormView(stored: TensorProvider, eps: number, names: { embedding: string; weight: string; bias: string }, missingHint: string): TensorProvider {
  const present = new Set(stored.entries().map((e) => e.name));
  const read = (name: string): Float32Array => {
    if (!present.has(name)) throw new CheckpointError(`${stored.source}: tensor ${name} is missing`, { file: stored.source, tensor: name, hint: missingHint });
    return stored.readF32(name);
  };
  // Rows of the embedding in, the same rows after the LayerNorm out.
  const normalized = (w: Float32Array): Float32Array => {
    const weight = read(names.weight);
    const bias = read(names.bias);
    const dim = weight.length;
    if (bias.length !== dim || w.length % dim !== 0) throw new CheckpointError(`${stored.source}: ${names.weight} has ${dim} weights and ${bias.length} biases for an embedding of ${w.length} values`, { file: stored.source, tensor: names.weight });
    const out = new Float32Array(w.length);
    for (let off = 0; off < w.length; off += dim) {
      let mean = 0;
      for (let i = 0; i < dim; i++) mean += w[off + i]!;
      mean /= dim;
      let variance = 0;
      for (let i = 0; i < dim; i++) variance += (w[off + i]! - mean) ** 2;
      const scale = 1 / Math.sqrt(variance / dim + eps);
      for (let i = 0; i < dim; i++) out[off + i] = (w[off + i]! - mean) * scale * weight[i]! + bias[i]!;
    }
    return out;
  };
  return {
    source: stored.source,
    entries: () => stored.entries(),
    readF32: (name) => (name === names.embedding ? normalized(stored.readF32(name)) : stored.readF32(name)),
    // Each row is normalized on its own, so the rows a run embeds are read and normalized alone.
    readRowsF32: (name, rows) => (name === names.embedding ? normalized(readTensorRows(stored, name, rows)) : readTensorRows(stored, name, rows)),
  };
}

/**
 * What llama.cpp's rwkv6 and rwkv7 GGUF files share: the embedding with its LayerNorm
 * (token_embd_norm, the stream entering block 0 is after it), the final LayerNorm and classifier,
 * and each block's two LayerNorms (attn_norm before time mixing, attn_norm_2 before channel mixing).
 */
export const GGUF_RWKV_EMBEDDING = "token_embd.weight";
export const GGUF_RWKV_EMBEDDING_NORM = { weight: "token_embd_norm.weight", bias: "token_embd_norm.bias" } as const;

/** The names every rwkv6/rwkv7 GGUF file has outside its blocks' mixing tensors; `layer` adds those. */
export function ggufRwkvNames(mixing: (block: string) => Partial<Record<LayerWeightName, string>>): LlamaTensorNames {
  return {
    embedding: GGUF_RWKV_EMBEDDING,
    finalNorm: "output_norm.weight",
    finalNormBias: "output_norm.bias",
    classifier: "output.weight",
    layer: (i) => {
      const b = `blk.${i}`;
      return { attnNorm: `${b}.attn_norm.weight`, attnNormBias: `${b}.attn_norm.bias`, ffnNorm: `${b}.attn_norm_2.weight`, ffnNormBias: `${b}.attn_norm_2.bias`, ...mixing(b) };
    },
    // token_embd_norm is read into the embedding (embeddingNormView).
    ignored: new Set([GGUF_RWKV_EMBEDDING_NORM.weight, GGUF_RWKV_EMBEDDING_NORM.bias]),
    interleavedRope: false,
  };
}


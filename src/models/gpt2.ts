// GPT-2 on the shared decoder, with its quirks resolved in one step: LayerNorm with biases,
// learned positions added to the input (no RoPE), a plain GELU MLP (tanh approximation, as
// transformers' "gelu_new" and llama.cpp's ggml_gelu), biases on every projection, and a
// classifier tied to the token embedding.
//
// Stored layouts (facts of the two formats):
//  * Hugging Face: Conv1D weights are stored (in, out) and compute x @ W + b; attn.c_attn holds
//    q, k and v side by side in its output columns. Names are "h.N.*", "wte", "wpe", "ln_f",
//    with or without a "transformer." prefix.
//  * GGUF (llama.cpp's gpt2 architecture): linear weights (out, in) like every GGUF model;
//    blk.N.attn_qkv stacks the q, k and v rows; position_embd holds context_length rows.
// Both are exposed through a view: q, k and v as "<fused name>#q|#k|#v" slices, Conv1D weights
// transposed to (out, in), so the loader, the engine and convert see one canonical layout.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { stackedThirds, type TensorEntry, type TensorProvider } from "../tensor/provider.js";
import { type FieldSpec, parseHfConfigFields } from "./hfLlamaConfig.js";
import { checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";

/** config.json fields of GPT2Config that shape the forward pass, spelled as on disk. */
export interface HfGpt2RawConfig {
  n_embd?: number;
  n_layer?: number;
  n_head?: number;
  n_positions?: number;
  n_inner?: number | null;
  vocab_size?: number;
  layer_norm_epsilon?: number;
  activation_function?: string;
  scale_attn_weights?: boolean;
  scale_attn_by_inverse_layer_idx?: boolean;
  add_cross_attention?: boolean;
  tie_word_embeddings?: boolean;
}

/** transformers' GPT2Config defaults (GPT-2 small). */
const DEFAULTS = { n_embd: 768, n_layer: 12, n_head: 12, n_positions: 1024, vocab_size: 50257, layer_norm_epsilon: 1e-5, activation_function: "gelu_new" };
/** The activations that are GELU with the tanh approximation. */
const TANH_GELU = new Set(["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]);

/** The flags that make the shared decoder a GPT-2 block. */
export const GPT2_FLAGS = { layerNorm: true, learnedPositions: true, plainMlp: true, outputBiases: true, qkvBias: true, activation: "gelu_tanh" } as const satisfies Partial<LlamaConfig>;

export function isGpt2Config(config: LlamaConfig): boolean {
  return config.learnedPositions === true;
}

const FIELDS: Record<keyof HfGpt2RawConfig, FieldSpec> = {
  n_embd: { kind: "int" },
  n_layer: { kind: "int" },
  n_head: { kind: "int" },
  n_positions: { kind: "int" },
  n_inner: { kind: "int", nullable: true },
  vocab_size: { kind: "int" },
  layer_norm_epsilon: { kind: "number" },
  activation_function: { kind: "string" },
  scale_attn_weights: { kind: "boolean" },
  scale_attn_by_inverse_layer_idx: { kind: "boolean" },
  add_cross_attention: { kind: "boolean" },
  tie_word_embeddings: { kind: "boolean" },
};

/** Resolves a GPT-2 config.json once, with transformers' defaults; features the engine lacks are refused. */
export function resolveHfGpt2Config(json: Readonly<Record<string, unknown>>, source: string): LlamaConfig {
  const raw = parseHfConfigFields<HfGpt2RawConfig>(json, FIELDS, source);
  const unsupported = (what: string): never => {
    throw new UnsupportedError(`${source}: ${what} is not supported`, { file: source, hint: "this version runs GPT-2 with scaled dot-product attention and the tanh GELU" });
  };
  const activation = raw.activation_function ?? DEFAULTS.activation_function;
  if (!TANH_GELU.has(activation)) unsupported(`activation_function ${JSON.stringify(activation)} (supported: ${[...TANH_GELU].join(", ")})`);
  if (raw.scale_attn_weights === false) unsupported("scale_attn_weights false");
  if (raw.scale_attn_by_inverse_layer_idx === true) unsupported("scale_attn_by_inverse_layer_idx true");
  if (raw.add_cross_attention === true) unsupported("add_cross_attention true (an encoder-decoder model)");
  const dim = raw.n_embd ?? DEFAULTS.n_embd;
  const nHeads = raw.n_head ?? DEFAULTS.n_head;
  if (dim % nHeads !== 0) throw new CheckpointError(`${source}: n_embd ${dim} is not a multiple of n_head ${nHeads}`, { file: source, hint: "config.json is corrupt" });
  const config: LlamaConfig = {
    nLayers: raw.n_layer ?? DEFAULTS.n_layer,
    dim,
    hiddenDim: raw.n_inner ?? 4 * dim,
    nHeads,
    nKvHeads: nHeads,
    headDim: dim / nHeads,
    vocabSize: raw.vocab_size ?? DEFAULTS.vocab_size,
    contextLength: raw.n_positions ?? DEFAULTS.n_positions,
    normEps: raw.layer_norm_epsilon ?? DEFAULTS.layer_norm_epsilon,
    ropeTheta: 10000, // unused: GPT-2 has no rotary embedding
    ...GPT2_FLAGS,
  };
  checkLlamaConfig(config, source);
  return config;
}

/** A name no checkpoint uses, so the loader falls back to the embedding (tied classifier). */
const TIED = "(tied to the token embedding)";

/**
 * Hugging Face names; `prefix` is "transformer." or "" as the checkpoint stores them. With
 * tie_word_embeddings (GPT-2's default) the classifier is wte and a stored lm_head is ignored.
 */
export function hfGpt2Names(prefix: string, nLayers: number, tied: boolean): LlamaTensorNames {
  const p = prefix;
  const maskBuffers = Array.from({ length: nLayers }, (_, i) => [`${p}h.${i}.attn.bias`, `${p}h.${i}.attn.masked_bias`]).flat();
  return {
    embedding: `${p}wte.weight`,
    positionEmbedding: `${p}wpe.weight`,
    finalNorm: `${p}ln_f.weight`,
    finalNormBias: `${p}ln_f.bias`,
    classifier: tied ? TIED : "lm_head.weight",
    layer: (i) => {
      const h = `${p}h.${i}`;
      return {
        attnNorm: `${h}.ln_1.weight`, attnNormBias: `${h}.ln_1.bias`,
        wq: `${h}.attn.c_attn.weight#q`, wk: `${h}.attn.c_attn.weight#k`, wv: `${h}.attn.c_attn.weight#v`,
        bq: `${h}.attn.c_attn.bias#q`, bk: `${h}.attn.c_attn.bias#k`, bv: `${h}.attn.c_attn.bias#v`,
        wo: `${h}.attn.c_proj.weight`, bo: `${h}.attn.c_proj.bias`,
        ffnNorm: `${h}.ln_2.weight`, ffnNormBias: `${h}.ln_2.bias`,
        wUp: `${h}.mlp.c_fc.weight`, bUp: `${h}.mlp.c_fc.bias`,
        wDown: `${h}.mlp.c_proj.weight`, bDown: `${h}.mlp.c_proj.bias`,
      };
    },
    // Older checkpoints also saved the causal-mask buffers.
    ignored: new Set([...(tied ? ["lm_head.weight"] : []), ...maskBuffers]),
    interleavedRope: false,
  };
}

/** The prefix a Hugging Face GPT-2 checkpoint stores its names with ("transformer." or ""). */
export function hfGpt2Prefix(tensorNames: Iterable<string>): string {
  for (const name of tensorNames) if (name.startsWith("transformer.")) return "transformer.";
  return "";
}

/** llama.cpp's gpt2 names (GGUF). */
export const GGUF_GPT2_NAMES: LlamaTensorNames = {
  embedding: "token_embd.weight",
  positionEmbedding: "position_embd.weight",
  finalNorm: "output_norm.weight",
  finalNormBias: "output_norm.bias",
  classifier: "output.weight",
  layer: (i) => {
    const b = `blk.${i}`;
    return {
      attnNorm: `${b}.attn_norm.weight`, attnNormBias: `${b}.attn_norm.bias`,
      wq: `${b}.attn_qkv.weight#q`, wk: `${b}.attn_qkv.weight#k`, wv: `${b}.attn_qkv.weight#v`,
      bq: `${b}.attn_qkv.bias#q`, bk: `${b}.attn_qkv.bias#k`, bv: `${b}.attn_qkv.bias#v`,
      wo: `${b}.attn_output.weight`, bo: `${b}.attn_output.bias`,
      ffnNorm: `${b}.ffn_norm.weight`, ffnNormBias: `${b}.ffn_norm.bias`,
      wUp: `${b}.ffn_up.weight`, bUp: `${b}.ffn_up.bias`,
      wDown: `${b}.ffn_down.weight`, bDown: `${b}.ffn_down.bias`,
    };
  },
  ignored: new Set(),
  interleavedRope: false,
};

const PARTS = ["q", "k", "v"] as const;
const FUSED = /\.(attn\.c_attn|attn_qkv)\.(weight|bias)$/;
const CONV1D = /\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/;

/** Whether a Hugging Face GPT-2 tensor is a Conv1D weight (stored (in, out)). */
export function isConv1dWeight(name: string): boolean {
  return CONV1D.test(name);
}

/** (rows, cols) row-major -> (cols, rows). */
export function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c]!;
  return out;
}

/**
 * The stored tensors in the canonical layout: Conv1D weights (Hugging Face, `conv1d`)
 * transposed to (out, in), and each fused q/k/v tensor split into three "#q", "#k", "#v" parts
 * of equal rows (GPT-2 has as many key/value heads as query heads).
 */
export function gpt2View(stored: TensorProvider, options: { conv1d: boolean }): TensorProvider {
  const canonical = (e: TensorEntry): TensorEntry => {
    if (!options.conv1d || !CONV1D.test(e.name)) return e;
    if (e.shape.length !== 2) throw new CheckpointError(`${stored.source}: tensor ${e.name} has shape [${e.shape.join(", ")}], expected a 2-D Conv1D weight`, { file: stored.source, tensor: e.name });
    return { ...e, shape: [e.shape[1]!, e.shape[0]!] };
  };
  const entries = stored.entries().map(canonical);
  const byName = new Map(entries.map((e) => [e.name, e]));
  const read = (name: string): Float32Array => {
    const e = byName.get(name)!;
    const w = stored.readF32(name);
    return options.conv1d && CONV1D.test(name) ? transpose(w, e.shape[1]!, e.shape[0]!) : w;
  };
  const readThird = stackedThirds(read);
  return {
    source: stored.source,
    entries: () => entries.flatMap((e) => {
      if (!FUSED.test(e.name)) return [e];
      if (e.shape[0]! % 3 !== 0) {
        throw new CheckpointError(`${stored.source}: tensor ${e.name} has shape [${e.shape.join(", ")}]; it stacks q, k and v, so its rows must be a multiple of 3`, { file: stored.source, tensor: e.name });
      }
      return PARTS.map((part) => ({ ...e, name: `${e.name}#${part}`, shape: [e.shape[0]! / 3, ...e.shape.slice(1)] }));
    }),
    readF32: (name) => {
      const part = fusedPart(name);
      return part ? readThird(part.fused, part.index) : read(name);
    },
  };
}

/** The row order of each part in its fused tensor: q, k, v (attention) or gate, up (Phi-3's MLP, models/phi3.ts). */
const PART_INDEX: Readonly<Record<string, number>> = { q: 0, k: 1, v: 2, gate: 0, up: 1 };

/** A "<fused name>#q|#k|#v|#gate|#up" part's fused tensor name and its index, or undefined for a plain name. */
export function fusedPart(name: string): { fused: string; index: number } | undefined {
  const hash = name.lastIndexOf("#");
  if (hash < 0) return undefined;
  return { fused: name.slice(0, hash), index: PART_INDEX[name.slice(hash + 1)] ?? -1 };
}

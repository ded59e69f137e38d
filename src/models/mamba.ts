// Mamba (transformers' MambaForCausalLM) on the shared layer-streaming engine: its config.json
// resolved once into a config whose layers are of kind "mamba", and its tensor names. Each block
// is x + mixer(RMSNorm(x)), so the residual stream entering and leaving a block is what Block
// Influence compares, as for an attention decoder.
//
// Facts of the format (transformers' modeling_mamba): names backbone.embeddings, backbone.layers.N.
// {norm, mixer.{in_proj, conv1d, x_proj, dt_proj, A_log, D, out_proj}}, backbone.norm_f and
// lm_head (absent when tied to the embedding, the default); intermediate_size = expand *
// hidden_size unless given; time_step_rank "auto" is ceil(hidden_size / 16).

import { CheckpointError, UnsupportedError } from "../errors.js";
import type { TensorProvider } from "../tensor/provider.js";
import { type FieldSpec, parseHfConfigFields } from "./hfLlamaConfig.js";
import { checkConfigCount, checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";

/** config.json fields of MambaConfig that shape the forward pass, spelled as on disk. */
interface HfMambaRawConfig {
  hidden_size?: number;
  num_hidden_layers?: number;
  vocab_size?: number;
  state_size?: number;
  expand?: number;
  intermediate_size?: number;
  conv_kernel?: number;
  layer_norm_epsilon?: number;
  use_bias?: boolean;
  use_conv_bias?: boolean;
  hidden_act?: string;
  tie_word_embeddings?: boolean;
}

const FIELDS: Record<keyof HfMambaRawConfig, FieldSpec> = {
  hidden_size: { kind: "int" },
  num_hidden_layers: { kind: "int" },
  vocab_size: { kind: "int" },
  state_size: { kind: "int" },
  expand: { kind: "int" },
  intermediate_size: { kind: "int" },
  conv_kernel: { kind: "int" },
  layer_norm_epsilon: { kind: "number" },
  use_bias: { kind: "boolean" },
  use_conv_bias: { kind: "boolean" },
  hidden_act: { kind: "string" },
  tie_word_embeddings: { kind: "boolean" },
};

/** MambaConfig's defaults (transformers). */
const DEFAULTS = { hidden_size: 768, num_hidden_layers: 32, vocab_size: 50280, state_size: 16, expand: 2, conv_kernel: 4, layer_norm_epsilon: 1e-5 };

/** A recurrence has no position limit; windows are bounded only by this (used where a context length is asked). */
export const RECURRENT_CONTEXT = 1 << 20;

export function isMambaConfigJson(json: Readonly<Record<string, unknown>>): boolean {
  return json["model_type"] === "mamba";
}

/** Resolves a Mamba config.json once, with transformers' defaults; features the engine lacks are refused. */
export function resolveHfMambaConfig(json: Readonly<Record<string, unknown>>, source: string): LlamaConfig {
  const raw = parseHfConfigFields<HfMambaRawConfig>(json, FIELDS, source);
  const unsupported = (what: string): never => {
    throw new UnsupportedError(`${source}: ${what} is not supported`, { file: source, hint: "this version runs Mamba blocks as released (SiLU, no projection biases)" });
  };
  if ((raw.hidden_act ?? "silu") !== "silu") unsupported(`hidden_act ${JSON.stringify(raw.hidden_act)}`);
  if (raw.use_bias === true) unsupported("use_bias true (biases on in_proj and out_proj)");
  const dim = raw.hidden_size ?? DEFAULTS.hidden_size;
  checkConfigCount("dim", dim, source);
  const dInner = raw.intermediate_size ?? (raw.expand ?? DEFAULTS.expand) * dim;
  const rank = json["time_step_rank"] ?? "auto";
  const dtRank = rank === "auto" ? Math.ceil(dim / 16) : rank;
  if (typeof dtRank !== "number" || !Number.isInteger(dtRank) || dtRank < 1 || dtRank > dInner) {
    throw new CheckpointError(`${source}: time_step_rank is ${JSON.stringify(rank)}, expected "auto" or an integer from 1 to ${dInner}`, { file: source, hint: "config.json is corrupt" });
  }
  const dState = raw.state_size ?? DEFAULTS.state_size;
  const convKernel = raw.conv_kernel ?? DEFAULTS.conv_kernel;
  for (const [name, v] of [["state_size", dState], ["conv_kernel", convKernel], ["intermediate_size", dInner]] as const) {
    if (!(Number.isInteger(v) && v >= 1 && v <= 1 << 20)) throw new CheckpointError(`${source}: ${name} is ${v}, expected a positive integer`, { file: source, hint: "config.json is corrupt" });
  }
  const config: LlamaConfig = {
    nLayers: raw.num_hidden_layers ?? DEFAULTS.num_hidden_layers,
    dim,
    hiddenDim: dInner,
    // No attention: one "head" spanning the stream keeps the shared config checks meaningful.
    nHeads: 1,
    nKvHeads: 1,
    headDim: dim,
    vocabSize: raw.vocab_size ?? DEFAULTS.vocab_size,
    contextLength: RECURRENT_CONTEXT,
    normEps: raw.layer_norm_epsilon ?? DEFAULTS.layer_norm_epsilon,
    ropeTheta: 10000, // unused: no rotary embedding
    mamba: { dInner, dState, dtRank, convKernel, convBias: raw.use_conv_bias ?? true },
  };
  checkLlamaConfig(config, source);
  return config;
}

/** A name no checkpoint uses, so the loader falls back to the embedding (tied classifier). */
const TIED = "(tied to the token embedding)";

/** transformers' Mamba names; a tied model's stored lm_head (older saves) is ignored. */
export function hfMambaNames(tied: boolean): LlamaTensorNames {
  return {
    embedding: "backbone.embeddings.weight",
    finalNorm: "backbone.norm_f.weight",
    classifier: tied ? TIED : "lm_head.weight",
    layer: (i) => {
      const b = `backbone.layers.${i}`;
      return {
        attnNorm: `${b}.norm.weight`,
        mambaInProj: `${b}.mixer.in_proj.weight`,
        mambaConv: `${b}.mixer.conv1d.weight`, mambaConvBias: `${b}.mixer.conv1d.bias`,
        mambaXProj: `${b}.mixer.x_proj.weight`,
        mambaDtProj: `${b}.mixer.dt_proj.weight`, mambaDtBias: `${b}.mixer.dt_proj.bias`,
        mambaALog: `${b}.mixer.A_log`, mambaD: `${b}.mixer.D`,
        mambaOutProj: `${b}.mixer.out_proj.weight`,
      };
    },
    ignored: new Set(tied ? ["lm_head.weight"] : []),
    interleavedRope: false,
  };
}

// llama.cpp's "mamba" GGUF architecture (facts of its converter and loader): metadata
// mamba.{embedding_length, block_count, ssm.conv_kernel, ssm.inner_size, ssm.state_size,
// ssm.time_step_rank, attention.layer_norm_rms_epsilon}; tensors blk.N.{attn_norm, ssm_in,
// ssm_conv1d (stored 2-D: dInner x convKernel), ssm_x, ssm_dt, ssm_a (A = -exp(A_log) itself),
// ssm_d, ssm_out}. The view below shows them in the engine's layout (conv 3-D, A_log).

export const GGUF_MAMBA_NAMES: LlamaTensorNames = {
  embedding: "token_embd.weight",
  finalNorm: "output_norm.weight",
  classifier: "output.weight",
  layer: (i) => {
    const b = `blk.${i}`;
    return {
      attnNorm: `${b}.attn_norm.weight`,
      mambaInProj: `${b}.ssm_in.weight`,
      mambaConv: `${b}.ssm_conv1d.weight`, mambaConvBias: `${b}.ssm_conv1d.bias`,
      mambaXProj: `${b}.ssm_x.weight`,
      mambaDtProj: `${b}.ssm_dt.weight`, mambaDtBias: `${b}.ssm_dt.bias`,
      mambaALog: `${b}.ssm_a`, mambaD: `${b}.ssm_d`,
      mambaOutProj: `${b}.ssm_out.weight`,
    };
  },
  ignored: new Set(),
  interleavedRope: false,
};

const GGUF_CONV = /\.ssm_conv1d\.weight$/;
const GGUF_A = /\.ssm_a$/;

/** A mamba GGUF's tensors in the engine's layout: the conv as (dInner, 1, convKernel), ssm_a as A_log = log(-A). */
export function ggufMambaView(stored: TensorProvider): TensorProvider {
  return {
    source: stored.source,
    entries: () => stored.entries().map((e) => (GGUF_CONV.test(e.name) && e.shape.length === 2 ? { ...e, shape: [e.shape[0]!, 1, e.shape[1]!] } : e)),
    readF32: (name) => {
      const w = stored.readF32(name);
      if (!GGUF_A.test(name)) return w;
      for (let i = 0; i < w.length; i++) {
        if (!(w[i]! < 0)) throw new CheckpointError(`${stored.source}: tensor ${name} holds ${w[i]} at ${i}; llama.cpp's A = -exp(A_log) is negative`, { file: stored.source, tensor: name, hint: "the file is corrupt" });
        w[i] = Math.log(-w[i]!);
      }
      return w;
    },
  };
}

/** A tensor's values and shape as a mamba GGUF stores them, from the engine's layout (the inverse of ggufMambaView). */
export function toGgufMambaLayout(name: string, shape: readonly number[], values: Float32Array): { shape: number[]; values: Float32Array } {
  if (GGUF_CONV.test(name) && shape.length === 3) return { shape: [shape[0]!, shape[2]!], values };
  if (GGUF_A.test(name)) return { shape: [...shape], values: values.map((v) => -Math.exp(v)) };
  return { shape: [...shape], values };
}

/** The config of a mamba GGUF from its metadata (`meta(key)` reads mamba.<key>), tensors present to tell the conv bias. */
export function mambaConfigFromGguf(meta: (key: string) => number | undefined, hasTensor: (name: string) => boolean, vocabSize: number, source: string): LlamaConfig {
  const need = (key: string): number => {
    const v = meta(key);
    if (v === undefined) throw new CheckpointError(`${source}: metadata mamba.${key} is missing`, { file: source, hint: "the GGUF file is incomplete" });
    return v;
  };
  const dim = need("embedding_length");
  const dInner = need("ssm.inner_size");
  const config: LlamaConfig = {
    nLayers: need("block_count"), dim, hiddenDim: dInner, nHeads: 1, nKvHeads: 1, headDim: dim,
    vocabSize: meta("vocab_size") ?? vocabSize, contextLength: RECURRENT_CONTEXT,
    normEps: need("attention.layer_norm_rms_epsilon"), ropeTheta: 10000,
    mamba: { dInner, dState: need("ssm.state_size"), dtRank: need("ssm.time_step_rank"), convKernel: need("ssm.conv_kernel"), convBias: hasTensor("blk.0.ssm_conv1d.bias") },
  };
  checkLlamaConfig(config, source);
  return config;
}

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

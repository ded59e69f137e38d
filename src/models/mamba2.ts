// Mamba-2 (transformers' Mamba2ForCausalLM, llama.cpp's mamba2) on the shared layer-streaming
// engine: config.json or GGUF metadata resolved once into a config whose layers are of kind
// "mamba2", and the tensor names of both formats. Each block is x + mixer(RMSNorm(x)), so Block
// Influence compares the residual stream around it, as for Mamba-1.
//
// Facts of the formats. transformers (modeling_mamba2): backbone.embeddings, backbone.layers.N.
// {norm, mixer.{in_proj, conv1d, dt_bias, A_log, D, norm, out_proj}}, backbone.norm_f, lm_head
// (absent when tied); intermediate_size = expand * hidden_size = num_heads * head_dim; the slow
// path's gated norm (MambaRMSNormGated) averages over all of intermediate_size whatever n_groups;
// time_step_limit clamps dt, and is saved with infinity as {"__float__": "Infinity"}.
// llama.cpp (convert_hf_to_gguf's Mamba2Model, llm_build_mamba2): mamba2.{embedding_length,
// block_count, ssm.conv_kernel, ssm.inner_size, ssm.state_size, ssm.time_step_rank (= the head
// count), ssm.group_count, attention.layer_norm_rms_epsilon}; blk.N.{attn_norm, ssm_in,
// ssm_conv1d (2-D: convDim x convKernel), ssm_dt.bias (dt_bias), ssm_a (nHeads x 1, A = -exp(A_log)),
// ssm_d (nHeads x 1), ssm_norm (nGroups x dInner/nGroups: the norm is per group), ssm_out}; no dt clamp.

import type { Mamba2Dims } from "../backend/backend.js";
import { CheckpointError, UnsupportedError } from "../errors.js";
import type { TensorProvider } from "../tensor/provider.js";
import { type FieldSpec, parseHfConfigFields } from "./hfLlamaConfig.js";
import { checkConfigCount, checkLlamaConfig, type LlamaConfig, type LlamaTensorNames } from "./llama.js";
import { RECURRENT_CONTEXT } from "./mamba.js";

/** config.json fields of Mamba2Config that shape the forward pass, spelled as on disk. */
interface HfMamba2RawConfig {
  hidden_size?: number;
  num_hidden_layers?: number;
  vocab_size?: number;
  state_size?: number;
  expand?: number;
  num_heads?: number;
  head_dim?: number;
  n_groups?: number;
  conv_kernel?: number;
  layer_norm_epsilon?: number;
  use_bias?: boolean;
  use_conv_bias?: boolean;
  hidden_act?: string;
  tie_word_embeddings?: boolean;
}

const FIELDS: Record<keyof HfMamba2RawConfig, FieldSpec> = {
  hidden_size: { kind: "int" },
  num_hidden_layers: { kind: "int" },
  vocab_size: { kind: "int" },
  state_size: { kind: "int" },
  expand: { kind: "int" },
  num_heads: { kind: "int" },
  head_dim: { kind: "int" },
  n_groups: { kind: "int" },
  conv_kernel: { kind: "int" },
  layer_norm_epsilon: { kind: "number" },
  use_bias: { kind: "boolean" },
  use_conv_bias: { kind: "boolean" },
  hidden_act: { kind: "string" },
  tie_word_embeddings: { kind: "boolean" },
};

/** Mamba2Config's defaults (transformers). */
const DEFAULTS = { hidden_size: 4096, num_hidden_layers: 64, vocab_size: 32768, state_size: 128, expand: 2, num_heads: 128, head_dim: 64, n_groups: 8, conv_kernel: 4, layer_norm_epsilon: 1e-5 };

export function isMamba2ConfigJson(json: Readonly<Record<string, unknown>>): boolean {
  return json["model_type"] === "mamba2";
}

/** A time_step_limit bound: a number, or transformers' {"__float__": "Infinity"} spelling of a non-finite float. */
function limitBound(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    const spelled = (v as Record<string, unknown>)["__float__"];
    if (spelled === "Infinity") return Infinity;
    if (spelled === "-Infinity") return -Infinity;
  }
  return undefined;
}

function timeStepLimit(json: Readonly<Record<string, unknown>>, source: string): { dtMin: number; dtMax: number } {
  const raw = json["time_step_limit"] ?? [0, Infinity];
  const bounds = Array.isArray(raw) && raw.length === 2 ? raw.map(limitBound) : [];
  const [dtMin, dtMax] = bounds;
  if (dtMin === undefined || dtMax === undefined || !(dtMin >= 0 && dtMax > dtMin) || Number.isNaN(dtMax)) {
    throw new CheckpointError(`${source}: time_step_limit is ${JSON.stringify(raw)}, expected [min, max] with 0 <= min < max`, { file: source, hint: "config.json is corrupt" });
  }
  return { dtMin, dtMax };
}

function checkMamba2Dims(m: Mamba2Dims, source: string): void {
  for (const [name, v] of Object.entries(m)) {
    if (typeof v !== "number" || name === "dtMin" || name === "dtMax") continue;
    if (!(Number.isInteger(v) && v >= 1 && v <= 1 << 20)) throw new CheckpointError(`${source}: Mamba-2 ${name} is ${v}, expected a positive integer`, { file: source, hint: "the checkpoint's metadata is corrupt" });
  }
  if (m.nHeads * m.headDim !== m.dInner) {
    throw new CheckpointError(`${source}: ${m.nHeads} heads of ${m.headDim} channels do not make the inner size ${m.dInner}`, { file: source, expected: m.dInner, got: m.nHeads * m.headDim, hint: "num_heads * head_dim must equal expand * hidden_size" });
  }
  if (m.nHeads % m.nGroups !== 0) {
    throw new CheckpointError(`${source}: ${m.nHeads} heads are not a multiple of ${m.nGroups} groups`, { file: source, hint: "n_groups must divide num_heads" });
  }
  if (m.dInner % m.normGroupSize !== 0) throw new CheckpointError(`${source}: the gated norm's group of ${m.normGroupSize} does not divide ${m.dInner}`, { file: source });
}

/** Resolves a Mamba-2 config.json once, with transformers' defaults; features the engine lacks are refused. */
export function resolveHfMamba2Config(json: Readonly<Record<string, unknown>>, source: string): LlamaConfig {
  const raw = parseHfConfigFields<HfMamba2RawConfig>(json, FIELDS, source);
  const unsupported = (what: string): never => {
    throw new UnsupportedError(`${source}: ${what} is not supported`, { file: source, hint: "this version runs Mamba-2 blocks as released (SiLU, no projection biases)" });
  };
  if ((raw.hidden_act ?? "silu") !== "silu") unsupported(`hidden_act ${JSON.stringify(raw.hidden_act)}`);
  if (raw.use_bias === true) unsupported("use_bias true (biases on in_proj and out_proj)");
  const dim = raw.hidden_size ?? DEFAULTS.hidden_size;
  checkConfigCount("dim", dim, source);
  const dInner = (raw.expand ?? DEFAULTS.expand) * dim;
  const mamba2: Mamba2Dims = {
    dInner, dState: raw.state_size ?? DEFAULTS.state_size, nHeads: raw.num_heads ?? DEFAULTS.num_heads, headDim: raw.head_dim ?? DEFAULTS.head_dim,
    nGroups: raw.n_groups ?? DEFAULTS.n_groups, convKernel: raw.conv_kernel ?? DEFAULTS.conv_kernel, convBias: raw.use_conv_bias ?? true,
    // transformers' slow path: one RMSNorm over all of y (see the header).
    normGroupSize: dInner, ...timeStepLimit(json, source),
  };
  checkMamba2Dims(mamba2, source);
  return mamba2Config(raw.num_hidden_layers ?? DEFAULTS.num_hidden_layers, dim, raw.vocab_size ?? DEFAULTS.vocab_size, raw.layer_norm_epsilon ?? DEFAULTS.layer_norm_epsilon, mamba2, source);
}

function mamba2Config(nLayers: number, dim: number, vocabSize: number, normEps: number, mamba2: Mamba2Dims, source: string): LlamaConfig {
  const config: LlamaConfig = {
    nLayers, dim, hiddenDim: mamba2.dInner,
    // No attention: one "head" spanning the stream keeps the shared config checks meaningful.
    nHeads: 1, nKvHeads: 1, headDim: dim, vocabSize, contextLength: RECURRENT_CONTEXT, normEps,
    ropeTheta: 10000, // unused: no rotary embedding
    mamba2,
  };
  checkLlamaConfig(config, source);
  return config;
}

/** A name no checkpoint uses, so the loader falls back to the embedding (tied classifier). */
const TIED = "(tied to the token embedding)";

/** transformers' Mamba-2 names; a tied model's stored lm_head (older saves) is ignored. */
export function hfMamba2Names(tied: boolean): LlamaTensorNames {
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
        mambaDtBias: `${b}.mixer.dt_bias`, mambaALog: `${b}.mixer.A_log`, mambaD: `${b}.mixer.D`,
        mambaNorm: `${b}.mixer.norm.weight`,
        mambaOutProj: `${b}.mixer.out_proj.weight`,
      };
    },
    ignored: new Set(tied ? ["lm_head.weight"] : []),
    interleavedRope: false,
  };
}

export const GGUF_MAMBA2_NAMES: LlamaTensorNames = {
  embedding: "token_embd.weight",
  finalNorm: "output_norm.weight",
  classifier: "output.weight",
  layer: (i) => {
    const b = `blk.${i}`;
    return {
      attnNorm: `${b}.attn_norm.weight`,
      mambaInProj: `${b}.ssm_in.weight`,
      mambaConv: `${b}.ssm_conv1d.weight`, mambaConvBias: `${b}.ssm_conv1d.bias`,
      mambaDtBias: `${b}.ssm_dt.bias`, mambaALog: `${b}.ssm_a`, mambaD: `${b}.ssm_d`,
      mambaNorm: `${b}.ssm_norm.weight`,
      mambaOutProj: `${b}.ssm_out.weight`,
    };
  },
  ignored: new Set(),
  interleavedRope: false,
};

const GGUF_CONV = /\.ssm_conv1d\.weight$/;
const GGUF_A = /\.ssm_a$/;
const GGUF_PER_HEAD = /\.ssm_[ad]$/;
const GGUF_NORM = /\.ssm_norm\.weight$/;

/** The tensor layout a mamba2 GGUF stores, for convert: toGgufMamba2Layout with the model's dimensions. */
export function ggufMamba2Layout(m: Mamba2Dims): (name: string, shape: readonly number[], values: Float32Array) => { shape: number[]; values: Float32Array } {
  return (name, shape, values) => toGgufMamba2Layout(name, shape, values, m);
}

/** The engine's shape of a mamba2 GGUF tensor stored as llama.cpp lays it out (shape row-major, outermost first). */
function engineShape(name: string, shape: readonly number[]): number[] {
  if (GGUF_CONV.test(name) && shape.length === 2) return [shape[0]!, 1, shape[1]!];
  if ((GGUF_PER_HEAD.test(name) && shape.length === 2 && shape[1] === 1) || (GGUF_NORM.test(name) && shape.length === 2)) return [shape[0]! * shape[1]!];
  return [...shape];
}

/** A mamba2 GGUF's tensors in the engine's layout: the conv 3-D, A and D and the norm 1-D, ssm_a as A_log = log(-A). */
export function ggufMamba2View(stored: TensorProvider): TensorProvider {
  return {
    source: stored.source,
    entries: () => stored.entries().map((e) => ({ ...e, shape: engineShape(e.name, e.shape) })),
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

/** A tensor's values and shape as a mamba2 GGUF stores them, from the engine's layout (the inverse of ggufMamba2View). */
export function toGgufMamba2Layout(name: string, shape: readonly number[], values: Float32Array, m: Mamba2Dims): { shape: number[]; values: Float32Array } {
  if (GGUF_CONV.test(name) && shape.length === 3) return { shape: [shape[0]!, shape[2]!], values };
  if (GGUF_A.test(name)) return { shape: [m.nHeads, 1], values: values.map((v) => -Math.exp(v)) };
  if (GGUF_PER_HEAD.test(name)) return { shape: [m.nHeads, 1], values };
  if (GGUF_NORM.test(name)) return { shape: [m.nGroups, m.dInner / m.nGroups], values };
  return { shape: [...shape], values };
}

/**
 * What a Mamba-2 config can be written as in llama.cpp's mamba2: its gated norm is per group and
 * it has no dt clamp, so a model whose meaning needs either otherwise is refused.
 */
export function checkMamba2ForGguf(m: Mamba2Dims): void {
  if (m.normGroupSize !== m.dInner / m.nGroups) {
    throw new UnsupportedError(`this Mamba-2 model normalizes its gated RMSNorm over groups of ${m.normGroupSize} channels (transformers' slow path: all ${m.dInner}), while llama.cpp's mamba2 normalizes per group of ${m.dInner / m.nGroups} (n_groups ${m.nGroups}); the GGUF would be a different model`, {
      got: m.nGroups, hint: "only a Mamba-2 model with n_groups 1 converts to GGUF unchanged; keep this one as a Hugging Face directory and prune it there",
    });
  }
  if (m.dtMin !== 0 || m.dtMax !== Infinity) {
    throw new UnsupportedError(`this Mamba-2 model clamps dt to [${m.dtMin}, ${m.dtMax}] (time_step_limit), which llama.cpp's mamba2 does not do`, {
      got: `[${m.dtMin}, ${m.dtMax}]`, hint: "keep it as a Hugging Face directory and prune it there",
    });
  }
}

/** The config of a mamba2 GGUF from its metadata (`meta(key)` reads mamba2.<key>), tensors present to tell the conv bias. */
export function mamba2ConfigFromGguf(meta: (key: string) => number | undefined, hasTensor: (name: string) => boolean, vocabSize: number, source: string): LlamaConfig {
  const need = (key: string): number => {
    const v = meta(key);
    if (v === undefined) throw new CheckpointError(`${source}: metadata mamba2.${key} is missing`, { file: source, hint: "the GGUF file is incomplete" });
    return v;
  };
  const dInner = need("ssm.inner_size");
  const nHeads = need("ssm.time_step_rank");
  const nGroups = need("ssm.group_count");
  for (const [key, v] of [["ssm.time_step_rank", nHeads], ["ssm.group_count", nGroups]] as const) {
    if (!(Number.isInteger(v) && v >= 1 && dInner % v === 0)) {
      throw new CheckpointError(`${source}: metadata mamba2.${key} is ${v}, which does not divide mamba2.ssm.inner_size ${dInner}`, { file: source, hint: "the GGUF file's metadata is corrupt" });
    }
  }
  const mamba2: Mamba2Dims = {
    dInner, dState: need("ssm.state_size"), nHeads, headDim: dInner / nHeads, nGroups, convKernel: need("ssm.conv_kernel"),
    convBias: hasTensor("blk.0.ssm_conv1d.bias"), normGroupSize: dInner / nGroups, dtMin: 0, dtMax: Infinity,
  };
  checkMamba2Dims(mamba2, source);
  return mamba2Config(need("block_count"), need("embedding_length"), meta("vocab_size") ?? vocabSize, need("attention.layer_norm_rms_epsilon"), mamba2, source);
}

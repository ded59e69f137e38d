// The Llama family: resolved config, strict weight loading, and the forward pass
// (RMSNorm, RoPE, grouped-query causal attention, SwiGLU MLP) with residual-stream hooks.

import { finalNorm, logSumExp, matmul, ropeInverseFrequencies, softcapInPlace, type Weights } from "../backend/reference.js";
import { type HeadWeights, type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims, isRecurrentShape, type Mamba2Dims, type MambaDims, type Rwkv6Dims, type Rwkv7Dims, type SideStreams } from "../backend/backend.js";
import { type RecurrentState, referenceRecurrentLayer, zeroRecurrentState } from "../backend/recurrentLayer.js";
import { embeddingRow as embeddingRowOf } from "../backend/embedding.js";
import { referenceDecoderLayer } from "../backend/referenceLayer.js";
import { CheckpointError, OptionError, UnsupportedError } from "../errors.js";
import type { TensorProvider } from "../tensor/provider.js";

export interface LlamaConfig {
  nLayers: number;
  dim: number;
  hiddenDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  contextLength: number;
  normEps: number;
  ropeTheta: number;
  /** RoPE scaling as per-frequency divisors (headDim/2), see LayerShape.ropeFreqFactors. */
  ropeFreqFactors?: readonly number[];
  /** The Hugging Face rope_scaling it came from, kept to write config.json back. */
  ropeScaling?: Readonly<Record<string, unknown>>;
  /** Qwen2: biases on the q, k and v projections. */
  qkvBias?: boolean;
  /** Qwen3: per-head RMSNorm of q and k before RoPE. */
  qkNorm?: boolean;
  /** Gemma: the MLP gate's activation is GELU (tanh approximation) instead of SiLU. */
  activation?: "gelu_tanh" | "gelu_tanh_f16";
  /** Gemma: embedding rows are multiplied by this (sqrt(dim), rounded to float32) before layer 0. */
  embeddingScale?: number;
  /** Gemma: RMSNorm weights are stored as w with scale 1 + w; the loader adds this to every norm weight. */
  normWeightOffset?: number;
  /** GPT-2: LayerNorm (with biases) instead of RMSNorm, everywhere including the final norm. */
  layerNorm?: boolean;
  /** GPT-2: a learned position embedding (contextLength, dim) is added to the input; no RoPE. */
  learnedPositions?: boolean;
  /** GPT-2: the MLP has no gate (up, activation, down). */
  plainMlp?: boolean;
  /** GPT-2: the attention output and the MLP's projections have biases. */
  outputBiases?: boolean;
  /** Gemma 2/3: RMS norms after attention and after the MLP, before each residual add (LayerShape.postNorms). */
  postNorms?: boolean;
  /** Gemma 2/3: attention scores scaled by this instead of 1/sqrt(headDim) (query_pre_attn_scalar^-0.5). */
  attnScale?: number;
  /** Gemma 2: tanh soft-cap of the attention scores. */
  attnSoftcap?: number;
  /** Gemma 2: tanh soft-cap of the output logits. */
  logitSoftcap?: number;
  /**
   * Per layer, whether it attends locally (a sliding window of slidingWindow positions) or to
   * every earlier position: transformers' layer_types, sliding_attention or full_attention.
   */
  layerTypes?: readonly LayerAttentionType[];
  slidingWindow?: number;
  /** Gemma 3: the RoPE of sliding layers (its own base, no scaling); full layers use ropeTheta and ropeFreqFactors. */
  localRope?: { theta: number };
  /** LongRoPE (Phi-3): q and k scaled after RoPE (LayerShape.ropeAttentionFactor). */
  ropeAttentionFactor?: number;
  /**
   * LongRoPE (Phi-3): ropeFreqFactors are the short factors, which hold up to originalContext
   * positions (contextLength is capped there); the long ones and the trained context are kept
   * to write the model back (GGUF rope_factors_long, context_length).
   */
  longRope?: LongRope;
  /** Mamba: every layer is a Mamba block with these mixer dimensions (a recurrence; the attention fields are placeholders). */
  mamba?: MambaDims;
  /** Mamba-2: every layer is a Mamba-2 block with these mixer dimensions (as mamba). */
  mamba2?: Mamba2Dims;
  /** RWKV-4: every layer is an RWKV-4 block with this time-mixing width (hiddenDim is channel mixing's; LayerNorm everywhere). */
  rwkvAttDim?: number;
  /** RWKV-6 (llama.cpp's rwkv6): every layer is an RWKV-6 block with these dimensions (LayerNorm everywhere). */
  rwkv6?: Rwkv6Dims;
  /** RWKV-6: llama.cpp's rescale_every_n_layers (the stream halved after every this many layers, output weights stored scaled to match); absent: none. */
  rwkvRescaleEvery?: number;
  /** RWKV-7: every layer is an RWKV-7 block with these time-mixing dimensions (hiddenDim is channel mixing's; LayerNorm everywhere). */
  rwkv7?: Rwkv7Dims;
}

export type LayerAttentionType = "sliding_attention" | "full_attention";

export interface LongRope {
  longFactors: readonly number[];
  originalContext: number;
  trainedContext: number;
}

/** One layer's weights as float32; Q and K rows are in the rotate-half (Hugging Face) layout after sanitizing. */
export type LlamaLayerWeights = LayerWeightsF32;

export interface LlamaWeights {
  embedding: Weights;
  /** GPT-2's learned positions (contextLength, dim), with config.learnedPositions. */
  positionEmbedding?: Weights;
  finalNorm: Weights;
  /** With config.layerNorm. */
  finalNormBias?: Weights;
  /** The same array as `embedding` when the classifier is tied. */
  classifier: Weights;
  layers: LlamaLayerWeights[];
}

/** The stored names of one layer's tensors; the optional ones only where the family has them. */
export type LayerTensorNames = Partial<Record<LayerWeightName, string>>;

/** A norm weight as the kernels use it: Gemma's stored w becomes 1 + w (in float32, as transformers computes it). */
export function normWeight(w: Weights, config: LlamaConfig): Weights {
  if (!config.normWeightOffset) return w;
  for (let i = 0; i < w.length; i++) w[i] = w[i]! + config.normWeightOffset;
  return w;
}

/** One input row as the first layer sees it (see backend/embedding.ts). */
export function embeddingRow(embedding: Weights, id: number, dim: number, config: LlamaConfig, positions?: { table: Weights; position: number }): Float32Array {
  return embeddingRowOf(embedding, id, dim, config.embeddingScale, positions);
}

/**
 * The backend's layer shape for this config: for `layer` when given (local layers have their
 * sliding window and RoPE), else the features every layer shares (enough for weight shapes).
 */
export function layerShape(config: LlamaConfig, layer?: number): LayerShape {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = config;
  const local = layer !== undefined && config.layerTypes?.[layer] === "sliding_attention";
  const { ropeTheta } = config;
  if (config.mamba) return { kind: "mamba", mamba: config.mamba, dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta };
  if (config.mamba2) return { kind: "mamba2", mamba2: config.mamba2, dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta };
  if (config.rwkv7) return { kind: "rwkv7", rwkv7: config.rwkv7, dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta, layerNorm: true };
  if (config.rwkvAttDim !== undefined) return { kind: "rwkv4", rwkvAttDim: config.rwkvAttDim, dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta, layerNorm: true };
  if (config.rwkv6) {
    // (rescale_every_n_layers: the output weights are read unscaled instead of halving the stream; see ggufRwkv6View.)
    return { kind: "rwkv6", rwkv6: config.rwkv6, dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta, layerNorm: true };
  }
  const rope = local && config.localRope ? { ropeTheta: config.localRope.theta } : {
    ropeTheta, ...(config.ropeFreqFactors ? { ropeFreqFactors: config.ropeFreqFactors } : {}),
  };
  // The family flags only when set, so a plain Llama keeps the same compiled graphs.
  return {
    dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ...rope,
    ...(local && config.slidingWindow !== undefined ? { slidingWindow: config.slidingWindow } : {}),
    ...(config.postNorms ? { postNorms: true } : {}), ...(config.attnScale !== undefined ? { attnScale: config.attnScale } : {}),
    ...(config.attnSoftcap !== undefined ? { attnSoftcap: config.attnSoftcap } : {}),
    ...(config.ropeAttentionFactor !== undefined ? { ropeAttentionFactor: config.ropeAttentionFactor } : {}),
    ...(config.qkvBias ? { qkvBias: true } : {}), ...(config.qkNorm ? { qkNorm: true } : {}), ...(config.activation ? { activation: config.activation } : {}),
    ...(config.layerNorm ? { layerNorm: true } : {}), ...(config.learnedPositions ? { noRope: true } : {}),
    ...(config.plainMlp ? { plainMlp: true } : {}), ...(config.outputBiases ? { outputBiases: true } : {}),
  };
}

/** How one file format names the Llama tensors. */
export interface LlamaTensorNames {
  embedding: string;
  /** GPT-2's learned position embedding. */
  positionEmbedding?: string;
  finalNorm: string;
  /** GPT-2's final LayerNorm bias. */
  finalNormBias?: string;
  /** Absent from a file when the classifier is tied to the embedding. */
  classifier: string;
  layer(layer: number): LayerTensorNames;
  /** Tensors the format stores that the model does not need, dropped on purpose. */
  ignored: ReadonlySet<string>;
  /** True when Q/K rows are stored in the interleaved RoPE layout (llama2.c, llama.cpp). */
  interleavedRope: boolean;
}

/** llama.cpp's tensor of RoPE frequency divisors (Llama 3's scaling); read into the config, not a weight. */
export const GGUF_ROPE_FREQS = "rope_freqs.weight";

export const GGUF_LLAMA_NAMES: LlamaTensorNames = {
  embedding: "token_embd.weight",
  finalNorm: "output_norm.weight",
  classifier: "output.weight",
  layer: (i) => ({
    attnNorm: `blk.${i}.attn_norm.weight`,
    wq: `blk.${i}.attn_q.weight`,
    wk: `blk.${i}.attn_k.weight`,
    wv: `blk.${i}.attn_v.weight`,
    wo: `blk.${i}.attn_output.weight`,
    ffnNorm: `blk.${i}.ffn_norm.weight`,
    wGate: `blk.${i}.ffn_gate.weight`,
    wDown: `blk.${i}.ffn_down.weight`,
    wUp: `blk.${i}.ffn_up.weight`,
    bq: `blk.${i}.attn_q.bias`,
    bk: `blk.${i}.attn_k.bias`,
    bv: `blk.${i}.attn_v.bias`,
    qNorm: `blk.${i}.attn_q_norm.weight`,
    kNorm: `blk.${i}.attn_k_norm.weight`,
  }),
  ignored: new Set([GGUF_ROPE_FREQS]),
  interleavedRope: true,
};

export const LLAMA2C_NAMES: LlamaTensorNames = {
  embedding: "tok_embeddings.weight",
  finalNorm: "norm.weight",
  classifier: "output.weight",
  layer: (i) => ({
    attnNorm: `layers.${i}.attention_norm.weight`,
    wq: `layers.${i}.attention.wq.weight`,
    wk: `layers.${i}.attention.wk.weight`,
    wv: `layers.${i}.attention.wv.weight`,
    wo: `layers.${i}.attention.wo.weight`,
    ffnNorm: `layers.${i}.ffn_norm.weight`,
    wGate: `layers.${i}.feed_forward.w1.weight`,
    wDown: `layers.${i}.feed_forward.w2.weight`,
    wUp: `layers.${i}.feed_forward.w3.weight`,
  }),
  // The legacy format stores RoPE cos/sin tables; the model computes its own.
  ignored: new Set(["freqs_cos", "freqs_sin"]),
  interleavedRope: true,
};

/**
 * Upper bounds on the counts a config declares, far above any real model (the largest have about
 * 128 layers, a hidden size of 16384 and 256k tokens). Loops over layers and allocations sized
 * by these fields run before any tensor is read, so a corrupt header must stop here.
 */
export const LLAMA_CONFIG_LIMITS: Readonly<Record<"nLayers" | "dim" | "hiddenDim" | "nHeads" | "nKvHeads" | "headDim" | "vocabSize" | "contextLength", number>> = {
  nLayers: 4096,
  dim: 1 << 20,
  hiddenDim: 1 << 22,
  nHeads: 1 << 16,
  nKvHeads: 1 << 16,
  headDim: 1 << 16,
  vocabSize: 1 << 24,
  contextLength: 2 ** 31,
};

/** Refuses a count outside 1..LLAMA_CONFIG_LIMITS[name] (for callers that size something by it before the whole config exists). */
export function checkConfigCount(name: keyof typeof LLAMA_CONFIG_LIMITS, value: number, source: string): void {
  const limit = LLAMA_CONFIG_LIMITS[name];
  if (!Number.isInteger(value) || value <= 0 || value > limit) {
    throw new CheckpointError(`${source}: config ${name} is ${value}, expected an integer from 1 to ${limit}`, {
      file: source, expected: `1..${limit}`, got: value, hint: "the checkpoint's metadata is corrupt",
    });
  }
}

export function checkLlamaConfig(config: LlamaConfig, source: string): void {
  for (const name of Object.keys(LLAMA_CONFIG_LIMITS) as (keyof typeof LLAMA_CONFIG_LIMITS)[]) checkConfigCount(name, config[name], source);
  const { dim, nHeads, nKvHeads, headDim } = config;
  if (nHeads * headDim !== dim && headDim % 2 !== 0) {
    throw new CheckpointError(`${source}: head size ${headDim} must be even`, { file: source });
  }
  if (nHeads % nKvHeads !== 0) {
    throw new CheckpointError(`${source}: ${nHeads} attention heads are not a multiple of ${nKvHeads} KV heads`, { file: source });
  }
  if (config.layerTypes !== undefined && config.layerTypes.length !== config.nLayers) {
    throw new CheckpointError(`${source}: ${config.layerTypes.length} layer types for ${config.nLayers} layers`, { file: source, expected: config.nLayers, got: config.layerTypes.length, hint: "the checkpoint's metadata is inconsistent" });
  }
  for (const [name, v] of Object.entries(config)) {
    if (typeof v === "boolean" || typeof v === "string" || typeof v === "object") continue; // family flags, RoPE scaling
    if (!(typeof v === "number" && v > 0 && Number.isFinite(v))) {
      throw new CheckpointError(`${source}: config ${name} is ${v}`, { file: source, hint: "the checkpoint's metadata is incomplete or corrupt" });
    }
  }
}

/**
 * Moves Q/K rows between llama.cpp's interleaved RoPE layout (pairs 2i, 2i+1 rotate together,
 * as in llama2.c) and the rotate-half layout of Hugging Face and this engine (i, i + half).
 */
function moveRopeRows(w: Weights, nHeads: number, headDim: number, nIn: number, toHalfRows: boolean): Weights {
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < nHeads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const interleaved = (h * headDim + 2 * i + j) * nIn;
        const halves = (h * headDim + j * half + i) * nIn;
        const [from, to] = toHalfRows ? [interleaved, halves] : [halves, interleaved];
        out.set(w.subarray(from, from + nIn), to);
      }
    }
  }
  return out;
}

/** Interleaved (llama.cpp, llama2.c) Q/K rows to the rotate-half layout the engine computes with. */
export function interleavedToHalfRows(w: Weights, nHeads: number, headDim: number, nIn: number): Weights {
  return moveRopeRows(w, nHeads, headDim, nIn, true);
}

/** The inverse: rotate-half Q/K rows back to llama.cpp's interleaved layout, for writing GGUF. */
export function halfRowsToInterleaved(w: Weights, nHeads: number, headDim: number, nIn: number): Weights {
  return moveRopeRows(w, nHeads, headDim, nIn, false);
}

/** The shape every tensor of a Llama with this config must have, by stored name. */
export function expectedLlamaShapes(config: LlamaConfig, names: LlamaTensorNames, hasClassifier: boolean): Map<string, number[]> {
  const { dim, vocabSize } = config;
  const shapes = new Map<string, number[]>([[names.embedding, [vocabSize, dim]], [names.finalNorm, [dim]]]);
  const needed = (name: string | undefined, what: string): string => {
    if (name === undefined) throw new UnsupportedError(`this format has no name for the ${what} this model needs`);
    return name;
  };
  if (config.learnedPositions) shapes.set(needed(names.positionEmbedding, "position embedding"), [config.contextLength, dim]);
  if (config.layerNorm) shapes.set(needed(names.finalNormBias, "final norm bias"), [dim]);
  if (hasClassifier) shapes.set(names.classifier, [vocabSize, dim]);
  const dims = Object.entries(layerWeightDims(layerShape(config))) as [LayerWeightName, number[]][];
  for (let layer = 0; layer < config.nLayers; layer++) {
    const n = names.layer(layer);
    for (const [key, shape] of dims) shapes.set(needed(n[key], `weight ${key}`), shape);
  }
  return shapes;
}

/**
 * Strict check without reading any data: every tensor the config implies exists with the
 * right shape, and every tensor in the checkpoint is claimed or ignored on purpose.
 */
export function checkLlamaTensors(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames): void {
  const entries = new Map(provider.entries().map((e) => [e.name, e]));
  // The layer count against what the file holds, before a map of every expected tensor is built.
  const perLayer = Object.keys(layerWeightDims(layerShape(config))).length;
  if (config.nLayers * perLayer > entries.size) {
    throw new CheckpointError(`${provider.source}: the config says ${config.nLayers} layers, which need ${config.nLayers * perLayer} layer tensors, but the checkpoint holds ${entries.size} tensors`, {
      file: provider.source, expected: config.nLayers * perLayer, got: entries.size, hint: "the layer count in the metadata does not match the weights; the file is corrupt or incomplete",
    });
  }
  const expected = expectedLlamaShapes(config, names, entries.has(names.classifier));
  for (const [name, shape] of expected) {
    const entry = entries.get(name);
    if (!entry) {
      throw new CheckpointError(`${provider.source}: tensor ${name} is missing`, {
        file: provider.source, tensor: name, expected: `shape [${shape.join(", ")}]`,
        hint: "the checkpoint is incomplete or its layer count does not match its metadata",
      });
    }
    if (entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
      throw new CheckpointError(`${provider.source}: tensor ${name} has shape [${entry.shape.join(", ")}], expected [${shape.join(", ")}]`, {
        file: provider.source, tensor: name, expected: `[${shape.join(", ")}]`, got: `[${entry.shape.join(", ")}]`,
        hint: "the checkpoint's metadata does not match its tensors",
      });
    }
  }
  for (const name of entries.keys()) {
    if (!expected.has(name) && !names.ignored.has(name)) {
      throw new CheckpointError(`${provider.source}: tensor ${name} is not part of a ${config.nLayers}-layer Llama`, {
        file: provider.source, tensor: name,
        hint: "the file has more layers than its metadata says, or an architecture feature this version does not support",
      });
    }
  }
}

function readChecked(provider: TensorProvider, name: string, length: number): Weights {
  const data = provider.readF32(name);
  if (data.length !== length) throw new CheckpointError(`${provider.source}: tensor ${name} decoded to ${data.length} values, expected ${length}`, { file: provider.source, tensor: name });
  return data;
}

/** Embedding, learned positions, final norm and classifier (the embedding itself when the classifier is tied). */
export function loadLlamaGlobals(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames): Omit<LlamaWeights, "layers"> {
  const { dim, vocabSize } = config;
  const embedding = readChecked(provider, names.embedding, vocabSize * dim);
  return {
    embedding,
    ...loadHeadWeights(provider, config, names, embedding),
    ...(config.learnedPositions ? { positionEmbedding: readChecked(provider, names.positionEmbedding!, config.contextLength * dim) } : {}),
  };
}

/**
 * What runHead needs and no more: the final norm (and its bias) and the classifier, which is
 * the embedding when tied (`embedding`, if already read, is reused). Perplexity by layer reloads
 * the head once per layer, so the embedding and positions of an untied model are not read.
 */
export function loadHeadWeights(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames, embedding?: Float32Array): HeadWeights {
  const { dim, vocabSize } = config;
  const tied = !provider.entries().some((e) => e.name === names.classifier);
  return {
    finalNorm: normWeight(readChecked(provider, names.finalNorm, dim), config),
    classifier: tied ? (embedding ?? readChecked(provider, names.embedding, vocabSize * dim)) : readChecked(provider, names.classifier, vocabSize * dim),
    ...(config.layerNorm ? { finalNormBias: readChecked(provider, names.finalNormBias!, dim) } : {}),
    ...(config.logitSoftcap !== undefined ? { logitSoftcap: config.logitSoftcap } : {}),
  };
}

/** One layer's weights as float32, Q/K rows (and their biases) reordered to the rotate-half layout if needed. */
export function loadLlamaLayer(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames, layer: number): LlamaLayerWeights {
  const weights: Partial<LlamaLayerWeights> = {};
  for (const key of Object.keys(layerWeightDims(layerShape(config))) as LayerWeightName[]) weights[key] = loadLayerTensor(provider, config, names, layer, key);
  return weights as LlamaLayerWeights;
}

/**
 * One weight of one layer in the engine's canonical layout: Q/K rows (and their biases) in the
 * rotate-half order, norm weights as the scale they apply (Gemma's 1 + w).
 */
export function loadLayerTensor(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames, layer: number, key: LayerWeightName): Weights {
  const { nHeads, nKvHeads, headDim, dim } = config;
  const shape = layerWeightDims(layerShape(config))[key]!;
  let w = readChecked(provider, names.layer(layer)[key]!, shape.reduce((a, b) => a * b, 1));
  if (names.interleavedRope && (key === "wq" || key === "bq")) w = interleavedToHalfRows(w, nHeads, headDim, key === "wq" ? dim : 1);
  if (names.interleavedRope && (key === "wk" || key === "bk")) w = interleavedToHalfRows(w, nKvHeads, headDim, key === "wk" ? dim : 1);
  if (NORM_WEIGHTS.has(key)) w = normWeight(w, config);
  return w;
}

/**
 * One weight of one layer as bf16 bits, straight from a BF16 checkpoint, when that is the
 * engine's canonical layout too (no Q/K row reordering, not a norm scale); undefined otherwise:
 * then loadLayerTensor gives it as float32.
 */
export function loadLayerTensorBf16(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames, layer: number, key: LayerWeightName): Uint16Array | undefined {
  if (!provider.readBF16 || NORM_WEIGHTS.has(key)) return undefined;
  if (names.interleavedRope && (key === "wq" || key === "wk" || key === "bq" || key === "bk")) return undefined;
  const name = names.layer(layer)[key];
  const dims = layerWeightDims(layerShape(config))[key];
  if (name === undefined || dims === undefined) return undefined;
  const bits = provider.readBF16(name);
  const length = dims.reduce((a, b) => a * b, 1);
  if (bits && bits.length !== length) throw new CheckpointError(`${provider.source}: tensor ${name} holds ${bits.length} values, expected ${length}`, { file: provider.source, tensor: name });
  return bits;
}

/** The layer weights that scale a norm (Gemma stores them as w for a scale of 1 + w). */
const NORM_WEIGHTS: ReadonlySet<LayerWeightName> = new Set(["attnNorm", "ffnNorm", "qNorm", "kNorm", "attnPostNorm", "ffnPostNorm"]);

/**
 * Loads every tensor the config implies, shape-checked, and refuses tensors nobody claims.
 * Quirks of the format (tied classifier, interleaved Q/K rows) are resolved here, once.
 */
export function loadLlamaWeights(provider: TensorProvider, config: LlamaConfig, names: LlamaTensorNames): LlamaWeights {
  checkLlamaTensors(provider, config, names);
  const layers: LlamaLayerWeights[] = [];
  for (let layer = 0; layer < config.nLayers; layer++) layers.push(loadLlamaLayer(provider, config, names, layer));
  return { ...loadLlamaGlobals(provider, config, names), layers };
}

/** Called with the residual stream entering and leaving each layer that runs. */
export interface LayerHooks {
  /**
   * input, output: (nTokens, dim) views valid only during the call; float64 from the in-memory
   * reference model, float32 from the streaming engine. `layer` is the original index.
   * `windows`: the indices of the windows whose rows these are (each nTokens / windows.length
   * rows, in order); absent when the rows are one sequence.
   */
  onLayer(layer: number, input: Float32Array | Float64Array, output: Float32Array | Float64Array, nTokens: number, dim: number, windows?: readonly number[]): void;
}

/**
 * What every layer keeps of the positions processed so far (for generation): keys and values of
 * attention layers, or the recurrent state of Mamba layers (which needs no room per position).
 */
export class KvCache {
  readonly keys: Float64Array[];
  readonly values: Float64Array[];
  readonly recurrent: RecurrentState[];
  length = 0;
  constructor(readonly config: LlamaConfig, readonly capacity: number) {
    const shape = layerShape(config);
    const recurrent = isRecurrentShape(shape);
    this.recurrent = recurrent ? Array.from({ length: config.nLayers }, () => zeroRecurrentState(shape)) : [];
    const kvDim = recurrent ? 0 : config.nKvHeads * config.headDim;
    this.keys = Array.from({ length: config.nLayers }, () => new Float64Array(capacity * kvDim));
    this.values = Array.from({ length: config.nLayers }, () => new Float64Array(capacity * kvDim));
  }
}

export interface ForwardOptions {
  /** Layers to leave out: the residual passes through them unchanged. */
  skip?: ReadonlySet<number>;
  hooks?: LayerHooks;
  /** Which positions get vocabulary logits; "none" skips the classifier entirely. */
  logits?: "all" | "last" | "none";
  /** Continue from the positions already in the cache; without one the tokens are a fresh window. */
  cache?: KvCache;
}

export interface ForwardResult {
  /** (rows, vocabSize): every position, or only the last, or empty. */
  logits: Float64Array;
  rows: number;
}

export class LlamaModel {
  readonly family = "llama";
  /** Each layer's shape and RoPE inverse frequencies (Gemma 3's local and global layers differ). */
  private readonly shapes: LayerShape[];
  private readonly invFreqs: Float64Array[];

  constructor(readonly config: LlamaConfig, readonly weights: LlamaWeights) {
    this.shapes = Array.from({ length: config.nLayers }, (_, layer) => layerShape(config, layer));
    this.invFreqs = this.shapes.map((s) => ropeInverseFrequencies(config.headDim, s.ropeTheta, s.ropeFreqFactors));
  }

  get nLayers(): number {
    return this.config.nLayers;
  }

  parameterCount(): number {
    const w = this.weights;
    let n = w.embedding.length + w.finalNorm.length + (w.classifier === w.embedding ? 0 : w.classifier.length);
    for (const l of w.layers) for (const t of Object.values(l)) n += (t as Weights).length;
    return n;
  }

  /** Runs the tokens through the model as one causal window (prefill). */
  forward(tokens: ArrayLike<number>, options: ForwardOptions = {}): ForwardResult {
    const { dim, vocabSize } = this.config;
    const T = tokens.length;
    const cache = options.cache ?? new KvCache(this.config, T);
    const startPos = options.cache ? cache.length : 0;
    if (startPos + T > cache.capacity) {
      throw new OptionError(`${startPos + T} positions exceed the cache capacity of ${cache.capacity}`, { hint: "generate fewer tokens" });
    }
    const skip = options.skip ?? new Set<number>();
    const x = new Float64Array(T * dim);
    for (let t = 0; t < T; t++) {
      const id = tokens[t]!;
      if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new OptionError(`token id ${id} at position ${t} is outside the vocabulary (0..${vocabSize - 1})`);
      const positions = this.weights.positionEmbedding && { table: this.weights.positionEmbedding, position: startPos + t };
      x.set(embeddingRow(this.weights.embedding, id, dim, this.config, positions), t * dim);
    }
    const input = options.hooks ? new Float64Array(T * dim) : undefined;
    // Beside the residual stream (hooks never see it): RWKV-7's value residual, set by the first layer that runs.
    const side: SideStreams = {};
    for (let layer = 0; layer < this.config.nLayers; layer++) {
      if (skip.has(layer)) continue;
      if (input) input.set(x);
      const shape = this.shapes[layer]!;
      if (isRecurrentShape(shape)) referenceRecurrentLayer(x, T, this.weights.layers[layer]!, shape, cache.recurrent[layer]!, side);
      else referenceDecoderLayer(x, T, startPos, this.weights.layers[layer]!, shape, cache.keys[layer]!, cache.values[layer]!, this.invFreqs[layer]!);
      if (input) options.hooks!.onLayer(layer, input, x, T, dim);
    }
    if (options.cache) cache.length = startPos + T;

    const mode = options.logits ?? "all";
    if (mode === "none") return { logits: new Float64Array(0), rows: 0 };
    const first = mode === "last" ? T - 1 : 0;
    const rows = T - first;
    const normed = this.finalNorm(x.subarray(first * dim), rows);
    const logits = new Float64Array(rows * vocabSize);
    matmul(logits, normed, this.weights.classifier, rows, dim, vocabSize);
    if (this.config.logitSoftcap !== undefined) softcapInPlace(logits, logits.length, this.config.logitSoftcap);
    return { logits, rows };
  }

  /** The final norm (RMSNorm, or LayerNorm with its bias) of `rows` residual rows leaving the last layer. */
  finalNorm(hidden: Float64Array, rows: number): Float64Array {
    const { dim, normEps } = this.config;
    const normed = new Float64Array(rows * dim);
    finalNorm(normed, hidden, this.weights, rows, dim, normEps);
    return normed;
  }
}

/** log-probability of `target` under the logits row `row`. */
export function logProb(logits: Float64Array, row: number, vocabSize: number, target: number): number {
  return logits[row * vocabSize + target]! - logSumExp(logits, row * vocabSize, vocabSize);
}

export function assertLlamaSupported(ropeDim: number | undefined, headDim: number, source: string): void {
  if (ropeDim !== undefined && ropeDim !== headDim) {
    throw new UnsupportedError(`${source}: partial rotary embeddings (rope dimension ${ropeDim} of head size ${headDim}) are not supported yet`, { file: source });
  }
}

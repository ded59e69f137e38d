// The compute backend interface behind the models: where the residual stream lives, one decoder
// layer over a batch of independent causal windows, the statistics the layer metrics need, and the
// final norm + classifier. Implementations: the plain TypeScript reference (tests),
// onnxruntime-node (CPU fast path), onnxruntime-web's WebAssembly SIMD build (fallback that always
// installs), and cuda (NVIDIA GPUs, through koffi; src/backend/cuda/).

import type { AttentionFamilyFeature } from "./shapeFeatures.js";
import { UnsupportedError } from "../errors.js";

/**
 * The dimensions of a Mamba block's mixer (transformers' MambaMixer): in_proj to 2 * dInner
 * (the stream and its gate), a depthwise causal conv of convKernel taps, x_proj to dtRank + 2 *
 * dState (dt, B, C), dt_proj back to dInner, a selective scan over a (dInner, dState) state.
 */
export interface MambaDims {
  dInner: number;
  dState: number;
  dtRank: number;
  convKernel: number;
  /** The conv has a bias (use_conv_bias, true in every released Mamba). */
  convBias: boolean;
}

/**
 * The dimensions of a Mamba-2 block's mixer (transformers' Mamba2Mixer, llama.cpp's mamba2):
 * in_proj to dInner (the gate z) + convDim (x, B, C through the conv) + nHeads (dt), where convDim
 * = dInner + 2 * nGroups * dState; a scan per head of headDim channels with a scalar decay A per
 * head, B and C shared by the nHeads / nGroups heads of a group; a gated RMSNorm over groups of
 * normGroupSize channels; out_proj back to the stream.
 */
export interface Mamba2Dims {
  dInner: number;
  dState: number;
  nHeads: number;
  headDim: number;
  nGroups: number;
  convKernel: number;
  convBias: boolean;
  /**
   * Channels the gated RMSNorm averages over: dInner in transformers' slow path (one norm over the
   * whole of y), dInner / nGroups in llama.cpp (and mamba_ssm's kernel). Equal when nGroups is 1.
   */
  normGroupSize: number;
  /** time_step_limit: softplus(dt + dt_bias) is clamped to [dtMin, dtMax] (transformers; (0, Infinity) is no clamp). */
  dtMin: number;
  dtMax: number;
}

/**
 * The dimensions of an RWKV-6 ("Finch") block beyond the stream width (llama.cpp's rwkv6 hparams):
 * the WKV heads (dim / headSize of them, each with a (headSize, headSize) state), the width of
 * each of the five data-dependent token-shift LoRA branches (time_mix_extra_dim) and of the
 * data-dependent decay LoRA (time_decay_extra_dim).
 */
export interface Rwkv6Dims {
  headSize: number;
  mixExtraDim: number;
  decayExtraDim: number;
}

/**
 * The dimensions of an RWKV-7 block's time mixing (llama.cpp's rwkv7): heads of headSize
 * channels (dim / headSize of them), and the ranks of the low-rank projections of the decay
 * (w1, w2), the in-context learning rate (a1, a2), the value residual mix (v1, v2) and the gate
 * (g1, g2).
 */
export interface Rwkv7Dims {
  headSize: number;
  decayRank: number;
  iclrRank: number;
  valueRank: number;
  gateRank: number;
}

/**
 * Per-token values a layer kind carries from layer to layer beside the residual stream, for the
 * rows of one runLayer call. RWKV-7's value residual: the first block that runs sets
 * rwkv7VFirst (rows, dim) to its value vectors, every later block mixes them into its own (as
 * llama.cpp does, where the first block of a file is il == 0). Block Influence compares the
 * residual stream only, never these.
 */
export interface SideStreams {
  rwkv7VFirst?: Float64Array;
}

/**
 * What a layer computes: "attention" (the default when absent: a causal self-attention block and
 * an MLP), "mamba" (RMSNorm, a Mamba mixer with a selective scan, the residual add), "mamba2"
 * (RMSNorm, a Mamba-2 mixer: multi-head scan with a scalar decay per head, gated RMSNorm), "rwkv4"
 * (LayerNorm, time mixing with the WKV recurrence; LayerNorm, channel mixing), "rwkv6" (the
 * same outline as rwkv4 with data-dependent token shift and decay and a matrix-valued state per
 * head) or "rwkv7" (LayerNorm, time mixing with the generalized delta rule; LayerNorm, channel
 * mixing). A recurrent layer scans each window from a zero state, so windows, streaming, hooks,
 * metrics and pruning stay the same for every kind.
 */
export type LayerKind = "attention" | "mamba" | "mamba2" | "rwkv4" | "rwkv6" | "rwkv7";

/** The shape constants of one decoder layer. */
export interface LayerShape {
  /** Absent means "attention". */
  kind?: LayerKind;
  /** With kind "mamba": the mixer's dimensions (the attention fields are unused). */
  mamba?: MambaDims;
  /** With kind "mamba2": the mixer's dimensions (the attention fields are unused). */
  mamba2?: Mamba2Dims;
  /** With kind "rwkv4": the width of time mixing's key, value and receptance (attention_hidden_size); hiddenDim is channel mixing's. */
  rwkvAttDim?: number;
  /** With kind "rwkv6": its head size and LoRA widths (hiddenDim is channel mixing's width). */
  rwkv6?: Rwkv6Dims;
  /** With kind "rwkv7": time mixing's dimensions; hiddenDim is channel mixing's. */
  rwkv7?: Rwkv7Dims;
  dim: number;
  hiddenDim: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  normEps: number;
  ropeTheta: number;
  /** Qwen2: the q, k and v projections add a bias (weights bq, bk, bv). */
  qkvBias?: boolean;
  /** Qwen3: q and k are RMS-normalized per head, before RoPE (weights qNorm, kNorm of headDim). */
  qkNorm?: boolean;
  /**
   * RoPE scaling (linear, Llama 3): frequency i turns by theta^(-2i/headDim) / ropeFreqFactors[i]
   * (headDim/2 factors, as llama.cpp's rope_freqs tensor); absent means unscaled.
   */
  ropeFreqFactors?: readonly number[];
  /**
   * The MLP's activation: silu (default) or, for Gemma and GPT-2, GELU with the tanh
   * approximation. "gelu_tanh_f16" is llama.cpp's CPU GELU (a float16 lookup table), for
   * comparisons with llama.cpp; only the reference backend computes it.
   */
  activation?: "gelu_tanh" | "gelu_tanh_f16";
  /** GPT-2: the norms are LayerNorm (mean removed, then weight and bias: attnNormBias, ffnNormBias) instead of RMSNorm. */
  layerNorm?: boolean;
  /** GPT-2: no rotary embedding (positions are learned and added to the input before layer 0). */
  noRope?: boolean;
  /** GPT-2: the MLP is wDown @ act(wUp @ h + bUp) + bDown, without a gate (wGate absent). */
  plainMlp?: boolean;
  /** GPT-2: the output projection and the MLP's linear layers add biases (bo, bUp, bDown). */
  outputBiases?: boolean;
  /**
   * Gemma 2/3 sandwich norms: the attention output and the MLP output are each RMS-normed
   * (weights attnPostNorm, ffnPostNorm) before they are added to the residual stream.
   */
  postNorms?: boolean;
  /** The attention score scale; absent means 1/sqrt(headDim) (Gemma 2/3: query_pre_attn_scalar^-0.5). */
  attnScale?: number;
  /** Gemma 2: scores (after scaling) become softcap * tanh(score / softcap) before the mask and softmax. */
  attnSoftcap?: number;
  /** Local attention: query at position p sees keys at positions p - slidingWindow + 1 .. p only. */
  slidingWindow?: number;
  /** LongRoPE (Phi-3): q and k are multiplied by this after RoPE (transformers scales cos and sin). */
  ropeAttentionFactor?: number;
}

/**
 * One layer's weights expanded to float32, row-major, linear weights stored (out, in). Which
 * fields a layer has is layerWeightDims(shape)'s list: a Mamba layer has attnNorm (its block's
 * RMSNorm) and the mamba* fields only.
 * wq and wk rows are in the rotate-half RoPE layout (Hugging Face convention): within each
 * head, element i pairs with i + headDim/2 and turns by pos * theta^(-2i/headDim).
 */
export interface LayerWeightsF32 {
  attnNorm: Float32Array; // (dim)
  wq: Float32Array; // (nHeads*headDim, dim)
  wk: Float32Array; // (nKvHeads*headDim, dim)
  wv: Float32Array; // (nKvHeads*headDim, dim)
  wo: Float32Array; // (dim, nHeads*headDim)
  ffnNorm: Float32Array; // (dim)
  wGate?: Float32Array; // (hiddenDim, dim), unless shape.plainMlp
  wDown: Float32Array; // (dim, hiddenDim)
  wUp: Float32Array; // (hiddenDim, dim)
  bq?: Float32Array; // (nHeads*headDim), with shape.qkvBias
  bk?: Float32Array; // (nKvHeads*headDim)
  bv?: Float32Array; // (nKvHeads*headDim)
  qNorm?: Float32Array; // (headDim), with shape.qkNorm
  kNorm?: Float32Array; // (headDim)
  attnNormBias?: Float32Array; // (dim), with shape.layerNorm
  ffnNormBias?: Float32Array; // (dim)
  bo?: Float32Array; // (dim), with shape.outputBiases
  bUp?: Float32Array; // (hiddenDim)
  bDown?: Float32Array; // (dim)
  attnPostNorm?: Float32Array; // (dim), with shape.postNorms
  ffnPostNorm?: Float32Array; // (dim)
  mambaInProj?: Float32Array; // (2*dInner, dim): rows 0..dInner-1 the stream, then the gate
  mambaConv?: Float32Array; // (dInner, 1, convKernel), depthwise
  mambaConvBias?: Float32Array; // (dInner), with mamba.convBias
  mambaXProj?: Float32Array; // (dtRank + 2*dState, dInner): dt, B, C
  mambaDtProj?: Float32Array; // (dInner, dtRank)
  mambaDtBias?: Float32Array; // (dInner)
  mambaALog?: Float32Array; // (dInner, dState): A = -exp(A_log)
  mambaD?: Float32Array; // (dInner): the skip term y += D * u
  mambaOutProj?: Float32Array; // (dim, dInner)
  // Mamba-2 uses mambaInProj (dInner + convDim + nHeads, dim): z, then x|B|C, then dt;
  // mambaConv (convDim, 1, convKernel) and mambaConvBias (convDim); mambaDtBias, mambaALog and
  // mambaD with one value per head (nHeads); mambaOutProj (dim, dInner); and the gated norm:
  mambaNorm?: Float32Array; // (dInner): y = norm(y * silu(z)) * mambaNorm, per group of normGroupSize
  // RWKV-4 (with attnNorm/attnNormBias = ln1, ffnNorm/ffnNormBias = ln2; wk, wv: (attDim, dim) and
  // wo: (dim, attDim) are time mixing's key, value and output; wUp: (hiddenDim, dim) and wDown:
  // (dim, hiddenDim) channel mixing's key and value).
  rwkvReceptance?: Float32Array; // (attDim, dim), time mixing
  rwkvTimeDecay?: Float32Array; // (attDim): the decay per step is exp(-exp(time_decay))
  rwkvTimeFirst?: Float32Array; // (attDim): the bonus of the current token
  rwkvMixK?: Float32Array; // (1, 1, dim): key input = x * mix + previous x * (1 - mix)
  rwkvMixV?: Float32Array; // (1, 1, dim)
  rwkvMixR?: Float32Array; // (1, 1, dim)
  rwkvFfnReceptance?: Float32Array; // (dim, dim), channel mixing
  rwkvFfnMixK?: Float32Array; // (1, 1, dim)
  rwkvFfnMixR?: Float32Array; // (1, 1, dim)
  // RWKV-6 (llama.cpp's rwkv6; attnNorm/attnNormBias = attn_norm, ffnNorm/ffnNormBias = attn_norm_2;
  // wk, wv, rwkvReceptance: (dim, dim) and wo: (dim, dim) time mixing's; rwkvTimeFirst: (nHeads,
  // headSize) the bonus u, rwkvTimeDecay: (dim) the decay's base; wUp: (hiddenDim, dim), wDown:
  // (dim, hiddenDim), rwkvFfnReceptance: (dim, dim) channel mixing's). Token shift lerps as
  // x + (previous x - x) * lerp.
  rwkv6LerpX?: Float32Array; // (dim): the input of the token-shift LoRA
  rwkv6MixW1?: Float32Array; // (5 * mixExtraDim, dim): the LoRA's down projection, branches w, k, v, r, g
  rwkv6MixW2?: Float32Array; // (5, dim, mixExtraDim): each branch's up projection
  rwkv6LerpFused?: Float32Array; // (5, 1, 1, dim): each branch's static lerp, added to its LoRA output
  rwkv6DecayW1?: Float32Array; // (decayExtraDim, dim)
  rwkv6DecayW2?: Float32Array; // (dim, decayExtraDim)
  rwkv6Gate?: Float32Array; // (dim, dim): the output gate, silu
  rwkv6LnX?: Float32Array; // (dim): the group norm (one group per head) of the WKV output
  rwkv6LnXBias?: Float32Array; // (dim)
  rwkv6FfnLerpK?: Float32Array; // (dim), channel mixing
  rwkv6FfnLerpR?: Float32Array; // (dim)
  // RWKV-7 (attnNorm/attnNormBias = attn_norm, ffnNorm/ffnNormBias = attn_norm_2; wk, wv,
  // rwkvReceptance, wo: (dim, dim) time mixing's key, value, receptance and output; wUp:
  // (hiddenDim, dim), wDown: (dim, hiddenDim) and rwkvFfnMixK channel mixing's).
  rwkv7Lerp?: Float32Array; // (6, 1, 1, dim): the token-shift mix of r, w, k, v, a, g
  rwkv7W0?: Float32Array; // (dim): decay bias
  rwkv7W1?: Float32Array; // (decayRank, dim)
  rwkv7W2?: Float32Array; // (dim, decayRank)
  rwkv7A0?: Float32Array; // (dim): in-context learning rate bias
  rwkv7A1?: Float32Array; // (iclrRank, dim)
  rwkv7A2?: Float32Array; // (dim, iclrRank)
  rwkv7V0?: Float32Array; // (dim): value residual mix bias
  rwkv7V1?: Float32Array; // (valueRank, dim)
  rwkv7V2?: Float32Array; // (dim, valueRank)
  rwkv7G1?: Float32Array; // (gateRank, dim): output gate
  rwkv7G2?: Float32Array; // (dim, gateRank)
  rwkv7KK?: Float32Array; // (dim): the removal key's scale (k_k)
  rwkv7KA?: Float32Array; // (dim): how much the learning rate scales the key (k_a)
  rwkv7RK?: Float32Array; // (dim): the bonus of the current token (r_k)
  rwkv7LnX?: Float32Array; // (dim): the per-head group norm of the WKV output
  rwkv7LnXBias?: Float32Array; // (dim)
}

export type LayerWeightName = keyof LayerWeightsF32;

/** Every weight a layer of this shape needs, with its dimensions (row-major, linear weights (out, in)). */
export function layerWeightDims(shape: LayerShape): Partial<Record<LayerWeightName, number[]>> {
  if (shape.kind === "mamba") return mambaWeightDims(shape.dim, mambaDimsOf(shape));
  if (shape.kind === "mamba2") return mamba2WeightDims(shape.dim, mamba2DimsOf(shape));
  if (shape.kind === "rwkv4") return rwkv4WeightDims(shape.dim, shape.hiddenDim, rwkvAttDimOf(shape));
  if (shape.kind === "rwkv6") return rwkv6WeightDims(shape.dim, shape.hiddenDim, rwkv6DimsOf(shape));
  if (shape.kind === "rwkv7") return rwkv7WeightDims(shape.dim, shape.hiddenDim, rwkv7DimsOf(shape));
  const { dim, hiddenDim, nHeads, nKvHeads, headDim } = shape;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  return {
    attnNorm: [dim], wq: [qDim, dim], wk: [kvDim, dim], wv: [kvDim, dim], wo: [dim, qDim],
    ffnNorm: [dim], ...(shape.plainMlp ? {} : { wGate: [hiddenDim, dim] }), wDown: [dim, hiddenDim], wUp: [hiddenDim, dim],
    ...(shape.qkvBias ? { bq: [qDim], bk: [kvDim], bv: [kvDim] } : {}),
    ...(shape.qkNorm ? { qNorm: [headDim], kNorm: [headDim] } : {}),
    ...(shape.layerNorm ? { attnNormBias: [dim], ffnNormBias: [dim] } : {}),
    ...(shape.outputBiases ? { bo: [dim], bUp: [hiddenDim], bDown: [dim] } : {}),
    ...(shape.postNorms ? { attnPostNorm: [dim], ffnPostNorm: [dim] } : {}),
  };
}

function mambaWeightDims(dim: number, m: MambaDims): Partial<Record<LayerWeightName, number[]>> {
  const { dInner, dState, dtRank, convKernel } = m;
  return {
    attnNorm: [dim], mambaInProj: [2 * dInner, dim], mambaConv: [dInner, 1, convKernel], ...(m.convBias ? { mambaConvBias: [dInner] } : {}),
    mambaXProj: [dtRank + 2 * dState, dInner], mambaDtProj: [dInner, dtRank], mambaDtBias: [dInner], mambaALog: [dInner, dState], mambaD: [dInner],
    mambaOutProj: [dim, dInner],
  };
}

/** A Mamba-2 mixer's conv channels: x, then B and C of every group. */
export function mamba2ConvDim(m: Mamba2Dims): number {
  return m.dInner + 2 * m.nGroups * m.dState;
}

function mamba2WeightDims(dim: number, m: Mamba2Dims): Partial<Record<LayerWeightName, number[]>> {
  const convDim = mamba2ConvDim(m);
  return {
    attnNorm: [dim], mambaInProj: [m.dInner + convDim + m.nHeads, dim], mambaConv: [convDim, 1, m.convKernel], ...(m.convBias ? { mambaConvBias: [convDim] } : {}),
    mambaDtBias: [m.nHeads], mambaALog: [m.nHeads], mambaD: [m.nHeads], mambaNorm: [m.dInner], mambaOutProj: [dim, m.dInner],
  };
}

function rwkv4WeightDims(dim: number, hiddenDim: number, att: number): Partial<Record<LayerWeightName, number[]>> {
  const mix = [1, 1, dim];
  return {
    attnNorm: [dim], attnNormBias: [dim], ffnNorm: [dim], ffnNormBias: [dim],
    rwkvTimeDecay: [att], rwkvTimeFirst: [att], rwkvMixK: mix, rwkvMixV: mix, rwkvMixR: mix,
    wk: [att, dim], wv: [att, dim], rwkvReceptance: [att, dim], wo: [dim, att],
    rwkvFfnMixK: mix, rwkvFfnMixR: mix, wUp: [hiddenDim, dim], rwkvFfnReceptance: [dim, dim], wDown: [dim, hiddenDim],
  };
}

function rwkv6WeightDims(dim: number, hiddenDim: number, r: Rwkv6Dims): Partial<Record<LayerWeightName, number[]>> {
  const { headSize, mixExtraDim, decayExtraDim } = r;
  return {
    attnNorm: [dim], attnNormBias: [dim], ffnNorm: [dim], ffnNormBias: [dim],
    rwkv6LerpX: [dim], rwkv6MixW1: [5 * mixExtraDim, dim], rwkv6MixW2: [5, dim, mixExtraDim], rwkv6LerpFused: [5, 1, 1, dim],
    rwkvTimeFirst: [dim / headSize, headSize], rwkvTimeDecay: [dim], rwkv6DecayW1: [decayExtraDim, dim], rwkv6DecayW2: [dim, decayExtraDim],
    wk: [dim, dim], wv: [dim, dim], rwkvReceptance: [dim, dim], rwkv6Gate: [dim, dim], rwkv6LnX: [dim], rwkv6LnXBias: [dim], wo: [dim, dim],
    rwkv6FfnLerpK: [dim], rwkv6FfnLerpR: [dim], wUp: [hiddenDim, dim], wDown: [dim, hiddenDim], rwkvFfnReceptance: [dim, dim],
  };
}

/** An rwkv6 layer shape's head size and LoRA widths (a shape of kind "rwkv6" without them is a programming error). */
export function rwkv6DimsOf(shape: LayerShape): Rwkv6Dims {
  if (!shape.rwkv6) throw new Error("internal: a layer shape of kind rwkv6 has no rwkv6 dimensions");
  return shape.rwkv6;
}

function rwkv7WeightDims(dim: number, hiddenDim: number, d: Rwkv7Dims): Partial<Record<LayerWeightName, number[]>> {
  const lora = (rank: number): number[][] => [[rank, dim], [dim, rank]];
  const [w1, w2] = lora(d.decayRank);
  const [a1, a2] = lora(d.iclrRank);
  const [v1, v2] = lora(d.valueRank);
  const [g1, g2] = lora(d.gateRank);
  return {
    attnNorm: [dim], attnNormBias: [dim], ffnNorm: [dim], ffnNormBias: [dim],
    rwkv7Lerp: [6, 1, 1, dim], rwkv7W0: [dim], rwkv7W1: w1!, rwkv7W2: w2!, rwkv7A0: [dim], rwkv7A1: a1!, rwkv7A2: a2!,
    rwkv7V0: [dim], rwkv7V1: v1!, rwkv7V2: v2!, rwkv7G1: g1!, rwkv7G2: g2!, rwkv7KK: [dim], rwkv7KA: [dim], rwkv7RK: [dim],
    wk: [dim, dim], wv: [dim, dim], rwkvReceptance: [dim, dim], wo: [dim, dim], rwkv7LnX: [dim], rwkv7LnXBias: [dim],
    rwkvFfnMixK: [1, 1, dim], wUp: [hiddenDim, dim], wDown: [dim, hiddenDim],
  };
}

/** An rwkv7 layer shape's time-mixing dimensions (a shape of kind "rwkv7" without them is a programming error). */
export function rwkv7DimsOf(shape: LayerShape): Rwkv7Dims {
  if (!shape.rwkv7) throw new Error("internal: a layer shape of kind rwkv7 has no rwkv7 dimensions");
  return shape.rwkv7;
}

/** An rwkv4 layer shape's time-mixing width (a shape of kind "rwkv4" without it is a programming error). */
export function rwkvAttDimOf(shape: LayerShape): number {
  if (shape.rwkvAttDim === undefined) throw new Error("internal: a layer shape of kind rwkv4 has no rwkvAttDim");
  return shape.rwkvAttDim;
}

/** A mamba layer shape's mixer dimensions (a shape of kind "mamba" without them is a programming error). */
export function mambaDimsOf(shape: LayerShape): MambaDims {
  if (!shape.mamba) throw new Error("internal: a layer shape of kind mamba has no mamba dimensions");
  return shape.mamba;
}

/** A mamba2 layer shape's mixer dimensions (a shape of kind "mamba2" without them is a programming error). */
export function mamba2DimsOf(shape: LayerShape): Mamba2Dims {
  if (!shape.mamba2) throw new Error("internal: a layer shape of kind mamba2 has no mamba2 dimensions");
  return shape.mamba2;
}

/** The layer's kind, "attention" when the shape does not say. */
export function layerKind(shape: LayerShape): LayerKind {
  return shape.kind ?? "attention";
}

/** Whether the layer carries a recurrent state through a window (a scan) instead of attending to it. */
export function isRecurrentShape(shape: LayerShape): boolean {
  return layerKind(shape) !== "attention";
}

/**
 * The capability check of a backend that computes attention layers only: refuses any other kind
 * with a typed error that names the kind and what to do.
 */
export function assertAttentionLayer(shape: LayerShape, backend: string): void {
  const kind = layerKind(shape);
  if (kind !== "attention") {
    throw new UnsupportedError(`backend ${backend} does not compute ${kind} layers (a recurrent scan)`, {
      got: kind, option: "--backend", hint: "run this model with --backend onnx (or wasm, reference): every CPU backend computes recurrent layers",
    });
  }
}

/** The engine's capability check before a run: a backend without recurrent kernels refuses a recurrent model up front. */
export function checkBackendComputes(backend: Pick<DecoderBackend, "name" | "computesRecurrentLayers">, shape: LayerShape): void {
  const computes = backend.computesRecurrentLayers;
  const computed = computes === true || (typeof computes === "object" && computes.has(layerKind(shape)));
  if (isRecurrentShape(shape) && !computed) assertAttentionLayer(shape, backend.name);
}

/** The final norm (and its bias, with LayerNorm) and the classifier, as runHead takes them. */
export interface HeadWeights {
  finalNorm: Float32Array; // (dim)
  /** With it, the final norm is LayerNorm (GPT-2); without, RMSNorm. */
  finalNormBias?: Float32Array; // (dim)
  classifier: Float32Array; // (vocabSize, dim)
  /** Gemma 2: logits become logitSoftcap * tanh(logit / logitSoftcap). */
  logitSoftcap?: number;
}

/**
 * Several sequences packed into each window so that they share the computation of a common
 * prefix (tree attention): the prefix comes first, then each branch's own tokens. Token t sees
 * the earlier tokens (packed order) of the prefix and of its own branch, and is rotated by its
 * position within its own sequence. Arrays hold one value per token, nWindows * seqLen.
 */
export interface PackedLayout {
  /** Position of the token in its own sequence (the prefix's tokens are 0..p-1, a branch's follow on). */
  positions: Int32Array;
  /** 0 for the shared prefix, k > 0 for the k-th branch. */
  branches: Int32Array;
}

/**
 * A batch's residual stream (rows x dim, float32), held where the backend computes: a host array
 * for the CPU backends, device memory for cuda. Only the backend that made it reads it. A host
 * backend's states also carry the rows' side streams (SideStreams), which runLayer passes on.
 */
export interface HiddenStates {
  readonly rows: number;
  readonly dim: number;
  /** The backend that owns the memory (a state passed to another backend is refused). */
  readonly owner: string;
}

/** One layer's weights one tensor at a time, in the layout load() gives them. */
export interface LayerTensorSource {
  /** The weight as float32 (what load() holds under that name). */
  f32(name: LayerWeightName): Float32Array;
  /** The weight as bf16 bits when the checkpoint stores it so in this layout; else undefined (use f32). */
  bf16(name: LayerWeightName): Uint16Array | undefined;
}

/** A layer's weights made ready by prepareLayer: host arrays, or device copies. */
export interface PreparedLayer {
  readonly key: string;
  readonly weights: LayerWeightsF32 | undefined;
  /**
   * Arrays from takeF32 that the layer holds besides its weights (the bf16 engine's packed GEMM
   * weights): handed back for reuse, like the weights, once every batch has run the layer.
   */
  readonly recyclable?: readonly Float32Array[];
}

/** The head's weights made ready by prepareHead. */
export interface PreparedHead {
  readonly key: string;
  readonly weights: HeadWeights | undefined;
  readonly vocabSize: number;
}

/** The input embedding as embed takes it. */
export interface EmbeddingWeights {
  table: Float32Array; // (vocabSize, dim)
  /** Gemma: rows are multiplied by this (in float32) before layer 0. */
  scale?: number;
  /** GPT-2: learned positions (nPositions, dim), added to each row at its position. */
  positions?: Float32Array;
}

/** The embedding made ready by prepareEmbedding. */
export interface PreparedEmbedding {
  readonly key: string;
  readonly weights: EmbeddingWeights | undefined;
  readonly vocabSize: number;
  readonly dim: number;
}

/** Which per-row statistics rowStats computes between the stream entering and leaving a layer. */
export interface RowStatsWanted {
  cosine: boolean;
  magnitude: boolean;
}

/** Per row: cos(a, b), and ||b - a|| / ||b|| (1 when b is zero and a is not, 0 when both are). */
export interface RowStats {
  cosine?: Float64Array;
  magnitude?: Float64Array;
}

/**
 * The engine's boundary: the backend owns where activations live and does every operation on
 * them (layers, the statistics the metrics need, the head); only small results come back.
 */
export interface DecoderBackend {
  readonly name: string;
  /**
   * The Gemma 2/3 and Phi-3 layer features it computes (see shapeFeatures.ts); absent means none,
   * and the engine refuses such a model on this backend before any work (assertShapeFeatures).
   */
  readonly shapeFeatures?: ReadonlySet<AttentionFamilyFeature>;
  /** Threads the backend computes with (CPU backends); 1 for a device backend. */
  readonly threads: number;
  /** The batch size (tokens per runLayer call) that keeps this backend busy. */
  readonly batchTokens: number;
  /**
   * True when runLayer computes the recurrent layer kinds (mamba, mamba2, rwkv4, rwkv6, rwkv7) too,
   * or the set of those it computes; absent means attention only, and the engine refuses a
   * recurrent model on it (see checkBackendComputes).
   */
  readonly computesRecurrentLayers?: boolean | ReadonlySet<LayerKind>;
  /**
   * False when runLayer computes on the calling thread (the CPU bf16 engine's native calls):
   * reading the next layer while it runs would overlap nothing, so the engine reads the next
   * layer once this one is done and dropped, and holds one layer's weights instead of two.
   * Absent means true: the next layer is read while the backend computes.
   */
  readonly overlapsLayerLoads?: boolean;
  /** Places embedded rows x (rows, dim) where the backend computes. */
  upload(x: Float32Array, rows: number, dim: number): Promise<HiddenStates>;
  /** Makes the input embedding ready, as prepareLayer does for a layer. */
  prepareEmbedding(key: string, load: () => EmbeddingWeights, vocabSize: number, dim: number): Promise<PreparedEmbedding>;
  /**
   * The residual stream entering layer 0 for token ids (one row each): the embedding row (times
   * its scale), plus the learned position row at positions[r] (else r % seqLen) where the model has one.
   */
  embed(embedding: PreparedEmbedding, ids: Int32Array, seqLen: number, positions?: Int32Array): Promise<HiddenStates>;
  /** Copies rows back to the host: all of them, or the listed row indices in that order. */
  readRows(states: HiddenStates, rows?: Int32Array): Promise<Float32Array>;
  /** Frees the states' memory now (device backends); the states must not be used again. */
  release(states: HiddenStates): void;
  /**
   * Makes one layer's weights ready. `key` names the layer of one checkpoint for the whole run: a
   * backend that keeps weights resident (cuda) calls `load` only the first time. `tensors`, when
   * given, reads the same weights one at a time (a backend that converts each as it arrives then
   * never holds the whole layer in float32).
   */
  prepareLayer(key: string, load: () => LayerWeightsF32, shape: LayerShape, tensors?: LayerTensorSource): Promise<PreparedLayer>;
  /** Makes the final norm and classifier ready, as prepareLayer does for a layer. */
  prepareHead(key: string, load: () => HeadWeights, vocabSize: number): Promise<PreparedHead>;
  /**
   * x: (nWindows * seqLen, dim), nWindows independent causal windows, each with positions
   * 0..seqLen-1. Returns new states holding the residual stream after the layer (x stays valid):
   * h = x + wo @ attn(rope(wq @ norm(x)), rope(wk @ norm(x)), wv @ norm(x)) (+ q/k/v biases with
   * shape.qkvBias; q and k RMS-normed per head before RoPE with shape.qkNorm);
   * out = h + wDown @ (act(wGate @ norm(h)) * (wUp @ norm(h))), act = silu or shape.activation.
   * With a layout, the windows hold packed sequences (see PackedLayout) instead.
   */
  runLayer(x: HiddenStates, nWindows: number, seqLen: number, layer: PreparedLayer, shape: LayerShape, layout?: PackedLayout): Promise<HiddenStates>;
  /** Per-row statistics between a and b (same shape), for every row or the listed ones. */
  rowStats(a: HiddenStates, b: HiddenStates, wanted: RowStatsWanted, rows?: Int32Array): Promise<RowStats>;
  /**
   * Final norm (RMSNorm, or LayerNorm with a finalNormBias) and classifier on the listed rows of x.
   * With targets (one token id per listed row), returns per row the log-sum-exp of the logits and
   * the target's logit (log p = target - lse); without, the logits (rows.length, vocab).
   */
  runHead(x: HiddenStates, rows: Int32Array, head: PreparedHead, normEps: number, targets?: Int32Array): Promise<HeadResult>;
  /** Token-by-token decoding with a key/value cache held by the backend (generation); absent where generation runs on the in-memory model instead. */
  readonly decode?: DecodeSupport;
  dispose(): Promise<void>;
}

/** A key/value cache for one sequence, held by the backend that made it. */
export interface KvCacheHandle {
  readonly owner: string;
  /** Positions it can hold. */
  readonly capacity: number;
  /** Positions filled; the caller advances it after each step has run through every layer. */
  length: number;
}

export interface DecodeSupport {
  /** A cache with one slot per layer (slots 0..nSlots-1), each for `capacity` positions of this layer shape. */
  createKvCache(nSlots: number, capacity: number, shape: LayerShape): KvCacheHandle;
  /**
   * x: (n, dim), n new tokens of one sequence at positions cache.length .. cache.length + n - 1.
   * Writes their keys and values into the cache's `slot` and attends over the cache up to each
   * token's own position; otherwise as runLayer.
   */
  runLayerCached(x: HiddenStates, layer: PreparedLayer, shape: LayerShape, cache: KvCacheHandle, slot: number): Promise<HiddenStates>;
  releaseKvCache(cache: KvCacheHandle): void;
}

/**
 * The arithmetic of a CPU backend on host arrays; hostBackend (hostBackend.ts) turns it into a
 * DecoderBackend. Same contracts as DecoderBackend's runLayer and runHead, on Float32Arrays;
 * runLayer reads the side streams the rows carry (see SideStreams) and sets the ones it starts.
 */
export interface HostKernels {
  readonly name: string;
  readonly threads: number;
  runLayer(x: Float32Array, nWindows: number, seqLen: number, weights: LayerWeightsF32, shape: LayerShape, layout?: PackedLayout, side?: SideStreams): Promise<Float32Array>;
  runHead(x: Float32Array, nRows: number, head: HeadWeights, vocabSize: number, normEps: number, targets?: Int32Array): Promise<HeadResult>;
  dispose(): Promise<void>;
}

export type HeadResult =
  | { kind: "logits"; logits: Float32Array }
  | { kind: "nll"; logSumExp: Float32Array; targetLogit: Float32Array };

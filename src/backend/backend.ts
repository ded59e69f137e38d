// The compute backend interface behind the models: one Llama decoder layer over a batch of
// independent causal windows, and the final norm + classifier. Implementations: the plain
// TypeScript reference (tests), onnxruntime-node (default fast path), onnxruntime-web's
// WebAssembly SIMD build (fallback that always installs).

/** The shape constants of one decoder layer. */
export interface LayerShape {
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
}

/**
 * One layer's weights expanded to float32, row-major, linear weights stored (out, in).
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
}

export type LayerWeightName = keyof LayerWeightsF32;

/** Every weight a layer of this shape needs, with its dimensions (row-major, linear weights (out, in)). */
export function layerWeightDims(shape: LayerShape): Partial<Record<LayerWeightName, number[]>> {
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
  };
}

/** The final norm (and its bias, with LayerNorm) and the classifier, as runHead takes them. */
export interface HeadWeights {
  finalNorm: Float32Array; // (dim)
  /** With it, the final norm is LayerNorm (GPT-2); without, RMSNorm. */
  finalNormBias?: Float32Array; // (dim)
  classifier: Float32Array; // (vocabSize, dim)
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

export interface DecoderBackend {
  readonly name: string;
  /** Threads the backend computes with. */
  readonly threads: number;
  /**
   * x: (nWindows * seqLen, dim), nWindows independent causal windows, each with positions
   * 0..seqLen-1. Returns the residual stream after the layer, same shape:
   * h = x + wo @ attn(rope(wq @ rms(x)), rope(wk @ rms(x)), wv @ rms(x)) (+ q/k/v biases with
   * shape.qkvBias; q and k RMS-normed per head before RoPE with shape.qkNorm);
   * out = h + wDown @ (act(wGate @ rms(h)) * (wUp @ rms(h))), act = silu or shape.activation.
   * With a layout, the windows hold packed sequences (see PackedLayout) instead.
   */
  runLayer(x: Float32Array, nWindows: number, seqLen: number, weights: LayerWeightsF32, shape: LayerShape, layout?: PackedLayout): Promise<Float32Array>;
  /**
   * Final norm (RMSNorm, or LayerNorm with head.finalNormBias) and classifier for nRows rows of x (nRows, dim). With targets (one token id per
   * row), returns per row the log-sum-exp of the logits and the target's logit (log p = target - lse);
   * without, the logits (nRows, vocab).
   */
  runHead(x: Float32Array, nRows: number, head: HeadWeights, vocabSize: number, normEps: number, targets?: Int32Array): Promise<HeadResult>;
  dispose(): Promise<void>;
}

export type HeadResult =
  | { kind: "logits"; logits: Float32Array }
  | { kind: "nll"; logSumExp: Float32Array; targetLogit: Float32Array };

// The plain TypeScript reference kernels: float32 weights, float64 activations and
// accumulation, so the forward pass matches a float64 oracle to ~1e-12. Kernels write into
// `out` and do not allocate (attention takes its scratch row from the caller).

import { f16ToF32, f32ToF16Bits } from "../tensor/half.js";

export type Activations = Float64Array;
export type Weights = Float32Array;

/** x: (T, K), w: (N, K) row-major as stored (out, in) -> out: (T, N) = x @ w^T. */
export function matmul(out: Activations, x: Activations, w: Weights, nTokens: number, nIn: number, nOut: number): void {
  const k4 = nIn - (nIn % 4);
  for (let t = 0; t < nTokens; t++) {
    const xOff = t * nIn;
    const oOff = t * nOut;
    for (let o = 0; o < nOut; o++) {
      const wOff = o * nIn;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      let i = 0;
      for (; i < k4; i += 4) {
        a0 += x[xOff + i]! * w[wOff + i]!;
        a1 += x[xOff + i + 1]! * w[wOff + i + 1]!;
        a2 += x[xOff + i + 2]! * w[wOff + i + 2]!;
        a3 += x[xOff + i + 3]! * w[wOff + i + 3]!;
      }
      for (; i < nIn; i++) a0 += x[xOff + i]! * w[wOff + i]!;
      out[oOff + o] = a0 + a1 + a2 + a3;
    }
  }
}

/** x: (T, C) -> out: (T, C) = x / sqrt(mean(x^2) + eps) * weight. */
export function rmsNorm(out: Activations, x: Activations, weight: Weights, nTokens: number, dim: number, eps: number): void {
  for (let t = 0; t < nTokens; t++) {
    const off = t * dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[off + i]! * x[off + i]!;
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[off + i] = x[off + i]! * scale * weight[i]!;
  }
}

/** LayerNorm (GPT-2): out = (x - mean) / sqrt(var + eps) * weight + bias, per token; may run in place. */
export function layerNorm(out: Activations, x: Activations, weight: Weights, bias: Weights, nTokens: number, dim: number, eps: number): void {
  for (let t = 0; t < nTokens; t++) {
    const off = t * dim;
    let sum = 0;
    for (let i = 0; i < dim; i++) sum += x[off + i]!;
    const mean = sum / dim;
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += (x[off + i]! - mean) ** 2;
    const scale = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) out[off + i] = (x[off + i]! - mean) * scale * weight[i]! + bias[i]!;
  }
}

/** The model's final norm: LayerNorm when it has a bias (GPT-2), else RMSNorm. */
export function finalNorm(out: Activations, x: Activations, head: { finalNorm: Weights; finalNormBias?: Weights | undefined }, nTokens: number, dim: number, eps: number): void {
  if (head.finalNormBias) layerNorm(out, x, head.finalNorm, head.finalNormBias, nTokens, dim, eps);
  else rmsNorm(out, x, head.finalNorm, nTokens, dim, eps);
}

/**
 * Rotary position embedding in the rotate-half layout (Hugging Face convention): within each
 * head, element i pairs with i + headDim/2 and turns by pos * theta^(-2i/headDim).
 * x: (T, nHeads * headDim), in place; token t sits at position startPos + t, or positions[t]
 * when given (packed sequences).
 */
export function ropeHalf(x: Activations, nTokens: number, nHeads: number, headDim: number, startPos: number, invFreq: Float64Array, positions?: ArrayLike<number>): void {
  const half = headDim / 2;
  for (let t = 0; t < nTokens; t++) {
    const pos = positions ? positions[t]! : startPos + t;
    for (let i = 0; i < half; i++) {
      const angle = pos * invFreq[i]!;
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      for (let h = 0; h < nHeads; h++) {
        const off = (t * nHeads + h) * headDim;
        const a = x[off + i]!;
        const b = x[off + i + half]!;
        x[off + i] = a * cos - b * sin;
        x[off + i + half] = b * cos + a * sin;
      }
    }
  }
}

/** theta^(-2i/dim) for i in 0..dim/2-1, divided by the scaling factors when given (see LayerShape.ropeFreqFactors). */
export function ropeInverseFrequencies(dim: number, theta: number, factors?: readonly number[]): Float64Array {
  const inv = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = Math.pow(theta, (-2 * i) / dim) / (factors?.[i] ?? 1);
  return inv;
}

/** In place: x[i] = exp(x[i] - max) / sum over the first n elements from `offset`. */
export function softmax(x: Float64Array, offset: number, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[offset + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(x[offset + i]! - max);
    x[offset + i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[offset + i]! /= sum;
}

/** log(sum(exp(x))) over n elements from offset, computed stably. */
export function logSumExp(x: Float64Array, offset: number, n: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, x[offset + i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[offset + i]! - max);
  return max + Math.log(sum);
}

/** How attention scores are formed beyond the plain causal mask (see LayerShape). */
export interface AttentionOptions {
  /** Score scale; default 1/sqrt(headDim). */
  scale?: number | undefined;
  /** Scores become softcap * tanh(score / softcap). */
  softcap?: number | undefined;
  /** A query at position p sees keys at positions above p - window only. */
  window?: number | undefined;
  /** Packed sequences: each token's position (keys and queries share the window, startPos 0). */
  positions?: ArrayLike<number> | undefined;
}

/**
 * Grouped-query causal attention over a key/value cache.
 * q: (T, nHeads * headDim) for positions startPos..startPos+T-1;
 * k, v: (startPos + T, nKvHeads * headDim), all positions so far;
 * scores: scratch of length >= startPos + T; out: (T, nHeads * headDim).
 * branches (packed sequences, startPos 0): key j is hidden from query t unless branches[j] is 0
 * (the shared prefix) or branches[t].
 */
export function causalAttention(
  out: Activations, q: Activations, k: Activations, v: Activations, scores: Float64Array,
  nTokens: number, startPos: number, nHeads: number, nKvHeads: number, headDim: number, branches?: ArrayLike<number>,
  options: AttentionOptions = {},
): void {
  const group = nHeads / nKvHeads;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const scale = options.scale ?? 1 / Math.sqrt(headDim);
  const { softcap, window, positions } = options;
  for (let t = 0; t < nTokens; t++) {
    const nKeys = startPos + t + 1;
    const qPos = positions ? positions[t]! : startPos + t;
    for (let h = 0; h < nHeads; h++) {
      const qOff = t * qDim + h * headDim;
      const kvHead = Math.floor(h / group) * headDim;
      for (let j = 0; j < nKeys; j++) {
        const kOff = j * kvDim + kvHead;
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += q[qOff + d]! * k[kOff + d]!;
        const outsideWindow = window !== undefined && qPos - (positions ? positions[j]! : j) >= window;
        const hidden = outsideWindow || (branches !== undefined && branches[j] !== 0 && branches[j] !== branches[t]);
        const score = dot * scale;
        scores[j] = hidden ? -Infinity : softcap === undefined ? score : softcap * Math.tanh(score / softcap);
      }
      softmax(scores, 0, nKeys);
      const oOff = t * qDim + h * headDim;
      for (let d = 0; d < headDim; d++) out[oOff + d] = 0;
      for (let j = 0; j < nKeys; j++) {
        const p = scores[j]!;
        const vOff = j * kvDim + kvHead;
        for (let d = 0; d < headDim; d++) out[oOff + d]! += p * v[vOff + d]!;
      }
    }
  }
}

const GELU_C = Math.sqrt(2 / Math.PI);

/** GELU with the tanh approximation (transformers' gelu_pytorch_tanh / gelu_new). */
function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x * x * x)));
}

/** float16 rounding (to nearest even), as F16C converts. */
function toF16(x: number): number {
  return f16ToF32(f32ToF16Bits(x));
}

/**
 * llama.cpp's CPU GELU: a lookup table indexed by the float16 input, holding float16 outputs;
 * 0 at or below -10, the input itself at or above 10. Only for comparisons with llama.cpp.
 */
function geluTanhF16Table(x: number): number {
  if (x <= -10) return 0;
  if (x >= 10) return x;
  return toF16(geluTanh(Math.fround(toF16(x))));
}

/** The gate activation of a layer shape, as a function. */
function activation(kind: "gelu_tanh" | "gelu_tanh_f16" | "silu"): (x: number) => number {
  if (kind === "gelu_tanh") return geluTanh;
  if (kind === "gelu_tanh_f16") return geluTanhF16Table;
  return (x) => x / (1 + Math.exp(-x));
}

/**
 * x = act(x) in place over n elements, times `up` element by element when given (a gated MLP:
 * SwiGLU, or Gemma's GELU gate): GELU (tanh approximation, or llama.cpp's table) or SiLU.
 */
export function activate(x: Activations, n: number, kind: "gelu_tanh" | "gelu_tanh_f16" | "silu", up?: Activations): void {
  const act = activation(kind);
  if (up) for (let i = 0; i < n; i++) x[i] = act(x[i]!) * up[i]!;
  else for (let i = 0; i < n; i++) x[i] = act(x[i]!);
}

/** out += x over n elements. */
export function addInPlace(out: Activations, x: Activations, n: number): void {
  for (let i = 0; i < n; i++) out[i]! += x[i]!;
}

/** In place over n elements: x = cap * tanh(x / cap) (Gemma 2's soft-capping of scores and logits). */
export function softcapInPlace(x: Float64Array | Float32Array, n: number, cap: number): void {
  for (let i = 0; i < n; i++) x[i] = cap * Math.tanh(x[i]! / cap);
}

// ONNX graphs for one Llama decoder layer and for the final norm + classifier, built from
// standard opset-17 operators only so the same bytes run in onnxruntime-node and -web.
// Weights are graph inputs, not initializers: one session serves every layer of a model.

import { type LayerShape, type LayerWeightName, layerWeightDims } from "../backend.js";
import { UnsupportedError } from "../../errors.js";
import { ropeInverseFrequencies } from "../reference.js";
import { attr, GraphBuilder, type GraphSpec } from "./model.js";

/**
 * How a linear layer x @ w^T meets the runtime: "gemm" is Gemm(transB=1) on the stored
 * (out, in) weight; "matmul" is MatMul against a Transpose node (which ORT folds into
 * a transposed matmul when it can).
 */
export type LinearMode = "gemm" | "matmul";

export interface GraphOptions {
  linear: LinearMode;
}

export const DEFAULT_GRAPH_OPTIONS: GraphOptions = { linear: "gemm" };


/** Symbolic dim names: tokens = nWindows * seqLen (rows of x), rows of the head input. */
const TOKENS = "tokens";
const ROWS = "rows";

/** x: (N, C), weight: (C) -> (N, C) = x / sqrt(mean(x^2) + eps) * weight, in the op pattern ORT fuses. */
function rmsNorm(g: GraphBuilder, x: string, weight: string, eps: number): string {
  const sq = g.op("Pow", [x, g.constFloat([2], [])]);
  const ms = g.op("ReduceMean", [sq], [attr.ints("axes", [-1]), attr.int("keepdims", 1)]);
  const rms = g.op("Sqrt", [g.op("Add", [ms, g.constFloat([eps], [])])]);
  return g.op("Mul", [g.op("Div", [x, rms]), weight]);
}

/** x: (N, C), weight, bias: (C) -> LayerNorm over the last axis (opset 17's LayerNormalization). */
function layerNorm(g: GraphBuilder, x: string, weight: string, bias: string, eps: number): string {
  return g.op("LayerNormalization", [x, weight, bias], [attr.int("axis", -1), attr.float("epsilon", eps)]);
}

/** GELU with the tanh approximation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in opset-17 ops. */
function geluTanh(g: GraphBuilder, x: string): string {
  const cube = g.op("Mul", [g.op("Mul", [x, x]), x]);
  const inner = g.op("Mul", [g.op("Add", [x, g.op("Mul", [cube, g.constFloat([0.044715], [])])]), g.constFloat([Math.sqrt(2 / Math.PI)], [])]);
  return g.op("Mul", [g.op("Mul", [x, g.constFloat([0.5], [])]), g.op("Add", [g.op("Tanh", [inner]), g.constFloat([1], [])])]);
}

/** x: (N, in), w: (out, in) as stored -> (N, out) = x @ w^T. */
function linear(g: GraphBuilder, x: string, w: string, mode: LinearMode): string {
  if (mode === "gemm") return g.op("Gemm", [x, w], [attr.int("transB", 1)]);
  return g.op("MatMul", [x, g.op("Transpose", [w], [attr.ints("perm", [1, 0])])]);
}

/**
 * Rotate-half RoPE as v * cos2 + swapHalves(v) * sin2, where cos2 = [cos, cos] and
 * sin2 = [-sin, sin] along the head: (a, b) -> (a cos - b sin, b cos + a sin).
 * v: (..., T, H, d); cos2, sin2: (T, 1, d) -> same shape as v.
 */
function rope(g: GraphBuilder, v: string, cos2: string, sin2: string, headDim: number): string {
  const half = headDim / 2;
  const axis = g.constInt64([-1]);
  const a = g.op("Slice", [v, g.constInt64([0]), g.constInt64([half]), axis]);
  const b = g.op("Slice", [v, g.constInt64([half]), g.constInt64([headDim]), axis]);
  const swapped = g.op("Concat", [b, a], [attr.int("axis", -1)]);
  return g.op("Add", [g.op("Mul", [v, cos2]), g.op("Mul", [swapped, sin2])]);
}

/**
 * The cos2/sin2 tables (T, 1, d) for positions 0..T-1, computed in float64 like the
 * reference and scaled by `scale` (1/sqrt(d) folds the attention scale into q for free).
 */
export function ropeTables(seqLen: number, headDim: number, theta: number, scale: number, factors?: readonly number[]): { cos2: Float32Array; sin2: Float32Array } {
  const half = headDim / 2;
  const inverseFrequencies = ropeInverseFrequencies(headDim, theta, factors);
  const cos2 = new Float32Array(seqLen * headDim);
  const sin2 = new Float32Array(seqLen * headDim);
  for (let pos = 0; pos < seqLen; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = pos * inverseFrequencies[i]!;
      const c = Math.cos(angle) * scale;
      const s = Math.sin(angle) * scale;
      const off = pos * headDim;
      cos2[off + i] = c;
      cos2[off + i + half] = c;
      sin2[off + i] = -s;
      sin2[off + i + half] = s;
    }
  }
  return { cos2, sin2 };
}

/**
 * (T, T) additive causal mask: 0 where key <= query, -inf above the diagonal, and with a sliding
 * window also -inf where the key is `window` or more positions behind the query.
 */
export function causalMask(seqLen: number, window?: number): Float32Array {
  const mask = new Float32Array(seqLen * seqLen);
  for (let t = 0; t < seqLen; t++) {
    mask.fill(-Infinity, t * seqLen + t + 1, (t + 1) * seqLen);
    if (window !== undefined && t - window >= 0) mask.fill(-Infinity, t * seqLen, t * seqLen + t - window + 1);
  }
  return mask;
}

/** Gemma 2's soft-cap: cap * tanh(v / cap). */
function softcap(g: GraphBuilder, v: string, cap: number): string {
  return g.op("Mul", [g.op("Tanh", [g.op("Div", [v, g.constFloat([cap], [])])]), g.constFloat([cap], [])]);
}

/**
 * One decoder layer over B = N / T independent causal windows of T = seqLen tokens.
 * Inputs: x (N, C) and the nine weights named as in LayerWeightsF32; output y (N, C).
 * `packed`: the windows hold packed sequences (PackedLayout); int64 inputs `positions` (N,
 * unless the shape has no RoPE) and `branches` (N) select each token's RoPE rows and build
 * each window's mask inside the graph, so per-token data stays O(N).
 * Grouped-query attention never copies K/V per query head: the G = nHeads/nKvHeads query
 * heads that share a KV head are stacked into one (G*T, d) matrix against that head's keys.
 */
export function buildLayerGraph(shape: LayerShape, seqLen: number, options: GraphOptions = DEFAULT_GRAPH_OPTIONS, packed = false): GraphSpec {
  const { dim, nHeads, nKvHeads, headDim: d, normEps, ropeTheta } = shape;
  if (shape.activation === "gelu_tanh_f16") throw new UnsupportedError("llama.cpp's float16 GELU table is computed by the reference backend only");
  const T = seqLen;
  const G = nHeads / nKvHeads;
  const qDim = nHeads * d;
  const g = new GraphBuilder("llama_layer");
  const x = g.input("x", "float", [TOKENS, dim]);
  // Every weight the shape needs is an input named as in LayerWeightsF32.
  const w: Partial<Record<LayerWeightName, string>> = {};
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) w[name] = g.input(name, "float", dims);
  const reshape = (v: string, dims: number[]): string => g.op("Reshape", [v, g.constInt64(dims)]);
  const transpose = (v: string, perm: number[]): string => g.op("Transpose", [v], [attr.ints("perm", perm)]);
  const norm = (v: string, weight: string, bias: string | undefined): string => (shape.layerNorm ? layerNorm(g, v, weight, bias!, normEps) : rmsNorm(g, v, weight, normEps));
  /** x @ w^T (+ b): (N, out). */
  const affine = (v: string, weight: string, b: string | undefined): string => (b ? g.op("Add", [linear(g, v, weight, options.linear), b]) : linear(g, v, weight, options.linear));
  /** (B, T, H, d) heads, RMS-normed over d when the family does (Qwen3), before RoPE. */
  const heads = (v: string, n: number, headNorm: string | undefined): string => {
    const shaped = reshape(v, [-1, T, n, d]);
    return headNorm ? rmsNorm(g, shaped, headNorm, normEps) : shaped;
  };

  // RoPE tables (T, 1, d) for positions 0..T-1 broadcast over heads; packed windows gather each
  // token's row by its own position: (B, T, 1, d). Without RoPE (GPT-2), q is only scaled by 1/sqrt(d).
  // The score scale (Gemma: query_pre_attn_scalar^-0.5) and LongRoPE's factor on q and k ride on the tables.
  let placeQ: (v: string) => string;
  let placeK: (v: string) => string;
  const scoreScale = shape.attnScale ?? 1 / Math.sqrt(d);
  const ropeFactor = shape.ropeAttentionFactor ?? 1;
  const positions = packed && !shape.noRope ? reshape(g.input("positions", "int64", [TOKENS]), [-1, T]) : undefined;
  if (shape.noRope) {
    if (shape.ropeAttentionFactor !== undefined) throw new UnsupportedError("a RoPE attention factor without RoPE is not a layer any family has");
    const scale = g.constFloat([scoreScale], []);
    placeQ = (v) => g.op("Mul", [v, scale]);
    placeK = (v) => v;
  } else {
    const qTables = ropeTables(T, d, ropeTheta, scoreScale * ropeFactor, shape.ropeFreqFactors);
    const kTables = ropeTables(T, d, ropeTheta, ropeFactor, shape.ropeFreqFactors);
    const table = (values: Float32Array): string => {
      const constant = g.constFloat(values, [T, 1, d]);
      return positions ? g.op("Gather", [constant, positions], [attr.int("axis", 0)]) : constant;
    };
    const [cosQ, sinQ, cosK, sinK] = [table(qTables.cos2), table(qTables.sin2), table(kTables.cos2), table(kTables.sin2)];
    placeQ = (v) => rope(g, v, cosQ, sinQ, d);
    placeK = (v) => rope(g, v, cosK, sinK, d);
  }
  // The mask broadcasts over the (B, Hkv, G, T, T) scores: the causal (T, T), or per packed window
  // (B, 1, 1, T, T): causal, and key j visible to query t only if branch[j] is 0 or branch[t].
  // A sliding window hides keys `window` or more positions back: by index in a plain window, by
  // the tokens' own positions in a packed one.
  const window = shape.slidingWindow;
  const causal = g.constFloat(causalMask(T, packed ? undefined : window), [T, T]);
  let mask = causal;
  if (packed) {
    const branches = reshape(g.input("branches", "int64", [TOKENS]), [-1, T]);
    const ofQuery = g.op("Unsqueeze", [branches, g.constInt64([2])]); // (B, T, 1)
    const ofKey = g.op("Unsqueeze", [branches, g.constInt64([1])]); // (B, 1, T)
    let visible = g.op("Or", [g.op("Equal", [ofKey, g.constInt64([0])]), g.op("Equal", [ofKey, ofQuery])]); // (B, T, T)
    if (window !== undefined) {
      if (!positions) throw new UnsupportedError("a sliding window without RoPE positions is not a layer any family has");
      const distance = g.op("Sub", [g.op("Unsqueeze", [positions, g.constInt64([2])]), g.op("Unsqueeze", [positions, g.constInt64([1])])]); // (B, T, T)
      visible = g.op("And", [visible, g.op("Less", [distance, g.constInt64([window])])]);
    }
    mask = reshape(g.op("Where", [visible, causal, g.constFloat([-Infinity], [])]), [-1, 1, 1, T, T]);
  }

  // Attention block. xn: (N, C)
  const xn = norm(x, w.attnNorm!, w.attnNormBias);
  // q: (N, Hq*d) -> (B, T, Hq, d) roped and scaled -> (B, T, Hkv, G, d) -> (B, Hkv, G, T, d) -> (B, Hkv, G*T, d)
  const qPlaced = placeQ(heads(affine(xn, w.wq!, w.bq), nHeads, w.qNorm));
  const q = reshape(transpose(reshape(qPlaced, [-1, T, nKvHeads, G, d]), [0, 2, 3, 1, 4]), [-1, nKvHeads, G * T, d]);
  // k: (N, Hkv*d) -> (B, T, Hkv, d) roped -> kT: (B, Hkv, d, T)
  const kT = transpose(placeK(heads(affine(xn, w.wk!, w.bk), nKvHeads, w.kNorm)), [0, 2, 3, 1]);
  // v: (N, Hkv*d) -> (B, Hkv, T, d)
  const v = transpose(reshape(affine(xn, w.wv!, w.bv), [-1, T, nKvHeads, d]), [0, 2, 1, 3]);
  // scores: (B, Hkv, G*T, T) viewed as (B, Hkv, G, T, T) so the mask broadcasts
  const rawScores = reshape(g.op("MatMul", [q, kT]), [-1, nKvHeads, G, T, T]);
  const scores = shape.attnSoftcap === undefined ? rawScores : softcap(g, rawScores, shape.attnSoftcap);
  const probs = reshape(g.op("Softmax", [g.op("Add", [scores, mask])], [attr.int("axis", -1)]), [-1, nKvHeads, G * T, T]);
  // att: (B, Hkv, G*T, d) -> (B, Hkv, G, T, d) -> (B, T, Hkv, G, d) -> (N, Hq*d), head h = kvHead*G + g
  const att = reshape(transpose(reshape(g.op("MatMul", [probs, v]), [-1, nKvHeads, G, T, d]), [0, 3, 1, 2, 4]), [-1, qDim]);
  // Gemma 2/3's sandwich norms: each block's output is RMS-normed before the residual add.
  const post = (v: string, weight: string | undefined): string => (shape.postNorms ? rmsNorm(g, v, weight!, normEps) : v);
  const h = g.op("Add", [x, post(affine(att, w.wo!, w.bo), w.attnPostNorm)]);

  // MLP block: y = h + down(act(gate(hn)) * up(hn)), or h + down(act(up(hn))) without a gate. (N, F)
  const hn = norm(h, w.ffnNorm!, w.ffnNormBias);
  const up = affine(hn, w.wUp!, w.bUp);
  const act = (v: string): string => (shape.activation === "gelu_tanh" ? geluTanh(g, v) : g.op("Mul", [v, g.op("Sigmoid", [v])]));
  const inner = shape.plainMlp ? act(up) : g.op("Mul", [act(linear(g, hn, w.wGate!, options.linear)), up]);
  const y = g.op("Add", [h, post(affine(inner, w.wDown!, w.bDown), w.ffnPostNorm)]);
  g.output(y, "y", "float", [TOKENS, dim]);
  return g.build();
}

/**
 * One matrix product over a symbolic number of rows: x (N, nIn) @ w^T, w (nOut, nIn) as stored ->
 * y (N, nOut). The recurrent layers' projections run through it (their scans stay on the host).
 */
export function buildLinearGraph(nIn: number, nOut: number, options: GraphOptions = DEFAULT_GRAPH_OPTIONS): GraphSpec {
  const g = new GraphBuilder("linear");
  const x = g.input("x", "float", [ROWS, nIn]);
  const w = g.input("w", "float", [nOut, nIn]);
  g.output(linear(g, x, w, options.linear), "y", "float", [ROWS, nOut]);
  return g.build();
}

export type HeadMode = "logits" | "nll";

/**
 * Final norm and classifier over N rows (logits soft-capped with `logitSoftcap`, Gemma 2). Inputs: x (N, C), finalNorm (C), with `layerNorm` also
 * finalNormBias (C) (LayerNorm instead of RMSNorm), classifier (V, C), and for "nll" targets (N)
 * int64. Outputs: logits (N, V); or logSumExp (N) and targetLogit (N).
 */
export function buildHeadGraph(dim: number, vocabSize: number, normEps: number, mode: HeadMode, options: GraphOptions = DEFAULT_GRAPH_OPTIONS, withLayerNorm = false, logitSoftcap?: number): GraphSpec {
  const g = new GraphBuilder(`llama_head_${mode}`);
  const x = g.input("x", "float", [ROWS, dim]);
  const norm = g.input("finalNorm", "float", [dim]);
  const normed = withLayerNorm ? layerNorm(g, x, norm, g.input("finalNormBias", "float", [dim]), normEps) : rmsNorm(g, x, norm, normEps);
  const classifier = g.input("classifier", "float", [vocabSize, dim]);
  const rawLogits = linear(g, normed, classifier, options.linear);
  const logits = logitSoftcap === undefined ? rawLogits : softcap(g, rawLogits, logitSoftcap);
  if (mode === "logits") {
    g.output(logits, "logits", "float", [ROWS, vocabSize]);
    return g.build();
  }
  const targets = g.input("targets", "int64", [ROWS]);
  const lse = g.op("ReduceLogSumExp", [logits], [attr.ints("axes", [1]), attr.int("keepdims", 0)]);
  // GatherElements wants an index tensor of the data's rank: (N) -> (N, 1) -> gathered (N, 1) -> (N)
  const index = g.op("Unsqueeze", [targets, g.constInt64([1])]);
  const target = g.op("Squeeze", [g.op("GatherElements", [logits, index], [attr.int("axis", 1)]), g.constInt64([1])]);
  g.output(lse, "logSumExp", "float", [ROWS]);
  g.output(target, "targetLogit", "float", [ROWS]);
  return g.build();
}

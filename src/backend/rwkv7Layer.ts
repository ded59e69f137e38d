// One RWKV-7 ("Goose") block as llama.cpp computes its architecture rwkv7 (llm_build_rwkv7, its
// time mixing and channel mixing, ggml_rwkv_wkv7), in float64 on the reference kernels:
// LayerNorm; time mixing (token shift with six fused lerps, the decay, learning-rate, value-
// residual and gate low-rank projections, the generalized delta rule per head, a per-head group
// norm, the current token's bonus, the gate, the output projection); the residual add;
// LayerNorm; channel mixing (token shift, squared ReLU); the residual add. It carries its state,
// so generation continues a sequence token by token. The embedding's LayerNorm (token_embd_norm)
// is not here: it belongs to the embedding, see models/rwkv7.ts. batchedRwkv7Layer is the fast
// twin: every matrix product over every window's tokens at once through a LinearKernel, only the
// scan on the host (in C, native/recurrent_scan.c, or its TypeScript twin here).

import { type LayerShape, type LayerWeightsF32, rwkv7DimsOf, type SideStreams } from "./backend.js";
import type { LinearKernel } from "./linearKernel.js";
import { recurrentNative } from "./recurrentNative.js";
import { layerNormShiftMix, reluSquare, residualAdd } from "./rwkvGlue.js";
import { recycleF32, takeF32 } from "../tensor/hostMemory.js";
import { addInPlace, layerNorm, matmul } from "./reference.js";

/** What an RWKV-7 block remembers of the tokens before. */
export interface Rwkv7State {
  /** (dim): the previous token's attn_norm output, for time mixing's token shift. */
  attShift: Float64Array;
  /** (dim): the previous token's attn_norm_2 output, for channel mixing's token shift. */
  ffnShift: Float64Array;
  /** (heads, headSize, headSize): per head, S[value i][key j]. */
  wkv: Float64Array;
}

export function zeroRwkv7State(dim: number, headSize: number): Rwkv7State {
  return { attShift: new Float64Array(dim), ffnShift: new Float64Array(dim), wkv: new Float64Array(dim * headSize) };
}

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** llama.cpp's decay: w = exp(-0.606531 * sigmoid(w0 + w2 tanh(w1 x))), its constant as it writes it (about exp(-0.5)). */
const DECAY_SCALE = -0.606531;
/** ggml_l2_norm's floor on the norm of the removal key, and the group norm's eps of the WKV output (llama.cpp's constants). */
const L2_NORM_EPS = 1e-12;
const GROUP_NORM_EPS = 64e-5;

/** out (T, dim) = x + (previous token's x - x) * mix, the first token's previous from `previous`. */
function tokenShiftLerp(out: Float64Array, x: Float64Array, previous: Float64Array, mix: Float32Array, mixOffset: number, T: number, dim: number): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < dim; i++) {
      const before = t === 0 ? previous[i]! : x[(t - 1) * dim + i]!;
      const here = x[t * dim + i]!;
      out[t * dim + i] = here + (before - here) * mix[mixOffset + i]!;
    }
  }
}

/** out (T, dim) = w2 @ act(w1 @ x): a low-rank projection through rank. */
function lowRank(out: Float64Array, x: Float64Array, w1: Float32Array, w2: Float32Array, act: (v: number) => number, T: number, dim: number, rank: number): void {
  const mid = new Float64Array(T * rank);
  matmul(mid, x, w1, T, dim, rank);
  for (let i = 0; i < mid.length; i++) mid[i] = act(mid[i]!);
  matmul(out, mid, w2, T, rank, dim);
}

const identity = (v: number): number => v;

/**
 * x: (T, dim) float64, updated in place through one block; the state is advanced. side holds the
 * value residual of these T tokens: a block that finds none sets it (it is the first that runs).
 */
export function referenceRwkv7Layer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: Rwkv7State, side: SideStreams): void {
  const { dim, hiddenDim, normEps } = shape;
  const { headSize, decayRank, iclrRank, valueRank, gateRank } = rwkv7DimsOf(shape);
  const nHeads = dim / headSize;
  const n = T * dim;
  // Time mixing
  const xn = new Float64Array(n);
  layerNorm(xn, x, w.attnNorm, w.attnNormBias!, T, dim, normEps);
  const mixed = Array.from({ length: 6 }, (_, m) => {
    const out = new Float64Array(n);
    tokenShiftLerp(out, xn, state.attShift, w.rwkv7Lerp!, m * dim, T, dim);
    return out;
  });
  const [xr, xw, xk, xv, xa, xg] = mixed as [Float64Array, Float64Array, Float64Array, Float64Array, Float64Array, Float64Array];
  state.attShift.set(xn.subarray((T - 1) * dim, n));
  const r = new Float64Array(n);
  matmul(r, xr, w.rwkvReceptance!, T, dim, dim);
  const decay = new Float64Array(n);
  lowRank(decay, xw, w.rwkv7W1!, w.rwkv7W2!, Math.tanh, T, dim, decayRank);
  for (let i = 0; i < n; i++) decay[i] = Math.exp(DECAY_SCALE * sigmoid(decay[i]! + w.rwkv7W0![i % dim]!));
  const k = new Float64Array(n);
  matmul(k, xk, w.wk, T, dim, dim);
  const v = new Float64Array(n);
  matmul(v, xv, w.wv, T, dim, dim);
  if (side.rwkv7VFirst === undefined) {
    side.rwkv7VFirst = Float64Array.from(v);
  } else {
    // The value residual: v moves towards the first block's v by sigmoid(v0 + v2 v1 x).
    const vFirst = side.rwkv7VFirst;
    const mix = new Float64Array(n);
    lowRank(mix, xv, w.rwkv7V1!, w.rwkv7V2!, identity, T, dim, valueRank);
    for (let i = 0; i < n; i++) v[i]! += (vFirst[i]! - v[i]!) * sigmoid(mix[i]! + w.rwkv7V0![i % dim]!);
  }
  const gate = new Float64Array(n);
  lowRank(gate, xg, w.rwkv7G1!, w.rwkv7G2!, sigmoid, T, dim, gateRank);
  const a = new Float64Array(n);
  lowRank(a, xa, w.rwkv7A1!, w.rwkv7A2!, identity, T, dim, iclrRank);
  for (let i = 0; i < n; i++) a[i] = sigmoid(a[i]! + w.rwkv7A0![i % dim]!);
  // kk: the key to remove from the state, k * k_k normalized per head; k itself is scaled by the learning rate.
  const kk = new Float64Array(n);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const off = t * dim + h * headSize;
      let sum = 0;
      for (let j = 0; j < headSize; j++) sum += (kk[off + j] = k[off + j]! * w.rwkv7KK![h * headSize + j]!) ** 2;
      const scale = 1 / Math.max(Math.sqrt(sum), L2_NORM_EPS);
      for (let j = 0; j < headSize; j++) kk[off + j]! *= scale;
    }
  }
  for (let i = 0; i < n; i++) k[i]! += k[i]! * w.rwkv7KA![i % dim]! * (a[i]! - 1);
  // The generalized delta rule per head: S = S diag(w) + v k^T + (S (-kk)) (kk a)^T; y = S r.
  const y = new Float64Array(n);
  const S = state.wkv;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const off = t * dim + h * headSize;
      for (let i = 0; i < headSize; i++) {
        const row = (h * headSize + i) * headSize;
        let sa = 0;
        for (let j = 0; j < headSize; j++) sa -= kk[off + j]! * S[row + j]!;
        const vi = v[off + i]!;
        let acc = 0;
        for (let j = 0; j < headSize; j++) {
          const s = S[row + j]! * decay[off + j]! + vi * k[off + j]! + sa * kk[off + j]! * a[off + j]!;
          S[row + j] = s;
          acc += s * r[off + j]!;
        }
        y[off + i] = acc;
      }
    }
  }
  // Group norm per head, the bonus (r . (k * r_k)) v of the current token per head, the gate.
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < nHeads; h++) {
      const off = t * dim + h * headSize;
      let mean = 0;
      for (let j = 0; j < headSize; j++) mean += y[off + j]!;
      mean /= headSize;
      let variance = 0;
      for (let j = 0; j < headSize; j++) variance += (y[off + j]! - mean) ** 2;
      const scale = 1 / Math.sqrt(variance / headSize + GROUP_NORM_EPS);
      let bonus = 0;
      for (let j = 0; j < headSize; j++) bonus += r[off + j]! * k[off + j]! * w.rwkv7RK![h * headSize + j]!;
      for (let j = 0; j < headSize; j++) {
        const c = h * headSize + j;
        const normed = (y[off + j]! - mean) * scale * w.rwkv7LnX![c]! + w.rwkv7LnXBias![c]!;
        y[off + j] = (normed + v[off + j]! * bonus) * gate[off + j]!;
      }
    }
  }
  const out = new Float64Array(n);
  matmul(out, y, w.wo, T, dim, dim);
  addInPlace(x, out, n);
  // Channel mixing: wDown @ relu(wUp @ lerp(x))^2.
  layerNorm(xn, x, w.ffnNorm, w.ffnNormBias!, T, dim, normEps);
  tokenShiftLerp(xk, xn, state.ffnShift, w.rwkvFfnMixK!, 0, T, dim);
  state.ffnShift.set(xn.subarray((T - 1) * dim, n));
  const hidden = new Float64Array(T * hiddenDim);
  matmul(hidden, xk, w.wUp, T, dim, hiddenDim);
  for (let i = 0; i < hidden.length; i++) hidden[i] = Math.max(0, hidden[i]!) ** 2;
  matmul(out, hidden, w.wDown, T, hiddenDim, dim);
  addInPlace(x, out, n);
}

/** (N, nOut) = w2 @ act(w1 @ x) over every row: a low-rank projection through rank, both products on `linear`. */
async function batchedLowRank(x: Float32Array, N: number, w1: Float32Array, w2: Float32Array, act: (v: number) => number, dim: number, rank: number, linear: LinearKernel): Promise<Float32Array> {
  const mid = await linear(x, N, w1, rank, dim);
  const activated = new Float32Array(mid.length);
  for (let i = 0; i < mid.length; i++) activated[i] = act(mid[i]!);
  return linear(activated, N, w2, dim, rank);
}

/**
 * x: (nWindows * seqLen, dim) float32, each window from a zero state -> the stream after the block
 * (a new array); side as in referenceRwkv7Layer, over all the rows. The batched twin of
 * referenceRwkv7Layer: the four square matrices, the eight LoRA products and channel mixing's two
 * over every window's tokens at once through a LinearKernel (float32 between them); norms, the
 * delta-rule scan and its state in float64, the scan in C on `threads` threads when the native
 * helper is built.
 */
export async function batchedRwkv7Layer(x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, linear: LinearKernel, side: SideStreams, threads = 1): Promise<Float32Array> {
  const { dim, hiddenDim, normEps } = shape;
  const { headSize, decayRank, iclrRank, valueRank, gateRank } = rwkv7DimsOf(shape);
  const N = nWindows * seqLen;
  const n = N * dim;
  if (side.rwkv7VFirst !== undefined && side.rwkv7VFirst.length !== n) throw new Error(`internal: the value residual has ${side.rwkv7VFirst.length} values for ${n} in the rows`);
  // Time mixing: the six token-shift lerps, then every projection of them. Scratch rows from the
  // pool of finished arrays (fresh memory is slow to touch), each written whole before it is read.
  const mixed = Array.from({ length: 6 }, () => takeF32(n));
  const [xr, xw, xk, xv, xa, xg] = mixed as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];
  const lerps = mixed.map((_, m) => w.rwkv7Lerp!.subarray(m * dim, (m + 1) * dim));
  layerNormShiftMix(mixed, x, undefined, w.attnNorm, w.attnNormBias!, lerps, nWindows, seqLen, dim, normEps, true, threads);
  const r = await linear(xr, N, w.rwkvReceptance!, dim, dim);
  const decayIn = await batchedLowRank(xw, N, w.rwkv7W1!, w.rwkv7W2!, Math.tanh, dim, decayRank, linear);
  const k = await linear(xk, N, w.wk, dim, dim);
  const vRaw = await linear(xv, N, w.wv, dim, dim);
  const native = recurrentNative();
  let v: Float64Array;
  // Later blocks' values live in pooled memory, handed back at the end of the call.
  let vMemory: Float32Array | undefined;
  if (side.rwkv7VFirst === undefined) {
    // The first block: its values are the residual every later block reads (nothing writes them after).
    v = side.rwkv7VFirst = new Float64Array(vRaw);
  } else {
    const mix = await batchedLowRank(xv, N, w.rwkv7V1!, w.rwkv7V2!, identity, dim, valueRank, linear);
    vMemory = takeF32(2 * n);
    v = new Float64Array(vMemory.buffer, vMemory.byteOffset, n);
    if (native) native.rwkv7ValueResidual(v, vRaw, side.rwkv7VFirst, mix, w.rwkv7V0!, threads);
    else valueResidual(v, vRaw, side.rwkv7VFirst, mix, w.rwkv7V0!, dim);
  }
  const gate = await batchedLowRank(xg, N, w.rwkv7G1!, w.rwkv7G2!, sigmoid, dim, gateRank, linear);
  const aIn = await batchedLowRank(xa, N, w.rwkv7A1!, w.rwkv7A2!, identity, dim, iclrRank, linear);
  const y = takeF32(n);
  if (native) {
    native.rwkv7Scan(y, r, decayIn, k, v, aIn, gate, w.rwkv7W0!, w.rwkv7A0!, w.rwkv7KK!, w.rwkv7KA!, w.rwkv7RK!, w.rwkv7LnX!, w.rwkv7LnXBias!, nWindows, seqLen, headSize, threads);
  } else {
    for (let b = 0; b < nWindows; b++) rwkv7Scan(y, b * seqLen, seqLen, { r, decayIn, k, v, aIn, gate }, w, dim, headSize);
  }
  const attOut = await linear(y, N, w.wo, dim, dim);
  // Channel mixing on h = x + attOut: h + wDown @ relu(wUp @ lerp(h))^2.
  layerNormShiftMix([xk], x, attOut, w.ffnNorm, w.ffnNormBias!, [w.rwkvFfnMixK!], nWindows, seqLen, dim, normEps, true, threads);
  const hidden = await linear(xk, N, w.wUp, hiddenDim, dim);
  reluSquare(hidden, threads);
  const ffnOut = await linear(hidden, N, w.wDown, dim, hiddenDim);
  const next = new Float32Array(n);
  residualAdd(next, x, attOut, undefined, ffnOut, threads);
  recycleF32([...mixed, y, vMemory]);
  return next;
}

/** v (N, dim) = vRaw + (vFirst - vRaw) * sigmoid(mix + v0): the values move towards the first block's. */
function valueResidual(v: Float64Array, vRaw: Float32Array, vFirst: Float64Array, mix: Float32Array, v0: Float32Array, dim: number): void {
  for (let off = 0; off < v.length; off += dim) {
    for (let j = 0; j < dim; j++) {
      const i = off + j;
      v[i] = vRaw[i]! + (vFirst[i]! - vRaw[i]!) * sigmoid(mix[i]! + v0[j]!);
    }
  }
}

/** The projections of every row that the scan reads, (N, dim) each: decayIn and aIn before their activations. */
interface Rwkv7Projections {
  r: Float32Array;
  decayIn: Float32Array;
  k: Float32Array;
  v: Float64Array;
  aIn: Float32Array;
  gate: Float32Array;
}

/**
 * One window from the zero state, rows first..first+seqLen-1 (see referenceRwkv7Layer): the
 * decay, learning rate and removal key of each token, the delta-rule scan per head, the group
 * norm, the current token's bonus and the gate -> y (N, dim), before the output projection.
 */
function rwkv7Scan(y: Float32Array, first: number, seqLen: number, p: Rwkv7Projections, w: LayerWeightsF32, dim: number, headSize: number): void {
  const nHeads = dim / headSize;
  const S = new Float64Array(dim * headSize);
  // One head's values of one token, indexed 0..headSize-1 so the inner loops read plain local arrays.
  const decay = new Float64Array(headSize);
  const k = new Float64Array(headSize);
  const kk = new Float64Array(headSize);
  const kka = new Float64Array(headSize);
  const r = new Float64Array(headSize);
  const out = new Float64Array(headSize);
  const [w0, a0, kkScale, ka, rk, lnX, lnXBias] = [w.rwkv7W0!, w.rwkv7A0!, w.rwkv7KK!, w.rwkv7KA!, w.rwkv7RK!, w.rwkv7LnX!, w.rwkv7LnXBias!];
  const { decayIn, aIn, k: kIn, v, r: rIn, gate } = p;
  for (let row = first; row < first + seqLen; row++) {
    for (let h = 0; h < nHeads; h++) {
      const c0 = h * headSize;
      const off = row * dim + c0;
      let sum = 0;
      for (let j = 0; j < headSize; j++) {
        const c = c0 + j;
        decay[j] = Math.exp(DECAY_SCALE * sigmoid(decayIn[off + j]! + w0[c]!));
        r[j] = rIn[off + j]!;
        sum += (kk[j] = kIn[off + j]! * kkScale[c]!) ** 2;
      }
      const scale = 1 / Math.max(Math.sqrt(sum), L2_NORM_EPS);
      for (let j = 0; j < headSize; j++) {
        const a = sigmoid(aIn[off + j]! + a0[c0 + j]!);
        const key = kIn[off + j]!;
        kk[j]! *= scale;
        k[j] = key + key * ka[c0 + j]! * (a - 1);
        kka[j] = kk[j]! * a;
      }
      // S = S diag(w) + v k^T + (S (-kk)) (kk a)^T; out = S r.
      for (let i = 0; i < headSize; i++) {
        const base = (c0 + i) * headSize;
        let sa = 0;
        for (let j = 0; j < headSize; j++) sa -= kk[j]! * S[base + j]!;
        const vi = v[off + i]!;
        let acc = 0;
        for (let j = 0; j < headSize; j++) {
          const s = S[base + j]! * decay[j]! + vi * k[j]! + sa * kka[j]!;
          S[base + j] = s;
          acc += s * r[j]!;
        }
        out[i] = acc;
      }
      // Group norm per head, the bonus (r . (k * r_k)) v, the gate.
      let mean = 0;
      for (let j = 0; j < headSize; j++) mean += out[j]!;
      mean /= headSize;
      let variance = 0;
      for (let j = 0; j < headSize; j++) variance += (out[j]! - mean) ** 2;
      const norm = 1 / Math.sqrt(variance / headSize + GROUP_NORM_EPS);
      let bonus = 0;
      for (let j = 0; j < headSize; j++) bonus += r[j]! * k[j]! * rk[c0 + j]!;
      for (let j = 0; j < headSize; j++) {
        const normed = (out[j]! - mean) * norm * lnX[c0 + j]! + lnXBias[c0 + j]!;
        y[off + j] = (normed + v[off + j]! * bonus) * gate[off + j]!;
      }
    }
  }
}

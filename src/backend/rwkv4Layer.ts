// One RWKV-4 block (transformers' RwkvBlock, the CPU WKV path) on the reference kernels: LayerNorm,
// time mixing (token shift, key/value/receptance, the WKV recurrence with its running maximum),
// the residual add; LayerNorm, channel mixing (token shift, squared ReLU, receptance gate), the
// residual add. It carries its state, so generation continues a sequence token by token. The
// first block's pre_ln is not here: it belongs to the embedding (the stream entering block 0 is
// after it), see models/rwkv.ts. batchedRwkv4Layer is the fast twin: the seven matrices over every
// window's tokens at once through a LinearKernel, only the WKV recurrence on the host (in C,
// native/recurrent_scan.c, or its TypeScript twin here).

import { type LayerShape, type LayerWeightsF32, rwkvAttDimOf } from "./backend.js";
import type { LinearKernel } from "./linearKernel.js";
import { recycleF32, takeF32 } from "../tensor/hostMemory.js";
import { recurrentNative } from "./recurrentNative.js";
import { layerNormShiftMix, reluSquare, residualAdd } from "./rwkvGlue.js";
import { addInPlace, layerNorm, matmul } from "./reference.js";

/** What an RWKV-4 block remembers of the tokens before. */
export interface Rwkv4State {
  /** (dim): the previous token's ln1 output, for time mixing's token shift. */
  attShift: Float64Array;
  /** (dim): the previous token's ln2 output, for channel mixing's token shift. */
  ffnShift: Float64Array;
  /** (attDim) each: the WKV numerator, denominator and their common exponent (the running maximum). */
  num: Float64Array;
  den: Float64Array;
  max: Float64Array;
}

/** The state a sequence starts from: zero shifts and sums, the maximum at transformers' -1e38. */
export function zeroRwkv4State(dim: number, attDim: number): Rwkv4State {
  return { attShift: new Float64Array(dim), ffnShift: new Float64Array(dim), num: new Float64Array(attDim), den: new Float64Array(attDim), max: new Float64Array(attDim).fill(-1e38) };
}

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** out (T, dim) = x * mix + shifted(x) * (1 - mix), shifted by one token, the first from `previous`. */
function tokenShiftMix(out: Float64Array, x: Float64Array, previous: Float64Array, mix: Float32Array, T: number, dim: number): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < dim; i++) {
      const before = t === 0 ? previous[i]! : x[(t - 1) * dim + i]!;
      out[t * dim + i] = x[t * dim + i]! * mix[i]! + before * (1 - mix[i]!);
    }
  }
}

/** x: (T, dim) float64, updated in place through one block; the state is advanced. */
export function referenceRwkv4Layer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: Rwkv4State): void {
  const { dim, hiddenDim, normEps } = shape;
  const att = rwkvAttDimOf(shape);
  const xn = new Float64Array(T * dim);
  const mixed = new Float64Array(T * dim);
  // Time mixing
  layerNorm(xn, x, w.attnNorm, w.attnNormBias!, T, dim, normEps);
  const k = new Float64Array(T * att);
  const v = new Float64Array(T * att);
  const r = new Float64Array(T * att);
  tokenShiftMix(mixed, xn, state.attShift, w.rwkvMixK!, T, dim);
  matmul(k, mixed, w.wk, T, dim, att);
  tokenShiftMix(mixed, xn, state.attShift, w.rwkvMixV!, T, dim);
  matmul(v, mixed, w.wv, T, dim, att);
  tokenShiftMix(mixed, xn, state.attShift, w.rwkvMixR!, T, dim);
  matmul(r, mixed, w.rwkvReceptance!, T, dim, att);
  state.attShift.set(xn.subarray((T - 1) * dim, T * dim));
  // WKV: a softmax-weighted average of past values with exponential decay, kept stable by
  // carrying the sums scaled by exp(-max).
  const wkv = new Float64Array(T * att);
  for (let c = 0; c < att; c++) {
    const decay = -Math.exp(w.rwkvTimeDecay![c]!);
    const first = w.rwkvTimeFirst![c]!;
    let num = state.num[c]!;
    let den = state.den[c]!;
    let max = state.max[c]!;
    for (let t = 0; t < T; t++) {
      const key = k[t * att + c]!;
      const value = v[t * att + c]!;
      const outMax = Math.max(max, key + first);
      const a = Math.exp(max - outMax);
      const b = Math.exp(key + first - outMax);
      wkv[t * att + c] = sigmoid(r[t * att + c]!) * ((a * num + b * value) / (a * den + b));
      const stateMax = Math.max(max + decay, key);
      const e1 = Math.exp(max + decay - stateMax);
      const e2 = Math.exp(key - stateMax);
      num = e1 * num + e2 * value;
      den = e1 * den + e2;
      max = stateMax;
    }
    state.num[c] = num;
    state.den[c] = den;
    state.max[c] = max;
  }
  const out = new Float64Array(T * dim);
  matmul(out, wkv, w.wo, T, att, dim);
  addInPlace(x, out, T * dim);
  // Channel mixing
  layerNorm(xn, x, w.ffnNorm, w.ffnNormBias!, T, dim, normEps);
  const hidden = new Float64Array(T * hiddenDim);
  tokenShiftMix(mixed, xn, state.ffnShift, w.rwkvFfnMixK!, T, dim);
  matmul(hidden, mixed, w.wUp, T, dim, hiddenDim);
  for (let i = 0; i < hidden.length; i++) hidden[i] = Math.max(0, hidden[i]!) ** 2;
  const gate = new Float64Array(T * dim);
  tokenShiftMix(mixed, xn, state.ffnShift, w.rwkvFfnMixR!, T, dim);
  matmul(gate, mixed, w.rwkvFfnReceptance!, T, dim, dim);
  state.ffnShift.set(xn.subarray((T - 1) * dim, T * dim));
  matmul(out, hidden, w.wDown, T, hiddenDim, dim);
  for (let i = 0; i < T * dim; i++) x[i]! += sigmoid(gate[i]!) * out[i]!;
}

/**
 * x: (nWindows * seqLen, dim) float32, each window from a zero state -> the stream after the block
 * (a new array). Activations between the matrices are float32; norms and the WKV recurrence run
 * in float64, in C on `threads` threads when the native helper is built (rwkvGlue.ts, recurrentNative.ts).
 */
export async function batchedRwkv4Layer(x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, linear: LinearKernel, threads = 1): Promise<Float32Array> {
  const { dim, hiddenDim, normEps } = shape;
  const att = rwkvAttDimOf(shape);
  const N = nWindows * seqLen;
  // Scratch rows written whole before they are read, from the pool of finished arrays (fresh memory is slow to touch).
  const [mixK, mixV, mixR, wkv] = [takeF32(N * dim), takeF32(N * dim), takeF32(N * dim), takeF32(N * att)];
  // Time mixing
  layerNormShiftMix([mixK, mixV, mixR], x, undefined, w.attnNorm, w.attnNormBias!, [w.rwkvMixK!, w.rwkvMixV!, w.rwkvMixR!], nWindows, seqLen, dim, normEps, false, threads);
  const k = await linear(mixK, N, w.wk, att, dim);
  const v = await linear(mixV, N, w.wv, att, dim);
  const r = await linear(mixR, N, w.rwkvReceptance!, att, dim);
  const native = recurrentNative();
  if (native) native.rwkv4Wkv(wkv, k, v, r, w.rwkvTimeDecay!, w.rwkvTimeFirst!, nWindows, seqLen, threads);
  else for (let b = 0; b < nWindows; b++) wkvScan(wkv, b * seqLen, seqLen, k, v, r, w.rwkvTimeDecay!, w.rwkvTimeFirst!, att);
  const attOut = await linear(wkv, N, w.wo, dim, att);
  // Channel mixing on h = x + attOut: h + sigmoid(receptance) * value(relu(key)^2)
  layerNormShiftMix([mixK, mixR], x, attOut, w.ffnNorm, w.ffnNormBias!, [w.rwkvFfnMixK!, w.rwkvFfnMixR!], nWindows, seqLen, dim, normEps, false, threads);
  const hidden = await linear(mixK, N, w.wUp, hiddenDim, dim);
  reluSquare(hidden, threads);
  const gate = await linear(mixR, N, w.rwkvFfnReceptance!, dim, dim);
  const ffnOut = await linear(hidden, N, w.wDown, dim, hiddenDim);
  const next = new Float32Array(N * dim);
  residualAdd(next, x, attOut, gate, ffnOut, threads);
  recycleF32([mixK, mixV, mixR, wkv]);
  return next;
}

/**
 * The WKV recurrence of one window from the zero state (see referenceRwkv4Layer), gated by
 * sigmoid(r): rows first..first+seqLen-1 of k, v, r and wkv, all (N, att).
 */
function wkvScan(wkv: Float32Array, first: number, seqLen: number, k: Float32Array, v: Float32Array, r: Float32Array, timeDecay: Float32Array, timeFirst: Float32Array, att: number): void {
  for (let c = 0; c < att; c++) {
    const decay = -Math.exp(timeDecay[c]!);
    const bonus = timeFirst[c]!;
    let num = 0;
    let den = 0;
    let max = -1e38;
    for (let row = first; row < first + seqLen; row++) {
      const i = row * att + c;
      const key = k[i]!;
      const value = v[i]!;
      const outMax = Math.max(max, key + bonus);
      const a = Math.exp(max - outMax);
      const e = Math.exp(key + bonus - outMax);
      wkv[i] = sigmoid(r[i]!) * ((a * num + e * value) / (a * den + e));
      const stateMax = Math.max(max + decay, key);
      const e1 = Math.exp(max + decay - stateMax);
      const e2 = Math.exp(key - stateMax);
      num = e1 * num + e2 * value;
      den = e1 * den + e2;
      max = stateMax;
    }
  }
}

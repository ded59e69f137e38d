// One RWKV-6 ("Finch") block as llama.cpp's rwkv6 graph computes it, on the reference kernels:
// LayerNorm, time mixing (token shift with a data-dependent lerp per branch, data-dependent decay,
// the WKV6 recurrence over a (headSize, headSize) state per head, a group norm per head, the silu
// gate), the residual add; LayerNorm, channel mixing (lerp token shift, squared ReLU, receptance
// gate), the residual add (rescale_every_n_layers is undone in the weights: models/rwkv6.ts). It carries
// its state, so generation continues a sequence token by token. The LayerNorm on the embedding
// (token_embd_norm) is not here: it belongs to the embedding, see models/rwkv6.ts.

import { type LayerShape, type LayerWeightsF32, rwkv6DimsOf } from "./backend.js";
import { activate, addInPlace, layerNorm, matmul } from "./reference.js";

/** llama.cpp's fixed epsilon of the per-head group norm of the WKV output. */
const GROUP_NORM_EPS = 64e-5;

/** What an RWKV-6 block remembers of the tokens before. */
export interface Rwkv6State {
  /** (dim): the previous token's attn_norm output, for time mixing's token shift. */
  attShift: Float64Array;
  /** (dim): the previous token's attn_norm_2 output, for channel mixing's token shift. */
  ffnShift: Float64Array;
  /** (nHeads, headSize, headSize): per head, S[i][j] over key index i and value index j. */
  wkv: Float64Array;
}

/** The state a sequence starts from: all zero (llama.cpp's cleared recurrent cache). */
export function zeroRwkv6State(dim: number, headSize: number): Rwkv6State {
  return { attShift: new Float64Array(dim), ffnShift: new Float64Array(dim), wkv: new Float64Array(dim * headSize) };
}

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/** shifted (T, dim) = the previous token's row of xn: the first from `previous`, then xn shifted by one. */
function shiftedRows(shifted: Float64Array, xn: Float64Array, previous: Float64Array, T: number, dim: number): void {
  shifted.set(previous, 0);
  shifted.set(xn.subarray(0, (T - 1) * dim), dim);
}

/** out (T, dim) = x + (shifted - x) * (lerp + extra), extra (T, dim) optional; lerp (dim). */
function lerpRows(out: Float64Array, x: Float64Array, shifted: Float64Array, lerp: Float32Array, T: number, dim: number, extra?: Float64Array): void {
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < dim; i++) {
      const at = t * dim + i;
      out[at] = x[at]! + (shifted[at]! - x[at]!) * (lerp[i]! + (extra ? extra[at]! : 0));
    }
  }
}

/** x: (T, dim) float64, updated in place through one block; the state is advanced. */
export function referenceRwkv6Layer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: Rwkv6State): void {
  const { dim, hiddenDim, normEps } = shape;
  const { headSize, mixExtraDim, decayExtraDim } = rwkv6DimsOf(shape);
  const nHeads = dim / headSize;
  const xn = new Float64Array(T * dim);
  const shifted = new Float64Array(T * dim);
  const mixed = new Float64Array(T * dim);

  // Time mixing: the token-shift LoRA gives each branch (w, k, v, r, g) its own lerp per token.
  layerNorm(xn, x, w.attnNorm, w.attnNormBias!, T, dim, normEps);
  shiftedRows(shifted, xn, state.attShift, T, dim);
  state.attShift.set(xn.subarray((T - 1) * dim, T * dim));
  lerpRows(mixed, xn, shifted, w.rwkv6LerpX!, T, dim);
  const lora = new Float64Array(T * 5 * mixExtraDim);
  matmul(lora, mixed, w.rwkv6MixW1!, T, dim, 5 * mixExtraDim);
  for (let i = 0; i < lora.length; i++) lora[i] = Math.tanh(lora[i]!);
  const branchIn = new Float64Array(T * mixExtraDim);
  const branchExtra = new Float64Array(T * dim);
  const branches: Float64Array[] = [];
  for (let b = 0; b < 5; b++) {
    for (let t = 0; t < T; t++) branchIn.set(lora.subarray(t * 5 * mixExtraDim + b * mixExtraDim, t * 5 * mixExtraDim + (b + 1) * mixExtraDim), t * mixExtraDim);
    matmul(branchExtra, branchIn, w.rwkv6MixW2!.subarray(b * dim * mixExtraDim, (b + 1) * dim * mixExtraDim), T, mixExtraDim, dim);
    const out = new Float64Array(T * dim);
    lerpRows(out, xn, shifted, w.rwkv6LerpFused!.subarray(b * dim, (b + 1) * dim), T, dim, branchExtra);
    branches.push(out);
  }
  const [xw, xk, xv, xr, xg] = branches as [Float64Array, Float64Array, Float64Array, Float64Array, Float64Array];
  const r = new Float64Array(T * dim);
  const k = new Float64Array(T * dim);
  const v = new Float64Array(T * dim);
  const g = new Float64Array(T * dim);
  matmul(r, xr, w.rwkvReceptance!, T, dim, dim);
  matmul(k, xk, w.wk, T, dim, dim);
  matmul(v, xv, w.wv, T, dim, dim);
  matmul(g, xg, w.rwkv6Gate!, T, dim, dim);
  activate(g, T * dim, "silu");
  // The decay per token and channel: exp(-exp(time_decay + LoRA(xw))), in (0, 1).
  const decayHidden = new Float64Array(T * decayExtraDim);
  matmul(decayHidden, xw, w.rwkv6DecayW1!, T, dim, decayExtraDim);
  for (let i = 0; i < decayHidden.length; i++) decayHidden[i] = Math.tanh(decayHidden[i]!);
  const decay = new Float64Array(T * dim);
  matmul(decay, decayHidden, w.rwkv6DecayW2!, T, decayExtraDim, dim);
  for (let t = 0; t < T; t++) for (let i = 0; i < dim; i++) decay[t * dim + i] = Math.exp(-Math.exp(decay[t * dim + i]! + w.rwkvTimeDecay![i]!));

  // WKV6 per head: out_j = sum_i r_i (u_i k_i v_j + S_ij), then S_ij = S_ij w_i + k_i v_j.
  const wkv = new Float64Array(T * dim);
  const u = w.rwkvTimeFirst!;
  for (let h = 0; h < nHeads; h++) {
    const S = state.wkv.subarray(h * headSize * headSize, (h + 1) * headSize * headSize);
    for (let t = 0; t < T; t++) {
      const base = t * dim + h * headSize;
      for (let i = 0; i < headSize; i++) {
        const ki = k[base + i]!;
        const ri = r[base + i]!;
        const ui = u[h * headSize + i]!;
        const wi = decay[base + i]!;
        for (let j = 0; j < headSize; j++) {
          const kv = ki * v[base + j]!;
          const s = S[i * headSize + j]!;
          wkv[base + j]! += ri * (ui * kv + s);
          S[i * headSize + j] = s * wi + kv;
        }
      }
    }
  }
  // Group norm, one group per head (no affine of its own), then ln_x's weight and bias over dim; the gate.
  for (let row = 0; row < T * nHeads; row++) {
    const off = row * headSize;
    let mean = 0;
    for (let i = 0; i < headSize; i++) mean += wkv[off + i]!;
    mean /= headSize;
    let variance = 0;
    for (let i = 0; i < headSize; i++) variance += (wkv[off + i]! - mean) ** 2;
    const scale = 1 / Math.sqrt(variance / headSize + GROUP_NORM_EPS);
    for (let i = 0; i < headSize; i++) {
      const c = (off + i) % dim;
      wkv[off + i] = ((wkv[off + i]! - mean) * scale * w.rwkv6LnX![c]! + w.rwkv6LnXBias![c]!) * g[off + i]!;
    }
  }
  const out = new Float64Array(T * dim);
  matmul(out, wkv, w.wo, T, dim, dim);
  addInPlace(x, out, T * dim);

  // Channel mixing
  layerNorm(xn, x, w.ffnNorm, w.ffnNormBias!, T, dim, normEps);
  shiftedRows(shifted, xn, state.ffnShift, T, dim);
  state.ffnShift.set(xn.subarray((T - 1) * dim, T * dim));
  const hidden = new Float64Array(T * hiddenDim);
  lerpRows(mixed, xn, shifted, w.rwkv6FfnLerpK!, T, dim);
  matmul(hidden, mixed, w.wUp, T, dim, hiddenDim);
  for (let i = 0; i < hidden.length; i++) hidden[i] = Math.max(0, hidden[i]!) ** 2;
  const gate = new Float64Array(T * dim);
  lerpRows(mixed, xn, shifted, w.rwkv6FfnLerpR!, T, dim);
  matmul(gate, mixed, w.rwkvFfnReceptance!, T, dim, dim);
  matmul(out, hidden, w.wDown, T, hiddenDim, dim);
  for (let i = 0; i < T * dim; i++) x[i] = x[i]! + sigmoid(gate[i]!) * out[i]!;
}

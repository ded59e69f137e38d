// One Mamba block (transformers' MambaBlock with the MambaMixer slow path) on the reference
// kernels: RMSNorm, in_proj, a depthwise causal conv, the selective scan, the gate, out_proj and
// the residual add. It carries its recurrent state, so generation continues a sequence token by
// token and a window starts from a zero state. batchedMambaLayer is the fast twin: the four
// projections over every window's tokens at once through a LinearKernel, only the conv and the
// scan on the host (in C, native/recurrent_scan.c, or their TypeScript twins here).

import { type LayerShape, type LayerWeightsF32, mambaDimsOf, type MambaDims } from "./backend.js";
import type { LinearKernel } from "./linearKernel.js";
import { recurrentNative } from "./recurrentNative.js";
import { recycleF32, takeF32 } from "../tensor/hostMemory.js";
import { addInPlace, matmul, rmsNorm } from "./reference.js";

/** What a Mamba layer remembers of the tokens before: the conv's last inputs and the scan's state. */
export interface MambaState {
  /** (convKernel - 1, dInner): the conv inputs of the previous positions, oldest first. */
  conv: Float64Array;
  /** (dInner, dState). */
  ssm: Float64Array;
}

/** The zero state a sequence starts from. */
export function zeroMambaState(m: MambaDims): MambaState {
  return { conv: new Float64Array((m.convKernel - 1) * m.dInner), ssm: new Float64Array(m.dInner * m.dState) };
}

const silu = (v: number): number => v / (1 + Math.exp(-v));
// torch's softplus (beta 1, threshold 20): linear above the threshold.
const softplus = (v: number): number => (v > 20 ? v : Math.log1p(Math.exp(v)));

/**
 * x: (T, dim) float64, updated in place: x += out_proj(scan(x) * silu(gate)). The tokens continue
 * the sequence the state holds (a fresh zeroMambaState for a new window); the state is advanced.
 */
export function referenceMambaLayer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: MambaState): void {
  const { dim, normEps } = shape;
  const m = mambaDimsOf(shape);
  const { dInner, dState, dtRank, convKernel } = m;
  const nParams = dtRank + 2 * dState;
  const xn = new Float64Array(T * dim);
  rmsNorm(xn, x, w.attnNorm, T, dim, normEps);
  const projected = new Float64Array(T * 2 * dInner);
  matmul(projected, xn, w.mambaInProj!, T, dim, 2 * dInner);
  // Depthwise causal conv over the stream half, the earlier positions' inputs from the state.
  const u = new Float64Array(T * dInner);
  const past = convKernel - 1;
  const input = (t: number, c: number): number => (t >= 0 ? projected[t * 2 * dInner + c]! : state.conv[(past + t) * dInner + c]!);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < dInner; c++) {
      let acc = w.mambaConvBias ? w.mambaConvBias[c]! : 0;
      for (let j = 0; j < convKernel; j++) acc += w.mambaConv![c * convKernel + j]! * input(t - past + j, c);
      u[t * dInner + c] = silu(acc);
    }
  }
  const tail = new Float64Array(past * dInner);
  for (let p = 0; p < past; p++) for (let c = 0; c < dInner; c++) tail[p * dInner + c] = input(T - past + p, c);
  state.conv.set(tail);
  // dt, B, C per position; dt through dt_proj, its bias and softplus.
  const params = new Float64Array(T * nParams);
  matmul(params, u, w.mambaXProj!, T, dInner, nParams);
  const dtLow = new Float64Array(T * dtRank);
  for (let t = 0; t < T; t++) for (let r = 0; r < dtRank; r++) dtLow[t * dtRank + r] = params[t * nParams + r]!;
  const dt = new Float64Array(T * dInner);
  matmul(dt, dtLow, w.mambaDtProj!, T, dtRank, dInner);
  for (let t = 0; t < T; t++) for (let c = 0; c < dInner; c++) dt[t * dInner + c] = softplus(dt[t * dInner + c]! + w.mambaDtBias![c]!);
  // The selective scan: h = exp(A dt) h + dt B u; y = C h + D u, gated by silu(z).
  const y = new Float64Array(T * dInner);
  const h = state.ssm;
  for (let t = 0; t < T; t++) {
    const B = t * nParams + dtRank;
    const C = B + dState;
    for (let c = 0; c < dInner; c++) {
      const d = dt[t * dInner + c]!;
      const uc = u[t * dInner + c]!;
      let acc = 0;
      for (let s = 0; s < dState; s++) {
        const a = -Math.exp(w.mambaALog![c * dState + s]!);
        const k = c * dState + s;
        h[k] = Math.exp(a * d) * h[k]! + d * params[B + s]! * uc;
        acc += h[k]! * params[C + s]!;
      }
      y[t * dInner + c] = (acc + w.mambaD![c]! * uc) * silu(projected[t * 2 * dInner + dInner + c]!);
    }
  }
  const out = new Float64Array(T * dim);
  matmul(out, y, w.mambaOutProj!, T, dInner, dim);
  addInPlace(x, out, T * dim);
}

/**
 * x: (nWindows * seqLen, dim) float32, each window from a zero state -> the stream after the block
 * (a new array). Activations between the projections are float32 (what the GEMMs take); the conv,
 * the scan and its state run in float64, in C on `threads` threads when the native helper is
 * built, else in TypeScript (JS numbers, the state in a Float64Array).
 */
export async function batchedMambaLayer(x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, linear: LinearKernel, threads = 1): Promise<Float32Array> {
  const native = recurrentNative();
  const { dim, normEps } = shape;
  const { dInner, dState, dtRank, convKernel } = mambaDimsOf(shape);
  const nParams = dtRank + 2 * dState;
  const N = nWindows * seqLen;
  // Scratch rows written whole before they are read, from the pool of finished arrays (fresh memory is slow to touch).
  const [normed, u, y] = [takeF32(N * dim), takeF32(N * dInner), takeF32(N * dInner)];
  if (native) native.rmsNorm(normed, x, w.attnNorm, normEps, threads);
  else {
    const wide = new Float64Array(x);
    rmsNorm(wide, wide, w.attnNorm, N, dim, normEps);
    normed.set(wide);
  }
  // projected: (N, 2 * dInner), the stream then the gate per token.
  const projected = await linear(normed, N, w.mambaInProj!, 2 * dInner, dim);
  if (native) native.mambaConvSilu(u, projected, w.mambaConv!, w.mambaConvBias ?? null, nWindows, seqLen, convKernel, threads);
  else causalConvSilu(u, projected, nWindows, seqLen, dInner, w.mambaConv!, w.mambaConvBias, convKernel);
  // params: (N, dtRank + 2 * dState) = dt (low rank), B, C per token; dtRaw: (N, dInner) before its bias and softplus.
  const params = await linear(u, N, w.mambaXProj!, nParams, dInner);
  const dtLow = new Float32Array(N * dtRank);
  for (let row = 0; row < N; row++) dtLow.set(params.subarray(row * nParams, row * nParams + dtRank), row * dtRank);
  const dtRaw = await linear(dtLow, N, w.mambaDtProj!, dInner, dtRank);
  if (native) {
    native.mambaScan(y, u, projected, params, dtRaw, w.mambaALog!, w.mambaDtBias!, w.mambaD!, nWindows, seqLen, dState, dtRank, threads);
  } else {
    const A = Float64Array.from(w.mambaALog!, (v) => -Math.exp(v));
    const h = new Float64Array(dInner * dState);
    for (let b = 0; b < nWindows; b++) {
      h.fill(0);
      selectiveScan(y, h, b * seqLen, seqLen, u, projected, params, dtRaw, A, w.mambaDtBias!, w.mambaD!, dInner, dState, dtRank);
    }
  }
  const out = await linear(y, N, w.mambaOutProj!, dim, dInner);
  const next = new Float32Array(N * dim);
  for (let i = 0; i < next.length; i++) next[i] = x[i]! + out[i]!;
  recycleF32([normed, u, y]);
  return next;
}

/**
 * The depthwise causal conv over the stream half of `projected` (N, 2 * dInner), each window
 * starting from zero inputs, then silu. u: (N, dInner); conv: (dInner, convKernel).
 */
function causalConvSilu(u: Float32Array, projected: Float32Array, nWindows: number, seqLen: number, dInner: number, conv: Float32Array, bias: Float32Array | undefined, convKernel: number): void {
  const past = convKernel - 1;
  const stride = 2 * dInner;
  for (let b = 0; b < nWindows; b++) {
    for (let t = 0; t < seqLen; t++) {
      const row = b * seqLen + t;
      // Taps before the window's first token read zeros (a fresh state): start at the first inside.
      const firstTap = Math.max(0, past - t);
      for (let c = 0; c < dInner; c++) {
        let acc = bias ? bias[c]! : 0;
        for (let j = firstTap; j < convKernel; j++) acc += conv[c * convKernel + j]! * projected[(row - past + j) * stride + c]!;
        u[row * dInner + c] = silu(acc);
      }
    }
  }
}

/**
 * One window's selective scan from the state h (dInner, dState), advanced in place:
 * h = exp(A dt) h + dt B u; y = (C h + D u) * silu(gate), dt = softplus(dtRaw + dtBias).
 * Rows first..first+seqLen-1 of u, dtRaw, y: (N, dInner); params: (N, dtRank + 2 dState); projected's gate half.
 */
function selectiveScan(
  y: Float32Array, h: Float64Array, first: number, seqLen: number, u: Float32Array, projected: Float32Array, params: Float32Array, dtRaw: Float32Array,
  A: Float64Array, dtBias: Float32Array, D: Float32Array, dInner: number, dState: number, dtRank: number,
): void {
  const nParams = dtRank + 2 * dState;
  for (let row = first; row < first + seqLen; row++) {
    const B = row * nParams + dtRank;
    const C = B + dState;
    const gate = row * 2 * dInner + dInner;
    for (let c = 0; c < dInner; c++) {
      const d = softplus(dtRaw[row * dInner + c]! + dtBias[c]!);
      const uc = u[row * dInner + c]!;
      const du = d * uc;
      const k = c * dState;
      let acc = 0;
      for (let s = 0; s < dState; s++) {
        const hv = Math.exp(A[k + s]! * d) * h[k + s]! + du * params[B + s]!;
        h[k + s] = hv;
        acc += hv * params[C + s]!;
      }
      y[row * dInner + c] = (acc + D[c]! * uc) * silu(projected[gate + c]!);
    }
  }
}

// One Mamba-2 block (transformers' Mamba2Block with the Mamba2Mixer slow path, llama.cpp's
// mamba2) on the reference kernels: RMSNorm, in_proj into z | x B C | dt, a depthwise causal conv
// over x B C with SiLU, the multi-head scan (a scalar decay per head, B and C per group of heads),
// the D skip, the gated RMSNorm norm(y * silu(z)), out_proj and the residual add. The scan runs
// position by position (transformers' chunked form computes the same sums), carrying its state.

import { type LayerShape, type LayerWeightsF32, mamba2ConvDim, mamba2DimsOf, type Mamba2Dims } from "./backend.js";
import { addInPlace, matmul, rmsNorm } from "./reference.js";

/** What a Mamba-2 layer remembers of the tokens before: the conv's last inputs and every head's state. */
export interface Mamba2State {
  /** (convKernel - 1, convDim): the conv inputs of the previous positions, oldest first. */
  conv: Float64Array;
  /** (nHeads, headDim, dState). */
  ssm: Float64Array;
}

/** The zero state a sequence starts from. */
export function zeroMamba2State(m: Mamba2Dims): Mamba2State {
  return { conv: new Float64Array((m.convKernel - 1) * mamba2ConvDim(m)), ssm: new Float64Array(m.nHeads * m.headDim * m.dState) };
}

const silu = (v: number): number => v / (1 + Math.exp(-v));
// torch's softplus (beta 1, threshold 20) and ggml's ssm_scan: linear above 20.
const softplus = (v: number): number => (v > 20 ? v : Math.log1p(Math.exp(v)));

/**
 * x: (T, dim) float64, updated in place: x += out_proj(gatedNorm(scan(conv(xBC)), z)). The tokens
 * continue the sequence the state holds (a fresh zeroMamba2State for a new window); the state is advanced.
 */
export function referenceMamba2Layer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: Mamba2State): void {
  const { dim, normEps } = shape;
  const m = mamba2DimsOf(shape);
  const { dInner, dState, nHeads, headDim, nGroups, convKernel, normGroupSize } = m;
  const convDim = mamba2ConvDim(m);
  const nProj = dInner + convDim + nHeads;
  const xn = new Float64Array(T * dim);
  rmsNorm(xn, x, w.attnNorm, T, dim, normEps);
  const projected = new Float64Array(T * nProj);
  matmul(projected, xn, w.mambaInProj!, T, dim, nProj);
  // Depthwise causal conv over x B C (after z in each row), the earlier positions' inputs from the state.
  const conv = new Float64Array(T * convDim);
  const past = convKernel - 1;
  const input = (t: number, c: number): number => (t >= 0 ? projected[t * nProj + dInner + c]! : state.conv[(past + t) * convDim + c]!);
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < convDim; c++) {
      let acc = w.mambaConvBias ? w.mambaConvBias[c]! : 0;
      for (let j = 0; j < convKernel; j++) acc += w.mambaConv![c * convKernel + j]! * input(t - past + j, c);
      conv[t * convDim + c] = silu(acc);
    }
  }
  const tail = new Float64Array(past * convDim);
  for (let p = 0; p < past; p++) for (let c = 0; c < convDim; c++) tail[p * convDim + c] = input(T - past + p, c);
  state.conv.set(tail);
  // The scan per head: h = exp(A dt) h + dt x B; y = C h + D x. Heads h*nGroups/nHeads.. share a group's B and C.
  const headsPerGroup = nHeads / nGroups;
  const y = new Float64Array(T * dInner);
  const h = state.ssm;
  for (let t = 0; t < T; t++) {
    const row = t * convDim;
    for (let head = 0; head < nHeads; head++) {
      const raw = softplus(projected[t * nProj + dInner + convDim + head]! + w.mambaDtBias![head]!);
      const dt = Math.min(Math.max(raw, m.dtMin), m.dtMax);
      const decay = Math.exp(-Math.exp(w.mambaALog![head]!) * dt);
      const group = Math.floor(head / headsPerGroup);
      const B = row + dInner + group * dState;
      const C = row + dInner + nGroups * dState + group * dState;
      for (let p = 0; p < headDim; p++) {
        const c = head * headDim + p;
        const xc = conv[row + c]!;
        const k = c * dState;
        let acc = 0;
        for (let s = 0; s < dState; s++) {
          h[k + s] = decay * h[k + s]! + dt * conv[B + s]! * xc;
          acc += h[k + s]! * conv[C + s]!;
        }
        y[t * dInner + c] = acc + w.mambaD![head]! * xc;
      }
    }
  }
  // Gated RMSNorm (norm_before_gate false): y * silu(z), normalized per group of channels, times the weight.
  for (let t = 0; t < T; t++) {
    for (let c = 0; c < dInner; c++) y[t * dInner + c] = y[t * dInner + c]! * silu(projected[t * nProj + c]!);
    for (let g0 = 0; g0 < dInner; g0 += normGroupSize) {
      let sum = 0;
      for (let c = g0; c < g0 + normGroupSize; c++) sum += y[t * dInner + c]! ** 2;
      const scale = 1 / Math.sqrt(sum / normGroupSize + normEps);
      for (let c = g0; c < g0 + normGroupSize; c++) y[t * dInner + c] = y[t * dInner + c]! * scale * w.mambaNorm![c]!;
    }
  }
  const out = new Float64Array(T * dim);
  matmul(out, y, w.mambaOutProj!, T, dInner, dim);
  addInPlace(x, out, T * dim);
}

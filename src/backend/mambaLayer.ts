// One Mamba block (transformers' MambaBlock with the MambaMixer slow path) on the reference
// kernels: RMSNorm, in_proj, a depthwise causal conv, the selective scan, the gate, out_proj and
// the residual add. It carries its recurrent state, so generation continues a sequence token by
// token and a window starts from a zero state.

import { type LayerShape, type LayerWeightsF32, mambaDimsOf, type MambaDims } from "./backend.js";
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

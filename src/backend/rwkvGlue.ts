// The glue between the batched RWKV layers' projections: LayerNorm with the token shift's mixes,
// the residual adds, the squared ReLU. In C through recurrentNative.ts when the helper is built
// (no float64 arrays of whole rows, which cost as much as the scans), else in the TypeScript
// twins here; both compute in float64 and write float32, so they agree to float32 rounding.

import { recurrentNative } from "./recurrentNative.js";
import { layerNorm } from "./reference.js";

const sigmoid = (v: number): number => 1 / (1 + Math.exp(-v));

/**
 * outs[m] (N, dim) = token-shift mix m of the rows of LayerNorm(x + add) (add absent: x alone),
 * each row with the one before it in its window, zeros before a window's first (a fresh state):
 * RWKV-4's here * mix + before * (1 - mix), or with lerp RWKV-7's here + (before - here) * mix.
 * mixes: (dim) each, one per output.
 */
export function layerNormShiftMix(
  outs: Float32Array[], x: Float32Array, add: Float32Array | undefined, weight: Float32Array, bias: Float32Array, mixes: Float32Array[],
  nWindows: number, seqLen: number, dim: number, eps: number, lerp: boolean, threads: number,
): void {
  const native = recurrentNative();
  if (native) {
    native.layerNormShiftMix(outs, x, add ?? null, weight, bias, mixes, nWindows, seqLen, eps, lerp, threads);
    return;
  }
  const N = nWindows * seqLen;
  // The typed-array constructor widens in one native copy; Float64Array.from walks an iterator.
  const normed = new Float64Array(x);
  if (add) for (let i = 0; i < normed.length; i++) normed[i]! += add[i]!;
  layerNorm(normed, normed, weight, bias, N, dim, eps);
  outs.forEach((out, m) => windowShift(out, normed, mixes[m]!, nWindows, seqLen, dim, lerp));
}

/** One mix of the rows of x (N, dim) with the rows before them in their windows; out in float32. */
function windowShift(out: Float32Array, x: Float64Array, mix: Float32Array, nWindows: number, seqLen: number, dim: number, lerp: boolean): void {
  for (let b = 0; b < nWindows; b++) {
    for (let t = 0; t < seqLen; t++) {
      const off = (b * seqLen + t) * dim;
      for (let i = 0; i < dim; i++) {
        const here = x[off + i]!;
        const before = t === 0 ? 0 : x[off - dim + i]!;
        out[off + i] = lerp ? here + (before - here) * mix[i]! : here * mix[i]! + before * (1 - mix[i]!);
      }
    }
  }
}

/** next = (x + add) + sigmoid(gate) * update, or (x + add) + update without a gate: the block's two residual adds. */
export function residualAdd(next: Float32Array, x: Float32Array, add: Float32Array, gate: Float32Array | undefined, update: Float32Array, threads: number): void {
  const native = recurrentNative();
  if (native) native.residualAdd(next, x, add, gate ?? null, update, threads);
  else if (gate) for (let i = 0; i < next.length; i++) next[i] = x[i]! + add[i]! + sigmoid(gate[i]!) * update[i]!;
  else for (let i = 0; i < next.length; i++) next[i] = x[i]! + add[i]! + update[i]!;
}

/** h = relu(h)^2 in place (channel mixing's activation). */
export function reluSquare(h: Float32Array, threads: number): void {
  const native = recurrentNative();
  if (native) {
    native.reluSquare(h, threads);
    return;
  }
  // v * v of a float32 is exact in float64 and V8 compiles it to one multiply.
  for (let i = 0; i < h.length; i++) {
    const v = Math.max(0, h[i]!);
    h[i] = v * v;
  }
}

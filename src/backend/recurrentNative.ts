// Loads the native scans of the batched recurrent layers (native/recurrent_scan.c ->
// build/shortgpt_scan.node, built at install) and switches them off when asked: the layers then
// run their TypeScript twins, which give the same values to float32 rounding. Off by
// SHORTGPT_NATIVE_SCAN=0 for a whole process (to run any test file on the twins), or by
// setRecurrentNative(false) (tests that compare both paths in one process).

import { createRequire } from "node:module";
import { join } from "node:path";
import { repoRoot } from "../shared.js";

export const RECURRENT_SCAN_HELPER_PATH = join(repoRoot(), "build", "shortgpt_scan.node");

/**
 * The helper's functions; N = nWindows * seqLen rows, each window from a zero state. They check
 * every array's length against the dimensions and throw a RangeError naming the one that is off.
 */
export interface RecurrentScanNative {
  /** RWKV-4: wkv (N, att) = sigmoid(r) * WKV(k, v); k, v, r: (N, att); timeDecay, timeFirst: (att). */
  rwkv4Wkv(wkv: Float32Array, k: Float32Array, v: Float32Array, r: Float32Array, timeDecay: Float32Array, timeFirst: Float32Array, nWindows: number, seqLen: number, threads: number): void;
  /**
   * RWKV-7: y (N, dim) = gate * (groupNorm(delta-rule scan per head) + bonus * v), before the
   * output projection. r, decayIn, k, aIn, gate: (N, dim) float32; v: (N, dim) float64; w0, a0,
   * kkScale, ka, rk, lnX, lnXBias: (dim).
   */
  rwkv7Scan(
    y: Float32Array, r: Float32Array, decayIn: Float32Array, k: Float32Array, v: Float64Array, aIn: Float32Array, gate: Float32Array,
    w0: Float32Array, a0: Float32Array, kkScale: Float32Array, ka: Float32Array, rk: Float32Array, lnX: Float32Array, lnXBias: Float32Array,
    nWindows: number, seqLen: number, headSize: number, threads: number,
  ): void;
  /** RWKV-7, a block after the first: v (N, dim) = vRaw + (vFirst - vRaw) * sigmoid(mix + v0); v, vFirst float64; v0: (dim). */
  rwkv7ValueResidual(v: Float64Array, vRaw: Float32Array, vFirst: Float64Array, mix: Float32Array, v0: Float32Array, threads: number): void;
  /** Mamba's RMSNorm: out (rows, dim) = x / sqrt(mean(x^2) + eps) * weight, in float64 rounded to float32; dim = weight's length. */
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, eps: number, threads: number): void;
  /** Mamba: u (N, dInner) = silu(causal depthwise conv of projected's stream half); projected: (N, 2 dInner); conv: (dInner, convKernel); bias: (dInner) or null. */
  mambaConvSilu(u: Float32Array, projected: Float32Array, conv: Float32Array, bias: Float32Array | null, nWindows: number, seqLen: number, convKernel: number, threads: number): void;
  /**
   * Mamba: the selective scan, y (N, dInner) = (C h + D u) * silu(gate). u, dtRaw: (N, dInner);
   * projected: (N, 2 dInner), the gate its second half; params: (N, dtRank + 2 dState) = dt (low
   * rank), B, C; aLog: (dInner, dState); dtBias, d: (dInner).
   */
  mambaScan(
    y: Float32Array, u: Float32Array, projected: Float32Array, params: Float32Array, dtRaw: Float32Array, aLog: Float32Array, dtBias: Float32Array, d: Float32Array,
    nWindows: number, seqLen: number, dState: number, dtRank: number, threads: number,
  ): void;
  /**
   * The RWKV layers' LayerNorm and token shift: outs[m] (N, dim) = mix m of the rows of
   * LayerNorm(x + add) (add: null for none) with the row before in the window (zeros before the
   * first), as x mix + before (1 - mix) (RWKV-4), or x + (before - x) mix with lerp (RWKV-7).
   * Float64 inside, float32 out; 1 to 8 mixes (dim) each.
   */
  layerNormShiftMix(
    outs: Float32Array[], x: Float32Array, add: Float32Array | null, weight: Float32Array, bias: Float32Array, mixes: Float32Array[],
    nWindows: number, seqLen: number, eps: number, lerp: boolean, threads: number,
  ): void;
  /** next = (x + add) + sigmoid(gate) * update, or (x + add) + update with gate null; in float64, all of one length. */
  residualAdd(next: Float32Array, x: Float32Array, add: Float32Array, gate: Float32Array | null, update: Float32Array, threads: number): void;
  /** h = max(h, 0)^2 in place. */
  reluSquare(h: Float32Array, threads: number): void;
}

let helper: RecurrentScanNative | null | undefined;
let enabled = process.env["SHORTGPT_NATIVE_SCAN"] !== "0";

/** The native scans, when the helper is built, loadable and switched on; undefined: use the TypeScript twins. */
export function recurrentNative(): RecurrentScanNative | undefined {
  if (!enabled) return undefined;
  if (helper === undefined) {
    try {
      helper = createRequire(import.meta.url)(RECURRENT_SCAN_HELPER_PATH) as RecurrentScanNative;
    } catch {
      helper = null;
    }
  }
  return helper ?? undefined;
}

/** Switches the native scans off (or on again): tests compare both paths. */
export function setRecurrentNative(on: boolean): void {
  enabled = on;
}

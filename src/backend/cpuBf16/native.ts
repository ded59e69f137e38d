// Loads the CPU bf16 helper (native/cpu_bf16.c -> build/shortgpt_cpu.node, built at install) and
// says why it cannot be used when it cannot: not built, or a CPU without AVX512_BF16.

import { createRequire } from "node:module";
import { join } from "node:path";
import { repoRoot } from "../../shared.js";

export const CPU_BF16_HELPER_PATH = join(repoRoot(), "build", "shortgpt_cpu.node");

/** The CPU features the helper reports (CPUID, with the OS's consent for AVX-512 state). */
export interface CpuFeatures {
  avx512f: boolean;
  avx512bf16: boolean;
  /** AMX-BF16 tiles (CPUID): oneDNN's matmul uses them when the helper is built with it. */
  amxBf16: boolean;
  /** What runs the layer GEMMs: "native" (the helper's AVX512_BF16 kernel) or "oneDNN x.y.z". */
  gemm: string;
  /** oneDNN's implementation of the last matmul it made (e.g. "brg:avx512_core_amx"), "" before one or without oneDNN. */
  gemmImpl: string;
  /** Whether the helper was built with oneDNN (useGemm("onednn") may still fail if its engine cannot start). */
  onednnBuilt: boolean;
}

/** Weights packed by packWeights: bf16 in the layout of the GEMM in use (opaque to TypeScript). */
export type PackedWeights = Uint16Array & { readonly __packedBf16: unique symbol };

export interface CpuBf16Native {
  features(): CpuFeatures;
  /**
   * The kernel of the layer GEMMs from now on ("onednn" is refused without oneDNN); the layouts
   * differ, so weights packed before must be packed again. Returns the one now in use.
   */
  useGemm(kernel: "onednn" | "native"): "onednn" | "native";
  /** Elements of the packed form of an (n, k) weight in the current GEMM's layout. */
  packedLength(n: number, k: number): number;
  /**
   * Row blocks (rows_i, k) stacked into one (sum rows_i, k) weight and packed: Float32Array parts
   * are rounded to bf16, Uint16Array parts are bf16 bits as stored (moved, not rounded).
   */
  packWeights(parts: (Float32Array | Uint16Array)[], k: number, threads?: number): PackedWeights;
  /** One part (rows, k) packed into rows row0.. of dst (emptyPacked): a layer packed tensor by tensor. */
  packRows(dst: PackedWeights, part: Float32Array | Uint16Array, row0: number, k: number, threads?: number): void;
  /** out (m, n) = a (m, k) @ w^T, or out += that with accumulate; fp32 accumulation. */
  gemm(out: Float32Array, a: Float32Array, w: PackedWeights, m: number, n: number, k: number, accumulate: boolean, threads: number): void;
  rmsNorm(out: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void;
  /** out (rows, hidden) = silu(gu[:, :hidden]) * gu[:, hidden:]. */
  swiglu(out: Float32Array, gu: Float32Array, rows: number, hidden: number, threads: number): void;
  /** out (rows, hidden) = gelu_tanh(gu[:, :hidden]) * gu[:, hidden:] (Gemma's gate, gelu_pytorch_tanh). */
  geluGate(out: Float32Array, gu: Float32Array, rows: number, hidden: number, threads: number): void;
  /** y (rows, dim) += rmsNorm(x) * weight: Gemma 2/3's sandwich norm on a block's output, then the residual add. */
  addRmsNorm(y: Float32Array, x: Float32Array, weight: Float32Array, rows: number, dim: number, eps: number): void;
  /** In place on qkv (rows, (nHeads + 2 nKvHeads) headDim): each q head RMS-normed with qNorm, each k head with kNorm (headDim each). */
  headRmsNorm(qkv: Float32Array, qNorm: Float32Array, kNorm: Float32Array, rows: number, nHeads: number, nKvHeads: number, headDim: number, eps: number): void;
  /**
   * qkv (nWindows*seqLen, (nHeads + 2 nKvHeads) headDim): q and k are roped in place (q scaled
   * by options.scale, default 1/sqrt(headDim)); out (nWindows*seqLen, nHeads*headDim) = causal
   * attention per window. cos, sin: (seqLen, headDim/2). positions, branches: packed windows
   * (PackedLayout), or null. options: see NativeAttentionOptions.
   */
  attention(
    out: Float32Array, qkv: Float32Array, nWindows: number, seqLen: number, nHeads: number, nKvHeads: number, headDim: number,
    cos: Float32Array, sin: Float32Array, threads: number, positions: Int32Array | null, branches: Int32Array | null, options?: NativeAttentionOptions,
  ): void;
}

/** How the native attention forms its scores beyond the plain Llama ones (LayerShape's attnScale, attnSoftcap, slidingWindow). */
export interface NativeAttentionOptions {
  /** Score scale; default 1/sqrt(headDim). */
  scale?: number;
  /** Scores become softcap * tanh(score / softcap) before the mask; 0 or absent: none. */
  softcap?: number;
  /** A query at position p sees keys at positions p - window + 1 .. p only; 0 or absent: all earlier keys. */
  window?: number;
}

/** Zeros in the packed form of an (n, k) weight (the layout of the GEMM in use), for packRows to fill. */
export function emptyPacked(native: CpuBf16Native, n: number, k: number): PackedWeights {
  return new Uint16Array(native.packedLength(n, k)) as PackedWeights;
}

export type CpuBf16Availability = { ok: true; native: CpuBf16Native; features: CpuFeatures } | { ok: false; reason: string; features?: CpuFeatures };

let cached: CpuBf16Availability | undefined;
let disabledBecause: string | undefined;

/** Switches the bf16 engine off (with the reason it reports) or back on: tests take the fallback path with it. */
export function setCpuBf16Disabled(reason: string | undefined): void {
  disabledBecause = reason;
}

/** The helper when it is built and the CPU has bf16 dot products; else why not, in a few words. */
export function cpuBf16Availability(): CpuBf16Availability {
  if (disabledBecause !== undefined) return { ok: false, reason: disabledBecause };
  if (cached) return cached;
  let native: CpuBf16Native;
  try {
    native = createRequire(import.meta.url)(CPU_BF16_HELPER_PATH) as CpuBf16Native;
  } catch {
    cached = { ok: false, reason: `the native bf16 helper ${CPU_BF16_HELPER_PATH} is not built (npm ci builds it with the machine's C compiler)` };
    return cached;
  }
  const features = native.features();
  cached = features.avx512bf16 ? { ok: true, native, features } : { ok: false, reason: "this CPU has no AVX512_BF16 instructions", features };
  return cached;
}

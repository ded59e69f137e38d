// The CPU engine on the CPU's bf16 dot-product units: Llama decoder layers run in the native
// helper (bf16 GEMM inputs, fp32 accumulation, fp32 residual stream and attention) with the
// q/k/v and gate/up projections fused into one GEMM each; every other shape (biases, LayerNorm,
// GELU, per-head norms, ...) and the head run on the fp32 onnxruntime kernels.

import { type HeadResult, type HostKernels, type LayerShape, type LayerWeightsF32, type PackedLayout, type SideStreams } from "../backend.js";
import { type HostBackend, hostBackend } from "../hostBackend.js";
import { createOrtKernels, type OrtKernels } from "../ortBackend.js";
import { checkLayerArgs } from "../referenceBackend.js";
import { ropeInverseFrequencies } from "../reference.js";
import { UnsupportedError } from "../../errors.js";
import { type CpuBf16Native, type CpuFeatures, cpuBf16Availability, type PackedWeights } from "./native.js";

export interface CpuBf16Options {
  threads: number;
  /** Most token rows per native pass; bounds the intermediate buffers (rows x 2 hiddenDim floats). */
  maxRowsPerRun?: number;
}

/** What ran, so tests can prove the bf16 path did (or did not). */
export interface CpuBf16Stats {
  bf16Layers: number;
  fallbackLayers: number;
  packs: number;
}

export interface CpuBf16Kernels extends HostKernels {
  readonly stats: Readonly<CpuBf16Stats>;
  readonly features: CpuFeatures;
}

export type CpuBf16Backend = HostBackend<CpuBf16Kernels> & { readonly stats: Readonly<CpuBf16Stats>; readonly features: CpuFeatures };

/** A layer's GEMM weights in bf16, packed once and reused by every batch of a pass. */
interface PackedLayer {
  qkv: PackedWeights; // (qDim + 2 kvDim, dim)
  wo: PackedWeights; // (dim, qDim)
  gateUp: PackedWeights; // (2 hiddenDim, dim)
  down: PackedWeights; // (dim, hiddenDim)
}

/** Whether the native layer computes this shape; else the fp32 kernels do. */
export function nativeLayerSupports(shape: LayerShape): boolean {
  return !shape.qkvBias && !shape.qkNorm && !shape.layerNorm && !shape.noRope && !shape.plainMlp && !shape.outputBiases &&
    shape.activation === undefined && shape.headDim % 2 === 0 && shape.nHeads % shape.nKvHeads === 0;
}

export async function createCpuBf16Backend(options: CpuBf16Options): Promise<CpuBf16Backend> {
  const kernels = await createCpuBf16Kernels(options);
  return { ...hostBackend(kernels), stats: kernels.stats, features: kernels.features };
}

export async function createCpuBf16Kernels(options: CpuBf16Options): Promise<CpuBf16Kernels> {
  const available = cpuBf16Availability();
  if (!available.ok) throw new UnsupportedError(`the bf16 CPU engine cannot run: ${available.reason}`, { hint: "use --precision fp32 (onnxruntime's fp32 engine)" });
  const { native, features } = available;
  const { threads } = options;
  const maxRowsPerRun = options.maxRowsPerRun ?? 1024;
  const fp32: OrtKernels = await createOrtKernels({ threads, flavor: "node" });
  const stats: CpuBf16Stats = { bf16Layers: 0, fallbackLayers: 0, packs: 0 };
  // Keyed by the weights object: hostBackend hands the same one to every batch of a layer.
  const packedLayers = new WeakMap<LayerWeightsF32, PackedLayer>();
  const ropeCache = new Map<string, { cos: Float32Array; sin: Float32Array }>();

  const pack = (w: LayerWeightsF32, shape: LayerShape): PackedLayer => {
    let p = packedLayers.get(w);
    if (!p) {
      const { dim, hiddenDim } = shape;
      const qDim = shape.nHeads * shape.headDim;
      p = {
        qkv: native.packWeights([w.wq, w.wk, w.wv], dim),
        wo: native.packWeights([w.wo], qDim),
        gateUp: native.packWeights([w.wGate!, w.wUp], dim),
        down: native.packWeights([w.wDown], hiddenDim),
      };
      stats.packs++;
      packedLayers.set(w, p);
    }
    return p;
  };

  const rope = (shape: LayerShape, seqLen: number): { cos: Float32Array; sin: Float32Array } => {
    const key = `${seqLen} ${shape.headDim} ${shape.ropeTheta} ${shape.ropeFreqFactors?.join(",") ?? ""}`;
    let tables = ropeCache.get(key);
    if (!tables) {
      const half = shape.headDim / 2;
      const inv = ropeInverseFrequencies(shape.headDim, shape.ropeTheta, shape.ropeFreqFactors);
      const cos = new Float32Array(seqLen * half);
      const sin = new Float32Array(seqLen * half);
      for (let pos = 0; pos < seqLen; pos++) {
        for (let i = 0; i < half; i++) {
          cos[pos * half + i] = Math.cos(pos * inv[i]!);
          sin[pos * half + i] = Math.sin(pos * inv[i]!);
        }
      }
      tables = { cos, sin };
      ropeCache.set(key, tables);
    }
    return tables;
  };

  return {
    name: "cpu-bf16",
    threads,
    stats,
    features,
    async runLayer(x: Float32Array, nWindows: number, seqLen: number, weights: LayerWeightsF32, shape: LayerShape, layout?: PackedLayout, side?: SideStreams): Promise<Float32Array> {
      if (!nativeLayerSupports(shape)) {
        stats.fallbackLayers++;
        return fp32.runLayer(x, nWindows, seqLen, weights, shape, layout, side);
      }
      checkLayerArgs(x, nWindows, seqLen, weights, shape, layout);
      stats.bf16Layers++;
      const packed = pack(weights, shape);
      const tables = rope(shape, seqLen);
      const y = new Float32Array(x); // the stream leaving the layer; x stays valid for the metrics
      const perRun = Math.max(1, Math.floor(maxRowsPerRun / seqLen));
      const rows = Math.min(nWindows, perRun) * seqLen;
      const buffers = layerBuffers(shape, rows);
      for (let first = 0; first < nWindows; first += perRun) {
        const count = Math.min(perRun, nWindows - first);
        const tokens = (a: Int32Array | undefined): Int32Array | null => a?.subarray(first * seqLen, (first + count) * seqLen) ?? null;
        const chunkLayout = { positions: tokens(layout?.positions), branches: tokens(layout?.branches) };
        runNativeLayer(native, y.subarray(first * seqLen * shape.dim, (first + count) * seqLen * shape.dim), count, seqLen, weights, packed, shape, tables, buffers, threads, chunkLayout);
      }
      return y;
    },
    async runHead(x, nRows, head, vocabSize, normEps, targets): Promise<HeadResult> {
      return fp32.runHead(x, nRows, head, vocabSize, normEps, targets);
    },
    dispose: () => fp32.dispose(),
  };
}

interface LayerBuffers {
  xn: Float32Array;
  qkv: Float32Array;
  att: Float32Array;
  gateUp: Float32Array;
  inner: Float32Array;
}

function layerBuffers(shape: LayerShape, rows: number): LayerBuffers {
  const qDim = shape.nHeads * shape.headDim;
  const kvDim = shape.nKvHeads * shape.headDim;
  return {
    xn: new Float32Array(rows * shape.dim),
    qkv: new Float32Array(rows * (qDim + 2 * kvDim)),
    att: new Float32Array(rows * qDim),
    gateUp: new Float32Array(rows * 2 * shape.hiddenDim),
    inner: new Float32Array(rows * shape.hiddenDim),
  };
}

/**
 * y: (nWindows*seqLen, dim), the residual stream, updated in place (packed windows: see PackedLayout):
 *   y += wo @ attn(rope(qkv @ norm(y))); y += down @ swiglu(gateUp @ norm(y)).
 */
function runNativeLayer(
  native: CpuBf16Native, y: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, p: PackedLayer,
  shape: LayerShape, tables: { cos: Float32Array; sin: Float32Array }, b: LayerBuffers, threads: number,
  layout: { positions: Int32Array | null; branches: Int32Array | null },
): void {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = shape;
  const rows = nWindows * seqLen;
  const qDim = nHeads * headDim;
  const qkvDim = qDim + 2 * nKvHeads * headDim;
  native.rmsNorm(b.xn, y, w.attnNorm, rows, dim, normEps);
  native.gemm(b.qkv, b.xn, p.qkv, rows, qkvDim, dim, false, threads);
  native.attention(b.att, b.qkv, nWindows, seqLen, nHeads, nKvHeads, headDim, tables.cos, tables.sin, threads, layout.positions, layout.branches);
  native.gemm(y, b.att, p.wo, rows, dim, qDim, true, threads);
  native.rmsNorm(b.xn, y, w.ffnNorm, rows, dim, normEps);
  native.gemm(b.gateUp, b.xn, p.gateUp, rows, 2 * hiddenDim, dim, false, threads);
  native.swiglu(b.inner, b.gateUp, rows, hiddenDim, threads);
  native.gemm(y, b.inner, p.down, rows, dim, hiddenDim, true, threads);
}

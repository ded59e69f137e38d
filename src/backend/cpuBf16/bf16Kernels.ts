// The CPU engine on the CPU's bf16 dot-product units: Llama decoder layers (and Gemma 2/3's and
// Phi-3's: see nativeLayerSupports) run in the native helper (bf16 GEMM inputs, fp32
// accumulation, fp32 residual stream and attention) with the q/k/v and gate/up projections fused
// into one GEMM each; the batched recurrent layers (Mamba, RWKV-4, RWKV-7) run their projections
// on the same bf16 GEMM (their scans and glue as on the fp32 engine); every other shape (biases,
// LayerNorm, plain MLP, ...) and the head run on the fp32 onnxruntime kernels.

import { type HeadResult, type HiddenStates, type HostKernels, type LayerShape, type LayerTensorSource, type LayerWeightName, type LayerWeightsF32, type PackedLayout, type PreparedLayer, type SideStreams } from "../backend.js";
import { type HostBackend, hostBackend, hostStates, ownHostStates } from "../hostBackend.js";
import { createOrtKernels, type OrtKernels } from "../ortBackend.js";
import { checkLayerArgs, checkStreamArgs } from "../referenceBackend.js";
import { nativeLayerSupports } from "./supports.js";
import { ropeInverseFrequencies } from "../reference.js";
import { UnsupportedError } from "../../errors.js";
import { recycleF32, recycleU16, takeF32 } from "../../tensor/hostMemory.js";
import type { LinearKernel } from "../linearKernel.js";
import { batchedRecurrentLayer, hasBatchedRecurrentLayer } from "../recurrentLayer.js";
import { type CpuBf16Native, type CpuFeatures, cpuBf16Availability, emptyPacked, type NativeAttentionOptions, type PackedWeights } from "./native.js";

export interface CpuBf16Options {
  threads: number;
  /** Most token rows per native pass; bounds the intermediate buffers (rows x 2 hiddenDim floats). */
  maxRowsPerRun?: number;
}

/** What ran, so tests can prove the bf16 path did (or did not). */
export interface CpuBf16Stats {
  bf16Layers: number;
  /** Recurrent layer calls whose projections ran on the bf16 GEMM. */
  recurrentLayers: number;
  fallbackLayers: number;
  packs: number;
  /** Weight tensors packed from bf16 bits as stored (no float32 copy made). */
  bf16Tensors: number;
}

export interface CpuBf16Kernels extends HostKernels {
  readonly stats: Readonly<CpuBf16Stats>;
  readonly features: CpuFeatures;
  /** A layer packed tensor by tensor: at most one weight is held unpacked at a time. */
  /** With `pooled`, the packed weights live in arrays from takeF32, listed there for recycleF32. */
  packLayer(shape: LayerShape, tensors: LayerTensorSource, pooled?: Float32Array[]): NativeLayer;
  /** runLayer on a layer packed by packLayer. */
  runPacked(x: Float32Array, nWindows: number, seqLen: number, layer: NativeLayer, shape: LayerShape, layout?: PackedLayout): Float32Array;
}

export type CpuBf16Backend = HostBackend<CpuBf16Kernels> & { readonly stats: Readonly<CpuBf16Stats>; readonly features: CpuFeatures };

/** A layer's GEMM weights in bf16, packed once and reused by every batch of a pass. */
interface PackedLayer {
  qkv: PackedWeights; // (qDim + 2 kvDim, dim)
  wo: PackedWeights; // (dim, qDim)
  gateUp: PackedWeights; // (2 hiddenDim, dim)
  down: PackedWeights; // (dim, hiddenDim)
}

/** Everything the native layer reads: the packed GEMM weights and the norm scales its shape has. */
export interface NativeLayer extends PackedLayer {
  attnNorm: Float32Array;
  ffnNorm: Float32Array;
  /** With shape.postNorms (Gemma 2/3): the sandwich norms on the attention and MLP outputs. */
  attnPostNorm?: Float32Array;
  ffnPostNorm?: Float32Array;
  /** With shape.qkNorm (Gemma 3): the per-head norms of q and k (headDim each). */
  qNorm?: Float32Array;
  kNorm?: Float32Array;
}

/** A layer made ready by the bf16 backend's prepareLayer: packed, with no float32 weights kept. */
interface Bf16PreparedLayer extends PreparedLayer {
  readonly native: NativeLayer;
}


/**
 * The host backend on the bf16 kernels, with one difference: a layer the native code computes is
 * packed as prepareLayer reads it, tensor by tensor (bf16 checkpoints without a float32 copy), so
 * a pass holds packed bf16 weights only: half the memory of the float32 layer.
 */
export { nativeLayerSupports };

export async function createCpuBf16Backend(options: CpuBf16Options): Promise<CpuBf16Backend> {
  const kernels = await createCpuBf16Kernels(options);
  const host = hostBackend(kernels);
  return {
    ...host,
    stats: kernels.stats,
    features: kernels.features,
    // The native layer runs on this thread: nothing would overlap a prefetch (see overlapsLayerLoads).
    overlapsLayerLoads: false,
    async prepareLayer(key, load, shape, tensors): Promise<PreparedLayer> {
      if (!tensors || !nativeLayerSupports(shape)) return host.prepareLayer(key, load, shape);
      // Packed into the pool's arrays: the streaming loop hands them back (recyclable) once every batch ran the layer.
      const pooled: Float32Array[] = [];
      const prepared: Bf16PreparedLayer = { key, weights: undefined, native: kernels.packLayer(shape, tensors, pooled), recyclable: pooled };
      return prepared;
    },
    async runLayer(x: HiddenStates, nWindows, seqLen, layer, shape, layout): Promise<HiddenStates> {
      if (!("native" in layer)) return host.runLayer(x, nWindows, seqLen, layer, shape, layout);
      const s = ownHostStates(x, host.name);
      const out = kernels.runPacked(s.data, nWindows, seqLen, (layer as Bf16PreparedLayer).native, shape, layout);
      return hostStates(out, s.rows, s.dim, host.name, s.side); // (an attention layer leaves side streams as they were)
    },
  };
}

export async function createCpuBf16Kernels(options: CpuBf16Options): Promise<CpuBf16Kernels> {
  const available = cpuBf16Availability();
  if (!available.ok) throw new UnsupportedError(`the bf16 CPU engine cannot run: ${available.reason}`, { hint: "use --precision fp32 (onnxruntime's fp32 engine)" });
  const { native, features } = available;
  const { threads } = options;
  const maxRowsPerRun = options.maxRowsPerRun ?? 1024;
  const fp32: OrtKernels = await createOrtKernels({ threads, flavor: "node" });
  const stats: CpuBf16Stats = { bf16Layers: 0, recurrentLayers: 0, fallbackLayers: 0, packs: 0, bf16Tensors: 0 };
  // Keyed by the weights object: hostBackend hands the same one to every batch of a layer.
  const packedLayers = new WeakMap<LayerWeightsF32, NativeLayer>();
  const ropeCache = new Map<string, { cos: Float32Array; sin: Float32Array }>();

  /** The named weights stacked by rows into one packed GEMM weight, one tensor at a time. */
  const packStack = (tensors: LayerTensorSource, parts: readonly (readonly [LayerWeightName, number])[], k: number, pooled?: Float32Array[]): PackedWeights => {
    const n = parts.reduce((sum, [, rows]) => sum + rows, 0);
    const packed = pooled ? pooledPacked(n, k, pooled) : emptyPacked(native, n, k);
    let row0 = 0;
    for (const [name, rows] of parts) {
      const bits = tensors.bf16(name);
      if (bits) stats.bf16Tensors++;
      const values = bits ?? tensors.f32(name);
      if (values.length !== rows * k) throw new Error(`internal: weight ${name} has ${values.length} values, expected ${rows} x ${k}`);
      native.packRows(packed, values, row0, k, threads);
      recycleU16([bits]); // packed: the stored bits (pooled when the reader took them from the pool) are free again
      row0 += rows;
    }
    return packed;
  };

  /**
   * Zeros in the packed form, in an array from the pool of finished layers' arrays (fresh memory
   * is slow to touch: a short run spends more time faulting in new weights than computing), noted
   * in `pooled` so that the layer hands it back when every batch has run it.
   */
  const pooledPacked = (n: number, k: number, pooled: Float32Array[]): PackedWeights => {
    const length = native.packedLength(n, k);
    const backing = takeF32(Math.ceil(length / 2)).fill(0);
    pooled.push(backing);
    return new Uint16Array(backing.buffer, backing.byteOffset, length) as PackedWeights;
  };

  /**
   * x @ w^T on the bf16 GEMM, for the batched recurrent layers: w rounded to bf16 and packed per
   * call into pooled memory (each weight serves one call per layer; a cache keyed by the array
   * would be stale once the pool hands that array to the next layer's weights).
   */
  const bf16Linear: LinearKernel = async (x, rows, w, nOut, nIn) => {
    const pooled: Float32Array[] = [];
    const packed = pooledPacked(nOut, nIn, pooled);
    native.packRows(packed, w, 0, nIn, threads);
    const out = new Float32Array(rows * nOut);
    native.gemm(out, x, packed, rows, nOut, nIn, false, threads);
    recycleF32(pooled);
    return out;
  };

  const packLayer = (shape: LayerShape, tensors: LayerTensorSource, pooled?: Float32Array[]): NativeLayer => {
    const { dim, hiddenDim } = shape;
    const qDim = shape.nHeads * shape.headDim;
    const kvDim = shape.nKvHeads * shape.headDim;
    stats.packs++;
    return {
      attnNorm: tensors.f32("attnNorm"),
      ffnNorm: tensors.f32("ffnNorm"),
      ...(shape.postNorms ? { attnPostNorm: tensors.f32("attnPostNorm"), ffnPostNorm: tensors.f32("ffnPostNorm") } : {}),
      ...(shape.qkNorm ? { qNorm: tensors.f32("qNorm"), kNorm: tensors.f32("kNorm") } : {}),
      qkv: packStack(tensors, [["wq", qDim], ["wk", kvDim], ["wv", kvDim]], dim, pooled),
      wo: packStack(tensors, [["wo", dim]], qDim, pooled),
      gateUp: packStack(tensors, [["wGate", hiddenDim], ["wUp", hiddenDim]], dim, pooled),
      down: packStack(tensors, [["wDown", dim]], hiddenDim, pooled),
    };
  };

  /** Weights handed over whole (prepareLayer without a tensor source), packed once per object. */
  const packWhole = (w: LayerWeightsF32, shape: LayerShape): NativeLayer => {
    let p = packedLayers.get(w);
    if (!p) {
      p = packLayer(shape, { f32: (name) => w[name]!, bf16: () => undefined });
      packedLayers.set(w, p);
    }
    return p;
  };

  const runPacked = (x: Float32Array, nWindows: number, seqLen: number, layer: NativeLayer, shape: LayerShape, layout?: PackedLayout): Float32Array => {
    checkNativeLayerArgs(x, nWindows, seqLen, layer, shape, layout);
    stats.bf16Layers++;
    const tables = rope(shape, seqLen);
    const y = new Float32Array(x); // the stream leaving the layer; x stays valid for the metrics
    const perRun = Math.max(1, Math.floor(maxRowsPerRun / seqLen));
    const rows = Math.min(nWindows, perRun) * seqLen;
    const buffers = layerBuffers(shape, rows);
    for (let first = 0; first < nWindows; first += perRun) {
      const count = Math.min(perRun, nWindows - first);
      const tokens = (a: Int32Array | undefined): Int32Array | null => a?.subarray(first * seqLen, (first + count) * seqLen) ?? null;
      const chunkLayout = { positions: tokens(layout?.positions), branches: tokens(layout?.branches) };
      runNativeLayer(native, y.subarray(first * seqLen * shape.dim, (first + count) * seqLen * shape.dim), count, seqLen, layer, shape, tables, buffers, threads, chunkLayout);
    }
    return y;
  };

  /**
   * The cos/sin tables of a shape's RoPE (its theta: Gemma 3's local layers have their own; its
   * frequency factors: Llama 3, Phi-3's LongRoPE), times LongRoPE's attention factor: rotating q
   * and k by tables scaled by f equals scaling both by f after RoPE, as transformers does.
   */
  const rope = (shape: LayerShape, seqLen: number): { cos: Float32Array; sin: Float32Array } => {
    const factor = shape.ropeAttentionFactor ?? 1;
    const key = `${seqLen} ${shape.headDim} ${shape.ropeTheta} ${shape.ropeFreqFactors?.join(",") ?? ""} ${factor}`;
    let tables = ropeCache.get(key);
    if (!tables) {
      const half = shape.headDim / 2;
      const inv = ropeInverseFrequencies(shape.headDim, shape.ropeTheta, shape.ropeFreqFactors);
      const cos = new Float32Array(seqLen * half);
      const sin = new Float32Array(seqLen * half);
      for (let pos = 0; pos < seqLen; pos++) {
        for (let i = 0; i < half; i++) {
          cos[pos * half + i] = Math.cos(pos * inv[i]!) * factor;
          sin[pos * half + i] = Math.sin(pos * inv[i]!) * factor;
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
      if (hasBatchedRecurrentLayer(shape)) {
        checkLayerArgs(x, nWindows, seqLen, weights, shape, layout);
        stats.recurrentLayers++;
        return batchedRecurrentLayer(x, nWindows, seqLen, weights, shape, bf16Linear, side, threads);
      }
      if (!nativeLayerSupports(shape)) {
        stats.fallbackLayers++;
        return fp32.runLayer(x, nWindows, seqLen, weights, shape, layout, side);
      }
      checkLayerArgs(x, nWindows, seqLen, weights, shape, layout);
      return runPacked(x, nWindows, seqLen, packWhole(weights, shape), shape, layout);
    },
    async runHead(x, nRows, head, vocabSize, normEps, targets): Promise<HeadResult> {
      return fp32.runHead(x, nRows, head, vocabSize, normEps, targets);
    },
    packLayer,
    runPacked,
    dispose: () => fp32.dispose(),
  };
}

/** checkLayerArgs for a packed layer: the stream, the layout and the norms (the GEMM weights were checked as they were packed). */
function checkNativeLayerArgs(x: Float32Array, nWindows: number, seqLen: number, layer: NativeLayer, shape: LayerShape, layout?: PackedLayout): void {
  const norms: [string, Float32Array | undefined, number, boolean][] = [
    ["attnNorm", layer.attnNorm, shape.dim, true], ["ffnNorm", layer.ffnNorm, shape.dim, true],
    ["attnPostNorm", layer.attnPostNorm, shape.dim, !!shape.postNorms], ["ffnPostNorm", layer.ffnPostNorm, shape.dim, !!shape.postNorms],
    ["qNorm", layer.qNorm, shape.headDim, !!shape.qkNorm], ["kNorm", layer.kNorm, shape.headDim, !!shape.qkNorm],
  ];
  for (const [name, w, length, needed] of norms) {
    if (needed && w?.length !== length) throw new Error(`internal: norm weight ${name} has ${w?.length ?? "no"} values, expected ${length}`);
  }
  checkStreamArgs(x, nWindows, seqLen, shape, layout);
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
 *   y += wo @ attn(rope(qkv @ norm(y))); y += down @ swiglu(gateUp @ norm(y)),
 * with Gemma's GELU-tanh gate for swiglu, per-head q/k norms before RoPE (qkNorm), the score scale,
 * soft-capping and sliding window in attn, and sandwich norms on both outputs before each add
 * (postNorms), as the shape says (LayerShape; the reference layer computes the same).
 */
function runNativeLayer(
  native: CpuBf16Native, y: Float32Array, nWindows: number, seqLen: number, p: NativeLayer,
  shape: LayerShape, tables: { cos: Float32Array; sin: Float32Array }, b: LayerBuffers, threads: number,
  layout: { positions: Int32Array | null; branches: Int32Array | null },
): void {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = shape;
  const rows = nWindows * seqLen;
  const qDim = nHeads * headDim;
  const qkvDim = qDim + 2 * nKvHeads * headDim;
  const options: NativeAttentionOptions = {
    ...(shape.attnScale !== undefined ? { scale: shape.attnScale } : {}),
    ...(shape.attnSoftcap !== undefined ? { softcap: shape.attnSoftcap } : {}),
    ...(shape.slidingWindow !== undefined ? { window: shape.slidingWindow } : {}),
  };
  /** A block's output (in xn, free by then) added to the stream: through its sandwich norm when the shape has one, else accumulated by the GEMM itself. */
  const addBlock = (a: Float32Array, w: PackedWeights, k: number, postNorm: Float32Array | undefined): void => {
    if (!postNorm) return native.gemm(y, a, w, rows, dim, k, true, threads);
    native.gemm(b.xn, a, w, rows, dim, k, false, threads);
    native.addRmsNorm(y, b.xn, postNorm, rows, dim, normEps);
  };
  native.rmsNorm(b.xn, y, p.attnNorm, rows, dim, normEps);
  native.gemm(b.qkv, b.xn, p.qkv, rows, qkvDim, dim, false, threads);
  if (shape.qkNorm) native.headRmsNorm(b.qkv, p.qNorm!, p.kNorm!, rows, nHeads, nKvHeads, headDim, normEps);
  native.attention(b.att, b.qkv, nWindows, seqLen, nHeads, nKvHeads, headDim, tables.cos, tables.sin, threads, layout.positions, layout.branches, options);
  addBlock(b.att, p.wo, qDim, p.attnPostNorm);
  native.rmsNorm(b.xn, y, p.ffnNorm, rows, dim, normEps);
  native.gemm(b.gateUp, b.xn, p.gateUp, rows, 2 * hiddenDim, dim, false, threads);
  if (shape.activation === "gelu_tanh") native.geluGate(b.inner, b.gateUp, rows, hiddenDim, threads);
  else native.swiglu(b.inner, b.gateUp, rows, hiddenDim, threads);
  addBlock(b.inner, p.down, hiddenDim, p.ffnPostNorm);
}

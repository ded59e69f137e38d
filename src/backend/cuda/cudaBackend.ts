// The cuda backend: the residual stream lives in device memory from the embedding to the head;
// GEMMs run in cuBLAS (bf16 or fp32 inputs, fp32 accumulation and outputs), everything around
// them in the NVRTC-compiled kernels of kernelSource.ts. Weights are uploaded once and stay
// resident while device memory allows; beyond that they are uploaded per pass (streamed).
// Only small results come back to the host: per-row statistics, log-likelihoods, asked-for logits.
// Recurrent layer kinds (Mamba, RWKV) run through recurrent.ts on the same stream, weights and memory.

import { UnsupportedError, DeviceError, OptionError } from "../../errors.js";
import { type DecoderBackend, type DecodeSupport, type EmbeddingWeights, type KvCacheHandle, type HeadResult, type HeadWeights, type HiddenStates, isRecurrentShape, layerKind, type PreparedEmbedding, type LayerShape, type LayerWeightsF32, type PackedLayout, type PreparedHead, type PreparedLayer, type RowStats, type RowStatsWanted } from "../backend.js";
import { checkPosition, checkTokenIds } from "../embedding.js";
import { checkRowIndices } from "../hostBackend.js";
import { ropeInverseFrequencies } from "../reference.js";
import { checkLayerWeights, checkLayout } from "../referenceBackend.js";
import { ALL_ATTENTION_FAMILY_FEATURES } from "../shapeFeatures.js";
import { CUBLAS_OP_N, CUBLAS_OP_T, CUDA_R_16BF, CUDA_R_32F, CudaApi, type DevicePtr, type KernelArg } from "./api.js";
import { cachedCompile, compileOptions, kernelCacheDir } from "./compile.js";
import { type AttentionContext, cachedAttention, causalAttention, flashKernel, scoreRule } from "./attention.js";
import { alignUp, DeviceMemory } from "./deviceMemory.js";
import { DeferredDownloads } from "./deferredDownloads.js";
import { LayoutCache } from "./layoutCache.js";
import { BF16_KERNEL_NAMES, KERNEL_NAMES, KERNEL_SOURCE, type KernelName, SOFTMAX_PER_THREAD } from "./kernelSource.js";
import { type CudaLibraryPaths, findCudaLibraries } from "./libraries.js";
import { checkRecurrentShape, CUDA_RECURRENT_KINDS, type RecurrentContext, type RecurrentTensorName, recurrentRowBytes, recurrentStagingBytes, recurrentUploadParts, runRecurrentLayer } from "./recurrent.js";

export type CudaPrecision = "bf16" | "fp32";

export interface CudaBackendOptions {
  /** GPU index (--device), default 0. */
  device?: number;
  /** GEMM inputs: bf16 (default) or fp32 (for fidelity checks). */
  precision?: CudaPrecision;
  libraries?: CudaLibraryPaths;
  cacheDir?: string;
  /** Tokens per runLayer call (default 16384). */
  batchTokens?: number;
  /** Device memory kept free for activations when deciding whether weights stay resident (default: what a batch of batchTokens needs, see activationReserve). */
  reserveBytes?: number;
  /** Most bytes of attention scores at once (windows are chunked to stay under it); default 2 GiB. */
  scoresBytes?: number;
  /** Queries per attention block (causal blocks skip the keys after the block); default 512. */
  attentionBlock?: number;
  /** The fused (flash) attention kernel where it applies (bf16, head size 64 or 128, no packed branches); default true. */
  flashAttention?: boolean;
}

export interface CudaBackend extends DecoderBackend {
  readonly deviceName: string;
  readonly precision: CudaPrecision;
  /** What the backend did: for tests, benchmarks and the device check. */
  readonly stats: { layersUploaded: number; residentLayers: number; streamedLayers: number; kernelsCached: boolean; kernelLaunches: number; gemms: number };
  /** Synchronizes the device (for timing). */
  synchronize(): void;
}

const BLOCK = 256;
/**
 * Embeddings kept on the device at once: a pass prepares one (the whole table, or only its
 * tokens' rows under a key of their own) and a caller may hold the previous pass's; older ones
 * are freed when another is prepared.
 */
const MAX_EMBEDDINGS = 2;

/** One layer's slice of a key/value cache: (kvHead, capacity, headDim) keys and values, positions before start filled. */
interface LayerCache {
  k: DevicePtr;
  v: DevicePtr;
  capacity: number;
  start: number;
}

/** A key/value cache on the device: per slot (layer), keys then values. */
interface DeviceKvCache extends KvCacheHandle {
  readonly base: DevicePtr;
  readonly slotBytes: number;
  readonly kvDim: number;
  readonly nSlots: number;
  released: boolean;
}

/**
 * RWKV-7's value residual beside the stream (see SideStreams): the first block's v, (rows, dim)
 * fp32, shared by the states of every later layer of the batch and freed with the last of them.
 */
interface DeviceSideStream {
  readonly vFirst: DevicePtr;
  readonly bytes: number;
  holders: number;
}

/** Device memory, rows x dim float32. */
interface DeviceStates extends HiddenStates {
  readonly ptr: DevicePtr;
  readonly bytes: number;
  released: boolean;
  readonly side?: DeviceSideStream;
}

/** A layer's weights on the device: one allocation, tensors at aligned offsets. */
interface DeviceLayer extends PreparedLayer {
  readonly base: DevicePtr;
  readonly bytes: number;
  readonly resident: boolean;
  readonly tensors: Partial<Record<DeviceTensorName | RecurrentTensorName, DevicePtr>>;
  freed: boolean;
}
type DeviceTensorName = "attnNorm" | "attnNormBias" | "wqkv" | "bq" | "bk" | "bv" | "qNorm" | "kNorm" | "wo" | "bo" | "attnPostNorm" | "ffnNorm" | "ffnNormBias" | "wUpGate" | "bUp" | "wDown" | "bDown" | "ffnPostNorm";

interface DeviceEmbedding extends PreparedEmbedding {
  readonly base: DevicePtr;
  /** Set when the cache let it go (see MAX_EMBEDDINGS): embed refuses it rather than read freed memory. */
  freed: boolean;
  readonly tensors: { table: DevicePtr; positions?: DevicePtr };
  readonly nPositions: number;
  readonly scale: number | undefined;
}

interface DeviceHead extends PreparedHead {
  readonly base: DevicePtr;
  readonly bytes: number;
  readonly tensors: { finalNorm: DevicePtr; finalNormBias?: DevicePtr; classifier: DevicePtr };
  readonly dim: number;
  /** Gemma 2: the logits are soft-capped on the device before they are read or reduced. */
  readonly logitSoftcap: number | undefined;
}

/**
 * Device memory to keep free beside resident weights: a batch of `rows` tokens' states (input,
 * output and one spare) and scratch buffers, the attention scores of the GEMM path, the fp32
 * staging of the largest weight upload, and 1 GiB each for the head's logits and for the
 * context, cuBLAS and fragmentation. A 70B model in bf16 (about 129 GiB with its embedding and
 * head) then stays resident on a 141 GB card for batches of 4,096 tokens.
 */
export function activationReserve(shape: LayerShape, rows: number, ginBytes: number, scoresBytes: number): number {
  if (isRecurrentShape(shape)) return rows * recurrentRowBytes(shape, ginBytes) + recurrentStagingBytes(shape) + 2 * 2 ** 30;
  const { dim, hiddenDim, nHeads, nKvHeads, headDim } = shape;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  // Sandwich norms (Gemma 2/3) hold a block's fp32 output apart from the stream before the add.
  const perRow = (shape.postNorms ? 4 : 3) * dim * 4 + ginBytes * (Math.max(dim, qDim) + (qDim + 2 * kvDim) + qDim + 2 * kvDim + 2 * qDim + 2 * hiddenDim + hiddenDim);
  const staging = Math.max(hiddenDim, qDim) * dim * 4;
  return rows * perRow + scoresBytes + staging + 2 * 2 ** 30;
}

/** Decoding with a key/value cache is attention's; a recurrent model generates on the in-memory model. */
function refuseRecurrentDecoding(shape: LayerShape): void {
  if (isRecurrentShape(shape)) throw new UnsupportedError(`the cuda backend does not decode ${layerKind(shape)} layers token by token (it keeps no recurrent state between calls)`, { option: "--backend", hint: "generate with a CPU backend" });
}

const blocksFor = (n: number): number => Math.max(1, Math.min(Math.ceil(n / BLOCK), 132 * 32));

export async function createCudaBackend(options: CudaBackendOptions = {}): Promise<CudaBackend> {
  const precision = options.precision ?? "bf16";
  if (precision !== "bf16" && precision !== "fp32") throw new OptionError(`--precision ${String(precision)} is not bf16 or fp32`, { option: "--precision" });
  const api = new CudaApi(options.libraries ?? findCudaLibraries(), options.device ?? 0);
  try {
    return buildBackend(api, precision, options);
  } catch (err) {
    api.dispose();
    throw err;
  }
}

function buildBackend(api: CudaApi, precision: CudaPrecision, options: CudaBackendOptions): CudaBackend {
  const name = `cuda:${api.deviceIndex}`;
  const ginBytes = precision === "bf16" ? 2 : 4;
  const ginType = precision === "bf16" ? CUDA_R_16BF : CUDA_R_32F;
  if (api.computeCapability < 80 && precision === "bf16") {
    throw new DeviceError(`${api.deviceName} (compute capability ${api.computeCapability / 10}) has no bf16 tensor cores`, { option: "--precision", hint: "use --precision fp32 on this GPU" });
  }
  const batchTokens = options.batchTokens ?? 16384;
  const flash = precision === "bf16" && options.flashAttention !== false;
  const scoresLimit = options.scoresBytes ?? 2 * 2 ** 30;
  const attentionBlock = options.attentionBlock ?? 512;
  const stats = { layersUploaded: 0, residentLayers: 0, streamedLayers: 0, kernelsCached: false, kernelLaunches: 0, gemms: 0 };

  // Kernels: compiled for this device once, cached on disk.
  const compileOpts = compileOptions(api.computeCapability, { GIN_BF16: precision === "bf16" ? 1 : 0 });
  let module: unknown;
  const loaded = cachedCompile(KERNEL_SOURCE, compileOpts, api.nvrtcVersion(), api.computeCapability,
    () => api.compile(KERNEL_SOURCE, "shortgpt_kernels.cu", compileOpts),
    (image) => {
      try {
        module = api.loadModule(image);
        return true;
      } catch {
        return false;
      }
    }, options.cacheDir ?? kernelCacheDir());
  stats.kernelsCached = loaded.cached;
  module ??= api.loadModule(loaded.image);
  const kernelNames: KernelName[] = [...KERNEL_NAMES, ...(precision === "bf16" ? BF16_KERNEL_NAMES : [])];
  const functions = new Map<KernelName, unknown>(kernelNames.map((k) => [k, api.getFunction(module, k)]));
  const launch = (kernel: KernelName, grid: [number, number?, number?], block: number, args: KernelArg[]): void => {
    if (!functions.has(kernel)) throw new Error(`internal: kernel ${kernel} is not compiled for ${precision}`);
    api.launch(functions.get(kernel), kernel, grid, block, args);
    stats.kernelLaunches++;
  };
  const ptr = (p: DevicePtr | null | undefined): KernelArg => ({ ptr: p ?? null });
  const i32 = (v: number): KernelArg => ({ i32: v });
  const f32 = (v: number): KernelArg => ({ f32: v });
  const i64 = (v: number): KernelArg => ({ i64: v });

  const attention: AttentionContext = {
    api, ginType, ginBytes, scoresLimit, attentionBlock, flash,
    scratch: (slot, bytes) => work(slot, bytes),
    launch: (kernel, grid, block, args) => launch(kernel, grid, block, args),
    countGemms: (n) => void (stats.gemms += n),
  };
  const memory = new DeviceMemory(api);
  const allocOrTrim = (bytes: number, what: string): DevicePtr => memory.alloc(bytes, what);
  const work = (slot: string, bytes: number): DevicePtr => memory.scratch(slot, bytes);
  const uploadInts = (slot: string, values: Int32Array): DevicePtr => memory.uploadInts(slot, values);
  const newStates = (rows: number, dim: number): DeviceStates => {
    const bytes = rows * dim * 4;
    const p = memory.takeStates(bytes, `hidden states (${rows} x ${dim})`);
    return { rows, dim, owner: name, ptr: p, bytes, released: false };
  };
  const own = (states: HiddenStates): DeviceStates => {
    if (states.owner !== name || !("ptr" in states)) throw new OptionError(`hidden states made by backend ${states.owner} were given to backend ${name}`);
    const s = states as DeviceStates;
    if (s.released) throw new OptionError("hidden states were used after release");
    return s;
  };

  /**
   * out (rows, n) = in (rows, k) @ w (n, k)^T (+ out when accumulate); out is fp32 (the residual
   * stream, logits) unless asGin, for outputs that only feed a kernel making the next GEMM's input
   * (q/k/v, gate|up): those are written as GEMM inputs, halving their memory traffic.
   */
  const linear = (out: DevicePtr, input: DevicePtr, w: DevicePtr, rows: number, k: number, n: number, accumulate: boolean, asGin = false, ldInput = k): void => {
    api.gemm({ transA: CUBLAS_OP_T, transB: CUBLAS_OP_N, m: n, n: rows, k, a: w, aType: ginType, lda: k, b: input, bType: ginType, ldb: ldInput, beta: accumulate ? 1 : 0, c: out, cType: asGin ? ginType : CUDA_R_32F, ldc: n });
    stats.gemms++;
  };

  /** Uploads fp32 host values to dst as GEMM inputs (bf16 converted on the device) or as fp32. */
  const uploadTensor = (dst: DevicePtr, values: Float32Array, asGin: boolean): void => {
    if (!asGin || precision === "fp32") {
      api.upload(dst, values);
      return;
    }
    const staging = work("staging", values.byteLength);
    api.upload(staging, values);
    launch("to_gin", [blocksFor(values.length)], BLOCK, [ptr(staging), ptr(dst), i64(values.length)]);
  };

  /** Lays tensors out in one allocation; returns their pointers. */
  const uploadGroup = <K extends string>(parts: { name: K; values: Float32Array[]; gin: boolean }[], what: string): { base: DevicePtr; bytes: number; tensors: Record<K, DevicePtr> } => {
    let bytes = 0;
    const offsets = parts.map((part) => {
      const at = bytes;
      bytes += alignUp(part.values.reduce((n, v) => n + v.length, 0) * (part.gin ? ginBytes : 4));
      return at;
    });
    const base = allocOrTrim(bytes, what);
    const tensors = {} as Record<K, DevicePtr>;
    parts.forEach((part, i) => {
      const start = base + BigInt(offsets[i]!);
      tensors[part.name] = start;
      let at = 0;
      for (const v of part.values) {
        uploadTensor(start + BigInt(at * (part.gin ? ginBytes : 4)), v, part.gin);
        at += v.length;
      }
    });
    return { base, bytes, tensors };
  };

  const residentLayers = new Map<string, DeviceLayer>();
  const transientLayers: DeviceLayer[] = [];
  const heads = new Map<string, DeviceHead>();
  const embeddings = new Map<string, DeviceEmbedding>();
  const invFreqs = new Map<string, DevicePtr>();

  const fitsResident = (bytes: number, shape: LayerShape): boolean =>
    // Scores of the GEMM path are counted even with the fused kernel: packed windows (evaluation) and other head sizes take that path.
    api.memoryInfo().free - bytes > (options.reserveBytes ?? activationReserve(shape, batchTokens, ginBytes, scoresLimit));
  // A batch's packed layout goes up once and serves every layer (an upload from pageable memory waits for the device).
  const layouts = new LayoutCache((values) => {
    const p = allocOrTrim(values.byteLength, "packed layout");
    api.upload(p, values);
    return p;
  }, (p) => api.free(p));
  const rowStatsQueue = new DeferredDownloads(api, (bytes) => allocOrTrim(bytes, "row statistics"));

  const uploadLayer = (key: string, w: LayerWeightsF32, shape: LayerShape): DeviceLayer => {
    checkLayerWeights(w, shape);
    const parts: { name: DeviceTensorName | RecurrentTensorName; values: Float32Array[]; gin: boolean }[] = isRecurrentShape(shape) ? recurrentUploadParts(w, shape) : [];
    const add = (n: DeviceTensorName, values: (Float32Array | undefined)[], gin = false): void => {
      if (values.every((v) => v !== undefined)) parts.push({ name: n, values: values as Float32Array[], gin });
    };
    if (!isRecurrentShape(shape)) addAttentionParts(w, shape, add);
    const bytes = parts.reduce((n, p) => n + alignUp(p.values.reduce((m, v) => m + v.length, 0) * (p.gin ? ginBytes : 4)), 0);
    const resident = fitsResident(bytes, shape);
    const group = uploadGroup(parts, `layer weights ${key}`);
    stats.layersUploaded++;
    return { key, weights: undefined, base: group.base, bytes: group.bytes, resident, tensors: group.tensors, freed: false };
  };

  /** An attention layer's tensors: the fused q|k|v and gate|up matrices, norms and biases. */
  const addAttentionParts = (w: LayerWeightsF32, shape: LayerShape, add: (n: DeviceTensorName, values: (Float32Array | undefined)[], gin?: boolean) => void): void => {
    add("attnNorm", [w.attnNorm]);
    if (shape.layerNorm) add("attnNormBias", [w.attnNormBias]);
    add("wqkv", [w.wq, w.wk, w.wv], true);
    if (shape.qkvBias) {
      add("bq", [w.bq]);
      add("bk", [w.bk]);
      add("bv", [w.bv]);
    }
    if (shape.qkNorm) {
      add("qNorm", [w.qNorm]);
      add("kNorm", [w.kNorm]);
    }
    add("wo", [w.wo], true);
    if (shape.postNorms) {
      add("attnPostNorm", [w.attnPostNorm]);
      add("ffnPostNorm", [w.ffnPostNorm]);
    }
    add("ffnNorm", [w.ffnNorm]);
    if (shape.layerNorm) add("ffnNormBias", [w.ffnNormBias]);
    add("wUpGate", shape.plainMlp ? [w.wUp] : [w.wGate, w.wUp], true);
    add("wDown", [w.wDown], true);
    if (shape.outputBiases) {
      add("bo", [w.bo]);
      add("bUp", [w.bUp]);
      add("bDown", [w.bDown]);
    }
  };

  const invFreqFor = (shape: LayerShape): DevicePtr => {
    const k = `${shape.headDim}/${shape.ropeTheta}/${shape.ropeFreqFactors?.join(",") ?? ""}`;
    let p = invFreqs.get(k);
    if (p === undefined) {
      const values = ropeInverseFrequencies(shape.headDim, shape.ropeTheta, shape.ropeFreqFactors);
      p = allocOrTrim(values.byteLength, "RoPE frequencies");
      api.upload(p, values);
      invFreqs.set(k, p);
    }
    return p;
  };

  const checkShape = (shape: LayerShape): void => {
    if (isRecurrentShape(shape)) {
      checkRecurrentShape(shape);
      return;
    }
    if (shape.activation === "gelu_tanh_f16") throw new UnsupportedError("the cuda backend does not compute llama.cpp's float16 GELU table (gelu_tanh_f16)", { hint: "use the reference backend for comparisons with llama.cpp" });
    // The kernels take 0 for "no soft cap" and "no window": a zero, negative or non-finite value would silently turn the feature off.
    for (const [field, value] of [["attnScale", shape.attnScale], ["attnSoftcap", shape.attnSoftcap], ["slidingWindow", shape.slidingWindow], ["ropeAttentionFactor", shape.ropeAttentionFactor]] as const) {
      if (value !== undefined && !(value > 0 && Number.isFinite(value))) throw new OptionError(`layer shape ${field} is ${value}; the cuda backend needs a positive finite value or none`);
    }
    if (shape.nHeads % shape.nKvHeads !== 0 || shape.headDim % 2 !== 0 || shape.headDim > 2048) {
      throw new OptionError(`layer shape ${shape.nHeads} heads / ${shape.nKvHeads} KV heads / head size ${shape.headDim} is not a valid Llama layer`);
    }
  };

  /** With a cache: one sequence's seqLen new tokens from position cache.start, keys and values appended to the cache. */
  const runLayer = (x: DeviceStates, nWindows: number, seqLen: number, layer: DeviceLayer, shape: LayerShape, layout?: PackedLayout, cache?: LayerCache): DeviceStates => {
    const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps } = shape;
    const rows = nWindows * seqLen;
    const qDim = nHeads * headDim;
    const kvDim = nKvHeads * headDim;
    const qkvDim = qDim + 2 * kvDim;
    const t = layer.tensors;
    const layerNorm = shape.layerNorm ? 1 : 0;
    if (seqLen > SOFTMAX_PER_THREAD * 1024) throw new UnsupportedError(`the cuda backend's attention handles windows of up to ${SOFTMAX_PER_THREAD * 1024} tokens, got ${seqLen}`, { option: "--seq-len" });

    const decodePositions = cache ? Int32Array.from({ length: seqLen }, (_, i) => cache.start + i) : undefined;
    const packed = layout ? layouts.get(layout) : undefined;
    const positions = shape.noRope ? undefined : packed ? packed.positions : decodePositions && uploadInts("positions", decodePositions);
    const branches = packed?.branches;
    const rule = scoreRule(shape);

    // Attention block
    const xn = work("xn", rows * Math.max(dim, qDim) * ginBytes);
    launch("norm_rows", [rows], BLOCK, [ptr(x.ptr), ptr(null), ptr(t.attnNorm), ptr(t.attnNormBias), ptr(xn), i32(dim), f32(normEps), i32(layerNorm)]);
    const qkv = work("qkv", rows * qkvDim * ginBytes);
    linear(qkv, xn, t.wqkv!, rows, dim, qkvDim, false, true);
    const headBlock = Math.max(32, Math.ceil(headDim / 2 / 32) * 32);
    const invFreq = shape.noRope ? undefined : invFreqFor(shape);
    const qh = work("qh", rows * qDim * ginBytes);
    const kh = work("kh", rows * kvDim * ginBytes);
    const vh = work("vh", rows * kvDim * ginBytes);
    const toHeads = (col0: number, bias: DevicePtr | undefined, norm: DevicePtr | undefined, rope: boolean, n: number, dst: DevicePtr, dstLen = seqLen, dstOffset = 0): void =>
      launch("qkv_heads", [rows, n], headBlock, [
        ptr(qkv), i32(qkvDim), i32(col0), ptr(bias), ptr(norm), f32(normEps), ptr(rope ? invFreq : null), ptr(rope ? positions : null),
        i32(seqLen), i32(n), i32(headDim), ptr(dst), i32(dstLen), i32(dstOffset),
      ]);
    toHeads(0, t.bq, t.qNorm, !shape.noRope, nHeads, qh);
    const att = work("att", rows * qDim * ginBytes);
    if (cache) {
      toHeads(qDim, t.bk, t.kNorm, !shape.noRope, nKvHeads, cache.k, cache.capacity, cache.start);
      toHeads(qDim + kvDim, t.bv, undefined, false, nKvHeads, cache.v, cache.capacity, cache.start);
      cachedAttention(attention, { qh, kCache: cache.k, vCache: cache.v, capacity: cache.capacity, start: cache.start, n: seqLen, out: att, nHeads, nKvHeads, headDim, rule });
    } else {
      toHeads(qDim, t.bk, t.kNorm, !shape.noRope, nKvHeads, kh);
      toHeads(qDim + kvDim, t.bv, undefined, false, nKvHeads, vh);
      causalAttention(attention, { qh, kh, vh, out: att, branches, positions: packed?.positions, nWindows, seqLen, nHeads, nKvHeads, headDim, rule });
    }
    const out = newStates(rows, dim);
    residualAdd(x.ptr, out.ptr, att, t.wo!, rows, qDim, dim, t.bo, t.attnPostNorm, normEps);

    // MLP block
    launch("norm_rows", [rows], BLOCK, [ptr(out.ptr), ptr(null), ptr(t.ffnNorm), ptr(t.ffnNormBias), ptr(xn), i32(dim), f32(normEps), i32(layerNorm)]);
    const gated = shape.plainMlp ? 0 : 1;
    const upWidth = (gated ? 2 : 1) * hiddenDim;
    const gu = work("gu", rows * upWidth * ginBytes);
    linear(gu, xn, t.wUpGate!, rows, dim, upWidth, false, true);
    const act = work("act", rows * hiddenDim * ginBytes);
    launch("mlp_activation", [blocksFor(rows * hiddenDim)], BLOCK, [ptr(gu), ptr(t.bUp), ptr(act), i32(hiddenDim), i32(gated), i32(shape.activation === "gelu_tanh" ? 1 : 0), i64(rows * hiddenDim)]);
    residualAdd(out.ptr, out.ptr, act, t.wDown!, rows, hiddenDim, dim, t.bDown, t.ffnPostNorm, normEps);
    return out;
  };

  /**
   * A block's output projection added to the residual stream: out = x + (input @ w^T + bias), or
   * with a sandwich norm (Gemma 2/3) out = x + RMSNorm(input @ w^T + bias) * postNorm. x may be
   * out (the add in place); without a norm the GEMM accumulates into out directly.
   */
  const residualAdd = (x: DevicePtr, out: DevicePtr, input: DevicePtr, w: DevicePtr, rows: number, k: number, dim: number, bias: DevicePtr | undefined, postNorm: DevicePtr | undefined, eps: number): void => {
    const n = rows * dim;
    if (!postNorm) {
      if (x !== out) api.copy(out, x, n * 4);
      linear(out, input, w, rows, k, dim, true);
      if (bias) launch("add_bias", [blocksFor(n)], BLOCK, [ptr(out), ptr(bias), i32(dim), i64(n)]);
      return;
    }
    const proj = work("blockOutput", n * 4);
    linear(proj, input, w, rows, k, dim, false);
    if (bias) launch("add_bias", [blocksFor(n)], BLOCK, [ptr(proj), ptr(bias), i32(dim), i64(n)]);
    launch("residual_add_normed", [rows], BLOCK, [ptr(x), ptr(proj), ptr(postNorm), ptr(out), i32(dim), f32(eps)]);
  };

  const recurrent: RecurrentContext = {
    ginBytes,
    scratch: (slot, bytes) => work(slot, bytes),
    launch: (kernel, grid, block, args) => launch(kernel, grid, block, args),
    linear: (out, input, w, rows, k, n, asGin = false, ldInput = k) => linear(out, input, w, rows, k, n, false, asGin, ldInput),
    residualAdd: (x, out, input, w, rows, k, dim) => residualAdd(x, out, input, w, rows, k, dim, undefined, undefined, 0),
    copy: (dst, src, bytes) => api.copy(dst, src, bytes),
  };

  /** A recurrent layer (recurrent.ts); the output states carry RWKV-7's value residual on, started by the first block that finds none. */
  const runRecurrent = (x: DeviceStates, nWindows: number, seqLen: number, layer: DeviceLayer, shape: LayerShape): DeviceStates => {
    const out = newStates(nWindows * seqLen, shape.dim);
    let side = x.side;
    runRecurrentLayer(recurrent, x.ptr, out.ptr, nWindows, seqLen, layer.tensors, shape, {
      vFirst: side?.vFirst,
      start: () => {
        side = { vFirst: memory.takeStates(x.bytes, `RWKV-7 value residual (${x.rows} x ${x.dim})`), bytes: x.bytes, holders: 0 };
        return side.vFirst;
      },
    });
    if (!side) return out;
    side.holders++;
    return { ...out, side };
  };

  const freeLayer = (layer: DeviceLayer): void => {
    if (layer.freed) return;
    layer.freed = true;
    api.free(layer.base);
  };

  const decode: DecodeSupport = {
    createKvCache(nSlots, capacity, shape) {
      checkShape(shape);
      refuseRecurrentDecoding(shape);
      if (!(Number.isInteger(nSlots) && nSlots > 0 && Number.isInteger(capacity) && capacity > 0)) throw new OptionError(`a key/value cache needs positive slots and capacity, got ${nSlots} and ${capacity}`);
      if (!flashKernel(attention, shape.headDim, false) && capacity > SOFTMAX_PER_THREAD * 1024) {
        throw new UnsupportedError(`the cuda backend decodes up to ${SOFTMAX_PER_THREAD * 1024} positions without its fused attention kernel (head size ${shape.headDim}, ${precision}), asked for ${capacity}`, { option: "--max-tokens", hint: "generate fewer tokens, or use --precision bf16 with a head size of 64 or 128" });
      }
      const kvDim = shape.nKvHeads * shape.headDim;
      const slotBytes = alignUp(2 * capacity * kvDim * ginBytes);
      const base = allocOrTrim(nSlots * slotBytes, `key/value cache (${nSlots} layers x ${capacity} positions)`);
      const cache: DeviceKvCache = { owner: name, capacity, length: 0, base, slotBytes, kvDim, nSlots, released: false };
      return cache;
    },
    async runLayerCached(x, layer, shape, handle, slot) {
      const s = own(x);
      const cache = handle as DeviceKvCache;
      if (handle.owner !== name || !("base" in handle) || cache.released) throw new OptionError(`the key/value cache was not made by ${name} or was released`);
      checkShape(shape);
      refuseRecurrentDecoding(shape);
      if (!(Number.isInteger(slot) && slot >= 0 && slot < cache.nSlots)) throw new OptionError(`cache slot ${slot} is outside 0..${cache.nSlots - 1}`);
      if (shape.nKvHeads * shape.headDim !== cache.kvDim || s.dim !== shape.dim) throw new OptionError("the layer's shape does not match the key/value cache or the hidden states");
      if (cache.length + s.rows > cache.capacity) throw new OptionError(`${s.rows} new tokens after ${cache.length} do not fit a cache of ${cache.capacity} positions`);
      const l = layer as DeviceLayer;
      if (!("base" in layer) || l.freed) throw new OptionError(`layer ${layer.key} is not prepared on ${name}`);
      const k = cache.base + BigInt(slot * cache.slotBytes);
      const v = k + BigInt(cache.capacity * cache.kvDim * ginBytes);
      return runLayer(s, 1, s.rows, l, shape, undefined, { k, v, capacity: cache.capacity, start: cache.length });
    },
    releaseKvCache(handle) {
      const cache = handle as DeviceKvCache;
      if (cache.released || !("base" in handle)) return;
      cache.released = true;
      api.free(cache.base);
    },
  };

  const backend: CudaBackend = {
    name,
    computesRecurrentLayers: CUDA_RECURRENT_KINDS,
    // Gemma 2/3 and Phi-3: every feature, on both attention paths and in decoding (see attention.ts's ScoreRule).
    shapeFeatures: ALL_ATTENTION_FAMILY_FEATURES,
    decode,
    threads: 1,
    batchTokens,
    deviceName: api.deviceName,
    precision,
    stats,
    synchronize: () => api.synchronize(),
    async upload(x, rows, dim) {
      if (x.length !== rows * dim) throw new OptionError(`hidden states have ${x.length} values, expected ${rows} rows x ${dim}`);
      const states = newStates(rows, dim);
      api.upload(states.ptr, x);
      return states;
    },
    async prepareEmbedding(key, load, vocabSize, dim) {
      const have = embeddings.get(key);
      if (have) {
        embeddings.delete(key); // most recently used last: the cache lets the oldest go first
        embeddings.set(key, have);
        return have;
      }
      const w: EmbeddingWeights = load();
      if (w.table.length !== vocabSize * dim) throw new OptionError(`embedding has ${w.table.length} values, expected ${vocabSize} x ${dim}`);
      if (w.positions && w.positions.length % dim !== 0) throw new OptionError(`position embedding has ${w.positions.length} values, not a multiple of ${dim}`);
      // fp32, as the residual stream starts from it exactly (a bf16 checkpoint's rows are exact in fp32 too).
      const group = uploadGroup([
        { name: "table", values: [w.table], gin: false },
        ...(w.positions ? [{ name: "positions" as const, values: [w.positions], gin: false }] : []),
      ], `embedding ${key}`);
      const embedding: DeviceEmbedding = {
        key, weights: undefined, vocabSize, dim, base: group.base, tensors: group.tensors as DeviceEmbedding["tensors"],
        nPositions: w.positions ? w.positions.length / dim : 0, scale: w.scale, freed: false,
      };
      embeddings.set(key, embedding);
      // Each pass prepares the embedding rows of its own tokens under its own key: without a
      // bound, every set stayed on the device for the backend's life.
      for (const [oldKey, old] of embeddings) {
        if (embeddings.size <= MAX_EMBEDDINGS) break;
        embeddings.delete(oldKey);
        old.freed = true;
        api.free(old.base);
      }
      return embedding;
    },
    async embed(prepared, ids, seqLen, positions) {
      const e = prepared as DeviceEmbedding;
      if (!("base" in prepared)) throw new OptionError(`embedding ${prepared.key} is not prepared on ${name}`);
      if (e.freed) throw new Error(`internal: embedding ${e.key} was released from ${name} (more than ${MAX_EMBEDDINGS} prepared since); prepare it again`);
      checkTokenIds(ids, e.vocabSize);
      if (positions && positions.length !== ids.length) throw new OptionError(`positions has ${positions.length} values, expected ${ids.length}`);
      if (e.tensors.positions) {
        if (positions) for (const p of positions) checkPosition(p, e.nPositions);
        else if (ids.length > 0) checkPosition(Math.min(seqLen, ids.length) - 1, e.nPositions);
      }
      const states = newStates(ids.length, e.dim);
      if (ids.length === 0) return states;
      launch("embed_rows", [ids.length], BLOCK, [
        ptr(e.tensors.table), ptr(uploadInts("ids", ids)), f32(e.scale ?? 0), ptr(e.tensors.positions),
        ptr(e.tensors.positions && positions ? uploadInts("embedPositions", positions) : null), i32(seqLen), ptr(states.ptr), i32(e.dim),
      ]);
      return states;
    },
    async readRows(states, rows) {
      const s = own(states);
      if (!rows) {
        const out = new Float32Array(s.rows * s.dim);
        api.download(out, s.ptr);
        return out;
      }
      checkRowIndices(rows, s.rows, "readRows");
      const out = new Float32Array(rows.length * s.dim);
      if (rows.length === 0) return out;
      const dst = work("gather", out.byteLength);
      launch("gather_rows", [rows.length], BLOCK, [ptr(s.ptr), ptr(uploadInts("rows", rows)), ptr(dst), i32(s.dim)]);
      api.download(out, dst);
      return out;
    },
    release(states) {
      const s = own(states);
      s.released = true;
      memory.giveStates(s.ptr, s.bytes);
      if (s.side && --s.side.holders === 0) memory.giveStates(s.side.vFirst, s.side.bytes);
    },
    async prepareLayer(key, load, shape) {
      checkShape(shape);
      const have = residentLayers.get(key);
      if (have) return have;
      const layer = uploadLayer(key, load(), shape);
      if (layer.resident) {
        residentLayers.set(key, layer);
        stats.residentLayers++;
      } else {
        // Streamed: keep the layer in use (the one before this) and this one; free older ones.
        while (transientLayers.length > 1) freeLayer(transientLayers.shift()!);
        transientLayers.push(layer);
        stats.streamedLayers++;
      }
      return layer;
    },
    async prepareHead(key, load, vocabSize) {
      const have = heads.get(key);
      if (have) return have;
      const h: HeadWeights = load();
      const dim = h.finalNorm.length;
      if (h.logitSoftcap !== undefined && !(h.logitSoftcap > 0 && Number.isFinite(h.logitSoftcap))) throw new OptionError(`head logitSoftcap is ${h.logitSoftcap}; the cuda backend needs a positive finite value or none`);
      if (h.classifier.length !== vocabSize * dim) throw new OptionError(`classifier has ${h.classifier.length} values, expected ${vocabSize * dim}`);
      const group = uploadGroup([
        { name: "finalNorm", values: [h.finalNorm], gin: false },
        ...(h.finalNormBias ? [{ name: "finalNormBias" as const, values: [h.finalNormBias], gin: false }] : []),
        { name: "classifier", values: [h.classifier], gin: true },
      ], `head weights ${key}`);
      const tensors = group.tensors as DeviceHead["tensors"];
      const head: DeviceHead = { key, weights: undefined, vocabSize, base: group.base, bytes: group.bytes, tensors, dim, logitSoftcap: h.logitSoftcap };
      heads.set(key, head);
      return head;
    },
    async runLayer(x, nWindows, seqLen, layer, shape, layout) {
      const s = own(x);
      checkShape(shape);
      if (!(Number.isInteger(nWindows) && nWindows > 0 && Number.isInteger(seqLen) && seqLen > 0)) throw new OptionError(`runLayer needs positive integer nWindows and seqLen, got ${nWindows} and ${seqLen}`);
      if (s.rows !== nWindows * seqLen || s.dim !== shape.dim) throw new OptionError(`hidden states of ${s.rows} x ${s.dim} do not hold ${nWindows} windows of ${seqLen} x ${shape.dim}`);
      if (layout) checkLayout(layout, nWindows, seqLen);
      const l = layer as DeviceLayer;
      if (!("base" in layer) || l.freed) throw new OptionError(`layer ${layer.key} is not prepared on ${name}`);
      if (isRecurrentShape(shape)) {
        if (layout) throw new UnsupportedError(`the cuda backend scans ${layerKind(shape)} layers over plain windows only, not packed sequences`, { option: "--backend", hint: "use a CPU backend for packed (shared-prefix) evaluation of recurrent models" });
        return runRecurrent(s, nWindows, seqLen, l, shape);
      }
      return runLayer(s, nWindows, seqLen, l, shape, layout);
    },
    rowStats(a, b, wanted: RowStatsWanted, rows): Promise<RowStats> {
      const x = own(a);
      const y = own(b);
      if (x.rows !== y.rows || x.dim !== y.dim) throw new OptionError(`rowStats: states of ${x.rows}x${x.dim} and ${y.rows}x${y.dim} differ in shape`);
      if (rows) checkRowIndices(rows, x.rows, "rowStats");
      const n = rows ? rows.length : x.rows;
      if (n === 0 || (!wanted.cosine && !wanted.magnitude)) return Promise.resolve({});
      const at = rowStatsQueue.reserve(n * ((wanted.cosine ? 1 : 0) + (wanted.magnitude ? 1 : 0)));
      const cos = wanted.cosine ? at.device : undefined;
      const mag = wanted.magnitude ? at.device + BigInt(wanted.cosine ? n * 8 : 0) : undefined;
      launch("row_stats", [n], BLOCK, [ptr(x.ptr), ptr(y.ptr), ptr(rows ? uploadInts("rows", rows) : null), i32(x.dim), ptr(cos), ptr(mag)]);
      return at.result((values) => ({
        ...(wanted.cosine ? { cosine: values.slice(0, n) } : {}),
        ...(wanted.magnitude ? { magnitude: values.slice(wanted.cosine ? n : 0) } : {}),
      }));
    },
    async runHead(x, rows, prepared, normEps, targets): Promise<HeadResult> {
      const s = own(x);
      const head = prepared as DeviceHead;
      if (!("base" in prepared)) throw new OptionError(`head ${prepared.key} is not prepared on ${name}`);
      checkRowIndices(rows, s.rows, "runHead");
      const n = rows.length;
      const vocab = head.vocabSize;
      if (targets) {
        if (targets.length !== n) throw new OptionError(`targets has ${targets.length} values, expected ${n}`);
        for (const id of targets) if (!(id >= 0 && id < vocab)) throw new OptionError(`target id ${id} is outside the vocabulary (0..${vocab - 1})`);
      }
      if (n === 0) return targets ? { kind: "nll", logSumExp: new Float32Array(0), targetLogit: new Float32Array(0) } : { kind: "logits", logits: new Float32Array(0) };
      const xn = work("headNorm", n * s.dim * ginBytes);
      const layerNorm = head.tensors.finalNormBias !== undefined ? 1 : 0;
      launch("norm_rows", [n], BLOCK, [ptr(s.ptr), ptr(uploadInts("rows", rows)), ptr(head.tensors.finalNorm), ptr(head.tensors.finalNormBias), ptr(xn), i32(s.dim), f32(normEps), i32(layerNorm)]);
      const logits = work("logits", n * vocab * 4);
      linear(logits, xn, head.tensors.classifier, n, s.dim, vocab, false);
      if (head.logitSoftcap !== undefined) launch("softcap_in_place", [blocksFor(n * vocab)], BLOCK, [ptr(logits), f32(head.logitSoftcap), i64(n * vocab)]);
      if (!targets) {
        const out = new Float32Array(n * vocab);
        api.download(out, logits);
        return { kind: "logits", logits: out };
      }
      const lse = work("lse", n * 4);
      const tgt = work("targetLogit", n * 4);
      launch("head_logsumexp", [n], BLOCK, [ptr(logits), i32(vocab), ptr(uploadInts("targets", targets)), ptr(lse), ptr(tgt)]);
      const logSumExp = new Float32Array(n);
      const targetLogit = new Float32Array(n);
      api.download(logSumExp, lse);
      api.download(targetLogit, tgt);
      return { kind: "nll", logSumExp, targetLogit };
    },
    async dispose() {
      rowStatsQueue.dispose();
      api.synchronize();
      layouts.dispose();
      for (const l of residentLayers.values()) freeLayer(l);
      residentLayers.clear();
      for (const l of transientLayers) freeLayer(l);
      transientLayers.length = 0;
      for (const h of heads.values()) api.free(h.base);
      heads.clear();
      for (const e of embeddings.values()) {
        e.freed = true;
        api.free(e.base);
      }
      embeddings.clear();
      for (const p of invFreqs.values()) api.free(p);
      invFreqs.clear();
      memory.dispose();
      api.dispose();
    },
  };
  return backend;
}

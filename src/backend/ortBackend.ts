// The ONNX Runtime backends: one decoder layer or the head as an ONNX graph built in memory,
// run by onnxruntime-node (native CPU, the fast path) or onnxruntime-web (WebAssembly SIMD,
// the fallback that installs everywhere). Sessions are cached per graph kind and shape.

import { createRequire } from "node:module";
import { dirname } from "node:path";
import { pathToFileURL } from "node:url";
import { OptionError, UnsupportedError } from "../errors.js";
import { type HeadResult, type HostKernels, type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims, type PackedLayout, isRecurrentShape, type SideStreams } from "./backend.js";
import { buildHeadGraph, buildLayerGraph, buildLinearGraph, DEFAULT_GRAPH_OPTIONS, type GraphOptions, type HeadMode } from "./onnx/llamaGraphs.js";
import { encodeModel } from "./onnx/model.js";
import { type HostBackend, hostBackend } from "./hostBackend.js";
import type { LinearKernel } from "./linearKernel.js";
import { batchedRecurrentLayer, hasBatchedRecurrentLayer } from "./recurrentLayer.js";
import { checkHeadArgs, checkLayerArgs, createReferenceKernels } from "./referenceBackend.js";

export type OrtFlavor = "node" | "web";

/** The part of the onnxruntime API both packages share (both re-export onnxruntime-common). */
type Ort = Pick<typeof import("onnxruntime-node"), "InferenceSession" | "Tensor" | "env">;
type Session = Awaited<ReturnType<Ort["InferenceSession"]["create"]>>;
type OrtTensor = InstanceType<Ort["Tensor"]>;
/** Mutable while it is filled; onnxruntime reads it as its (readonly) feeds map. */
type Feeds = Record<string, OrtTensor>;
type SessionOptions = NonNullable<Parameters<Ort["InferenceSession"]["create"]>[1]>;

export interface OrtBackendOptions {
  threads: number;
  flavor: OrtFlavor;
  /** Graph variants, for benchmarks (Gemm and MatMul+Transpose measured equal within noise). */
  graph?: GraphOptions;
  /** onnxruntime's CPU memory arena (default on): reuses activation buffers across runs. */
  cpuMemArena?: boolean;
  /** Whether idle pool threads spin-wait for work (onnxruntime's default, on). */
  spinning?: boolean;
  /**
   * Most token rows (windows * seqLen) per session run; larger batches run in chunks of whole
   * windows. MLAS's fp32 GEMM slows once the (rows, dim) activation outgrows the last-level
   * cache (one thread, K=2048, N=5632: ~48 GFLOP/s at 4096 rows, 62-70 at 512-2048), and
   * smaller runs keep the attention scores small; a TinyLlama layer on 2 threads ran at ~111
   * GFLOP/s in one run of 4096 rows, 117-134 in runs of 512-1024. Default 1024.
   */
  maxRowsPerRun?: number;
}

/** What the backend did, so tests can prove the fast path ran. */
export interface OrtBackendStats {
  sessionsCreated: number;
  sessionRuns: number;
}

export interface OrtKernels extends HostKernels {
  readonly flavor: OrtFlavor;
  readonly stats: Readonly<OrtBackendStats>;
}

export type OrtBackend = HostBackend<OrtKernels> & { readonly flavor: OrtFlavor; readonly stats: Readonly<OrtBackendStats> };

export async function createOrtBackend(options: OrtBackendOptions): Promise<OrtBackend> {
  const kernels = await createOrtKernels(options);
  return { ...hostBackend(kernels), flavor: kernels.flavor, stats: kernels.stats };
}

const PACKAGE: Record<OrtFlavor, string> = { node: "onnxruntime-node", web: "onnxruntime-web" };

/** onnxruntime-web's dist folder as a file URL prefix, where its .wasm and .mjs loaders live. */
function webDistUrl(): string {
  const main = createRequire(import.meta.url).resolve("onnxruntime-web");
  return pathToFileURL(dirname(main)).href + "/";
}

async function loadRuntime(flavor: OrtFlavor, threads: number): Promise<Ort> {
  try {
    if (flavor === "node") return await import("onnxruntime-node");
    const ort = await import("onnxruntime-web");
    // Process-wide and read once, when the first session loads the .wasm: later backends
    // share the thread count of the first. Threads work in Node (worker_threads): 2 ran 1.7x 1.
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.wasmPaths = webDistUrl();
    return ort;
  } catch (e) {
    throw new UnsupportedError(`the ${PACKAGE[flavor]} backend cannot load: ${e instanceof Error ? e.message : String(e)}`, {
      hint: flavor === "node" ? "reinstall onnxruntime-node (its CPU binary ships in the npm package), or use the web backend" : "reinstall onnxruntime-web",
    });
  }
}

/** float32 tensor data out of a session result, checked rather than cast. */
function floatData(result: Awaited<ReturnType<Session["run"]>>, name: string): Float32Array {
  const data = result[name]?.data;
  if (!(data instanceof Float32Array)) throw new Error(`onnxruntime returned no float32 output ${name}`);
  return data;
}

/** The onnxruntime graphs on host arrays (createOrtBackend wraps them). */
export async function createOrtKernels(options: OrtBackendOptions): Promise<OrtKernels> {
  const { threads, flavor } = options;
  if (!(Number.isInteger(threads) && threads > 0)) throw new OptionError(`threads must be a positive integer, got ${threads}`, { option: "threads" });
  const graphOptions = options.graph ?? DEFAULT_GRAPH_OPTIONS;
  const maxRowsPerRun = options.maxRowsPerRun ?? 1024;
  const ort = await loadRuntime(flavor, threads);
  const sessionOptions: SessionOptions = {
    executionProviders: [flavor === "node" ? "cpu" : "wasm"],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    enableCpuMemArena: options.cpuMemArena ?? true,
    ...(options.spinning === false ? { extra: { session: { intra_op: { allow_spinning: "0" } } } } : {}),
  };
  const sessions = new Map<string, Promise<Session>>();
  const stats: OrtBackendStats = { sessionsCreated: 0, sessionRuns: 0 };

  // Caches the promise, not the session, so concurrent first calls build one session.
  const session = (key: string, build: () => Uint8Array): Promise<Session> => {
    let s = sessions.get(key);
    if (!s) {
      s = ort.InferenceSession.create(build(), sessionOptions).catch((e: unknown) => {
        sessions.delete(key);
        throw new UnsupportedError(`the ${PACKAGE[flavor]} backend cannot create a session for ${key}: ${e instanceof Error ? e.message : String(e)}`);
      });
      stats.sessionsCreated++;
      sessions.set(key, s);
    }
    return s;
  };
  const run = async (s: Session, feeds: Feeds): Promise<Awaited<ReturnType<Session["run"]>>> => {
    stats.sessionRuns++;
    return s.run(feeds);
  };
  const f32 = (data: Float32Array, dims: readonly number[]): OrtTensor => new ort.Tensor("float32", data, dims);

  /**
   * Runs `s` over nUnits units (windows or rows) in chunks of at most perRun, with the shared
   * feeds plus `chunkFeeds(first, count)`, and concatenates each output (`outputs`: name ->
   * floats per unit). One chunk returns onnxruntime's arrays without a copy.
   */
  const runChunked = async (s: Session, nUnits: number, perRun: number, shared: Feeds, chunkFeeds: (first: number, count: number) => Feeds, outputs: Record<string, number>): Promise<Record<string, Float32Array>> => {
    const names = Object.keys(outputs);
    if (perRun >= nUnits) {
      const result = await run(s, { ...shared, ...chunkFeeds(0, nUnits) });
      return Object.fromEntries(names.map((n) => [n, floatData(result, n)]));
    }
    const out = Object.fromEntries(names.map((n) => [n, new Float32Array(nUnits * outputs[n]!)]));
    for (let first = 0; first < nUnits; first += perRun) {
      const count = Math.min(perRun, nUnits - first);
      const result = await run(s, { ...shared, ...chunkFeeds(first, count) });
      for (const n of names) out[n]!.set(floatData(result, n), first * outputs[n]!);
    }
    return out;
  };

  /** x @ w^T in one Gemm session per (nIn, nOut), over the rows in runs of at most maxRowsPerRun. */
  const linear: LinearKernel = async (x, rows, w, nOut, nIn) => {
    const s = await session(`linear ${nIn}->${nOut} ${graphOptions.linear}`, () => encodeModel(buildLinearGraph(nIn, nOut, graphOptions)));
    const chunk = (first: number, count: number): Feeds => ({ x: f32(x.subarray(first * nIn, (first + count) * nIn), [count, nIn]) });
    const { y } = await runChunked(s, rows, maxRowsPerRun, { w: f32(w, [nOut, nIn]) }, chunk, { y: nOut });
    return y!;
  };

  const recurrentKernels = createReferenceKernels();
  return {
    name: `onnxruntime-${flavor}`,
    threads,
    flavor,
    stats,
    async runLayer(x: Float32Array, nWindows: number, seqLen: number, weights: LayerWeightsF32, shape: LayerShape, layout?: PackedLayout, side?: SideStreams): Promise<Float32Array> {
      checkLayerArgs(x, nWindows, seqLen, weights, shape, layout);
      // A recurrent layer's scan is sequential: Mamba's, RWKV-4's and RWKV-7's projections run here over every window's tokens at once,
      // the scan on the host; the other recurrent kinds (no batched twin yet) run whole on the plain kernels.
      if (hasBatchedRecurrentLayer(shape)) return batchedRecurrentLayer(x, nWindows, seqLen, weights, shape, linear, side, threads);
      if (isRecurrentShape(shape)) return recurrentKernels.runLayer(x, nWindows, seqLen, weights, shape, layout, side);
      // The batch dim is symbolic, so one session per (shape, seqLen, packed or not) serves every batch size.
      const packed = layout !== undefined;
      const s = await session(`layer ${JSON.stringify(shape)} T=${seqLen} ${graphOptions.linear}${packed ? " packed" : ""}`, () => encodeModel(buildLayerGraph(shape, seqLen, graphOptions, packed)));
      const { dim } = shape;
      const shared: Feeds = {};
      for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) shared[name] = f32(weights[name]!, dims);
      const window = seqLen * dim;
      const perRun = Math.max(1, Math.floor(maxRowsPerRun / seqLen));
      // Packed windows: each token's position and branch, as int64 (the graph builds masks and RoPE rows from them).
      const positions = layout && !shape.noRope ? BigInt64Array.from(layout.positions, (p) => BigInt(p)) : undefined;
      const branches = layout ? BigInt64Array.from(layout.branches, (b) => BigInt(b)) : undefined;
      const tokens = (data: BigInt64Array, first: number, count: number): OrtTensor => new ort.Tensor("int64", data.subarray(first * seqLen, (first + count) * seqLen), [count * seqLen]);
      const chunk = (first: number, count: number): Feeds => ({
        x: f32(x.subarray(first * window, (first + count) * window), [count * seqLen, dim]),
        ...(positions ? { positions: tokens(positions, first, count) } : {}),
        ...(branches ? { branches: tokens(branches, first, count) } : {}),
      });
      const { y } = await runChunked(s, nWindows, perRun, shared, chunk, { y: window });
      return y!;
    },
    async runHead(x, nRows, head, vocabSize, normEps, targets): Promise<HeadResult> {
      const dim = checkHeadArgs(x, nRows, head, vocabSize, targets);
      const mode: HeadMode = targets ? "nll" : "logits";
      const withLayerNorm = head.finalNormBias !== undefined;
      const softcap = head.logitSoftcap;
      const key = `head C=${dim} V=${vocabSize} eps=${normEps} ${mode} ${graphOptions.linear}${withLayerNorm ? " layernorm" : ""}${softcap === undefined ? "" : ` softcap=${softcap}`}`;
      const s = await session(key, () => encodeModel(buildHeadGraph(dim, vocabSize, normEps, mode, graphOptions, withLayerNorm, softcap)));
      const shared: Feeds = {
        finalNorm: f32(head.finalNorm, [dim]), classifier: f32(head.classifier, [vocabSize, dim]),
        ...(head.finalNormBias ? { finalNormBias: f32(head.finalNormBias, [dim]) } : {}),
      };
      const ids = targets ? BigInt64Array.from(targets, (t) => BigInt(t)) : undefined;
      const chunk = (first: number, count: number): Feeds => ({
        x: f32(x.subarray(first * dim, (first + count) * dim), [count, dim]),
        ...(ids ? { targets: new ort.Tensor("int64", ids.subarray(first, first + count), [count]) } : {}),
      });
      if (!ids) {
        const { logits } = await runChunked(s, nRows, maxRowsPerRun, shared, chunk, { logits: vocabSize });
        return { kind: "logits", logits: logits! };
      }
      const { logSumExp, targetLogit } = await runChunked(s, nRows, maxRowsPerRun, shared, chunk, { logSumExp: 1, targetLogit: 1 });
      return { kind: "nll", logSumExp: logSumExp!, targetLogit: targetLogit! };
    },
    async dispose(): Promise<void> {
      const all = [...sessions.values()];
      sessions.clear();
      for (const s of await Promise.allSettled(all)) if (s.status === "fulfilled") await s.value.release();
    },
  };
}

// Layer-by-layer execution: every window passes through layer 0, then layer 1, and so on,
// with at most two layers' weights in memory (the one computing, the next one loading), so a checkpoint larger than RAM can be scored and
// evaluated. The arithmetic is the backend's; this module only moves data.

import { createHash } from "node:crypto";
import { checkBackendComputes, type DecoderBackend, type EmbeddingWeights, type HiddenStates, type LayerShape, type PackedLayout, type PreparedEmbedding, type PreparedHead, type PreparedLayer } from "../backend/backend.js";
import type { PerplexityWindow, Window } from "../data/windows.js";
import { OptionError } from "../errors.js";
import { perplexityFromWindows, type PerplexityResult } from "../eval/perplexity.js";
import { BlockInfluence, type BlockInfluenceResult } from "../metrics/blockInfluence.js";
import { readTensorRows, type TensorProvider } from "../tensor/provider.js";
import { clearF32Pool, recycleF32 } from "../tensor/hostMemory.js";
import { checkTokenIds } from "../backend/embedding.js";
import { PendingResults } from "../util/pendingResults.js";
import { assertShapeFeatures } from "../backend/shapeFeatures.js";
import { layerShape, type LlamaConfig, type LlamaTensorNames, loadHeadWeights, loadLayerTensor, loadLayerTensorBf16, loadLlamaLayer } from "./llama.js";

export { layerShape };

/** A checkpoint's lazy view: config, tensor access, and the family's tensor names. */
export interface StreamingSource {
  config: LlamaConfig;
  provider: TensorProvider;
  names: LlamaTensorNames;
}

/** The windows of one batch, as hooks see them. */
export interface BatchInfo {
  /** Indices (into the windows the run was given) of the batch's windows, in row order. */
  windows: readonly number[];
  seqLen: number;
}

/**
 * Called with the residual stream entering and leaving each layer that runs, batch by batch,
 * where the backend holds it: hooks ask the backend for the statistics they need, so that on a
 * GPU only small sums cross to the host. `layer` is the original index.
 */
export interface StreamHooks {
  onLayer(layer: number, input: HiddenStates, output: HiddenStates, batch: BatchInfo, backend: DecoderBackend): Promise<void>;
  /**
   * Awaited once after the last layer. A hook may leave the backend's answers pending until
   * then (rowStats promises): a device backend then never waits for the device between layers.
   */
  settle?(): Promise<void>;
}

export interface StreamingOptions {
  backend: DecoderBackend;
  skip?: ReadonlySet<number>;
  hooks?: StreamHooks;
  /** Most tokens per backend call; windows of equal length are batched up to it (default: the backend's). */
  batchTokens?: number;
  /** Token-layers done so far and in all (for progress bars). */
  onProgress?: (done: number, total: number) => void;
}

/** Windows of one length that go through the backend together, with their residual stream. */
export interface Batch<W extends Window = Window> {
  windows: W[];
  seqLen: number;
  /** Set once the embeddings are uploaded; replaced layer by layer. */
  hidden?: HiddenStates;
  /** The windows' packed layouts end to end, when the batch runs packed. */
  layout?: PackedLayout;
}

/** A run-unique name for a checkpoint, so that a backend can keep its weights resident across passes. */
const sourceIds = new WeakMap<TensorProvider, number>();
let nextSourceId = 1;
function sourceKey(source: StreamingSource): string {
  let id = sourceIds.get(source.provider);
  if (id === undefined) {
    id = nextSourceId++;
    sourceIds.set(source.provider, id);
  }
  return `${source.provider.source}#${id}`;
}

/** The head's weights, made ready on the backend (resident there when it keeps weights). */
export function prepareHead(source: StreamingSource, backend: DecoderBackend): Promise<PreparedHead> {
  return backend.prepareHead(`${sourceKey(source)}/head`, () => loadHeadWeights(source.provider, source.config, source.names), source.config.vocabSize);
}

/** The input embedding, made ready on the backend. */
export function prepareEmbedding(source: StreamingSource, backend: DecoderBackend): Promise<PreparedEmbedding> {
  const { config, provider, names } = source;
  return backend.prepareEmbedding(`${sourceKey(source)}/embedding`, () => embeddingWeights(source, provider.readF32(names.embedding)), config.vocabSize, config.dim);
}

/** The embedding's weights around a table (the whole vocabulary's rows, or some of them). */
function embeddingWeights(source: StreamingSource, table: Float32Array): EmbeddingWeights {
  const { config, provider, names } = source;
  return {
    table,
    ...(config.embeddingScale === undefined ? {} : { scale: config.embeddingScale }),
    ...(config.learnedPositions ? { positions: provider.readF32(names.positionEmbedding!) } : {}),
  };
}

/**
 * Only the embedding rows of the given tokens (each once, ascending), made ready on the backend as
 * a table of their own; `row` maps a token id to its row there. A run embeds a few hundred
 * tokens: reading their rows instead of the whole table (Gemma's is 256000 x 2304, 2.4 GB as
 * float32) took most of a Gemma-2-2B scoring run. The key names the rows, so that a backend that
 * keeps weights (cuda) serves the same windows from its copy and never mixes two sets of rows.
 */
export async function prepareEmbeddingRows(source: StreamingSource, backend: DecoderBackend, tokens: Int32Array): Promise<{ embedding: PreparedEmbedding; row: Map<number, number> }> {
  const { config, provider, names } = source;
  checkTokenIds(tokens, config.vocabSize);
  const ids = Int32Array.from(new Set(tokens)).sort();
  const digest = createHash("sha256").update(new Uint8Array(ids.buffer)).digest("hex").slice(0, 16);
  const embedding = await backend.prepareEmbedding(`${sourceKey(source)}/embedding rows ${ids.length}:${digest}`, () => embeddingWeights(source, readTensorRows(provider, names.embedding, ids)), ids.length, config.dim);
  return { embedding, row: new Map(Array.from(ids, (id, i) => [id, i])) };
}

/** One layer's weights, made ready on the backend (resident there when it keeps weights). */
export function prepareLayer(source: StreamingSource, backend: DecoderBackend, layer: number): Promise<PreparedLayer> {
  const { config, provider, names } = source;
  return backend.prepareLayer(`${sourceKey(source)}/layer${layer}`, () => loadLlamaLayer(provider, config, names, layer), layerShape(config, layer), {
    f32: (key) => loadLayerTensor(provider, config, names, layer, key),
    bf16: (key) => loadLayerTensorBf16(provider, config, names, layer, key),
  });
}

/** Each layer's own shape (sliding window, RoPE base); refuses a backend that lacks a feature the model needs, before any work. */
export function checkedLayerShapes(source: StreamingSource, backend: DecoderBackend): LayerShape[] {
  const { config } = source;
  const shapes = Array.from({ length: config.nLayers }, (_, layer) => layerShape(config, layer));
  // A backend without Gemma 2/3's or Phi-3's layer features (one that declares no shapeFeatures) refuses them.
  const head = config.logitSoftcap === undefined ? {} : { logitSoftcap: config.logitSoftcap };
  for (const shape of shapes) {
    checkBackendComputes(backend, shape);
    assertShapeFeatures(backend.name, shape, backend.shapeFeatures ?? new Set(), head);
  }
  return shapes;
}

/** Frees every batch's states on the backend. */
export function releaseBatches(batches: readonly Batch[], backend: DecoderBackend): void {
  for (const b of batches) if (b.hidden) backend.release(b.hidden);
}



/**
 * Groups windows by length and cuts each group into batches of at most batchTokens tokens.
 * A length with any packed window runs all its windows packed (a plain window is one branch-0
 * sequence), so that each length compiles one graph and fills whole batches.
 */
export function makeBatches<W extends Window>(windows: readonly W[], batchTokens: number): Batch<W>[] {
  const byLength = new Map<number, W[]>();
  for (const w of windows) {
    const group = byLength.get(w.tokens.length) ?? [];
    group.push(w);
    byLength.set(w.tokens.length, group);
  }
  const batches: Batch<W>[] = [];
  for (const [seqLen, group] of [...byLength].sort((a, b) => b[0] - a[0])) {
    const packed = group.some((w) => w.layout);
    const perBatch = Math.max(1, Math.floor(batchTokens / seqLen));
    for (let i = 0; i < group.length; i += perBatch) {
      const chunk = group.slice(i, i + perBatch);
      batches.push({ windows: chunk, seqLen, ...(packed ? { layout: joinLayouts(chunk, seqLen) } : {}) });
    }
  }
  return batches;
}

function joinLayouts(windows: readonly Window[], seqLen: number): PackedLayout {
  const layout: PackedLayout = { positions: new Int32Array(windows.length * seqLen), branches: new Int32Array(windows.length * seqLen) };
  windows.forEach((w, i) => {
    if (w.layout) {
      layout.positions.set(w.layout.positions, i * seqLen);
      layout.branches.set(w.layout.branches, i * seqLen);
    } else {
      for (let t = 0; t < seqLen; t++) layout.positions[i * seqLen + t] = t; // one causal sequence, all branch 0
    }
  });
  return layout;
}

/**
 * Starts every batch's residual stream at the embedding. The table is only referenced in here: a
 * host backend's copy (a 7B model's is 0.5 GB of float32) is garbage before the first layer loads.
 */
async function embedBatches(source: StreamingSource, backend: DecoderBackend, batches: readonly Batch[]): Promise<void> {
  const batchIds = batches.map((batch) => {
    const ids = new Int32Array(batch.windows.length * batch.seqLen);
    batch.windows.forEach((w, i) => {
      for (const id of w.tokens) if (!Number.isInteger(id)) throw new OptionError(`token id ${id} is not an integer`);
      ids.set(w.tokens, i * batch.seqLen);
    });
    return ids;
  });
  const all = new Int32Array(batchIds.reduce((n, ids) => n + ids.length, 0));
  batchIds.reduce((at, ids) => (all.set(ids, at), at + ids.length), 0);
  const { embedding, row } = await prepareEmbeddingRows(source, backend, all);
  for (const [b, batch] of batches.entries()) {
    // A packed window's tokens sit at their own sequence's positions.
    batch.hidden = await backend.embed(embedding, batchIds[b]!.map((id) => row.get(id)!), batch.seqLen, batch.layout?.positions);
  }
}

/**
 * Runs every window through every layer not skipped; returns the batches with the final residual
 * stream, held by the backend (release them with releaseBatches when done).
 */
export async function runLayersStreaming<W extends Window>(source: StreamingSource, windows: readonly W[], options: StreamingOptions): Promise<Batch<W>[]> {
  const { config } = source;
  const { backend } = options;
  const batches = makeBatches(windows, options.batchTokens ?? backend.batchTokens);
  const windowIndex = new Map<Window, number>(windows.map((w, i) => [w, i]));
  const batchInfo = batches.map((batch): BatchInfo => ({ windows: batch.windows.map((w) => windowIndex.get(w)!), seqLen: batch.seqLen }));
  try {
    const shapes = checkedLayerShapes(source, backend);
    await embedBatches(source, backend, batches);
    const skip = options.skip ?? new Set<number>();
    const running = Array.from({ length: config.nLayers }, (_, l) => l).filter((l) => !skip.has(l));
    const tokens = batches.reduce((n, b) => n + b.windows.length * b.seqLen, 0);
    const total = tokens * running.length;
    const prepare = (layer: number): ReturnType<DecoderBackend["prepareLayer"]> => prepareLayer(source, backend, layer);
    const prefetch = backend.overlapsLayerLoads !== false;
    let done = 0;
    let prepared = running.length > 0 ? await prepare(running[0]!) : undefined;
    for (let i = 0; i < running.length; i++) {
      const layer = running[i]!;
      let next: ReturnType<DecoderBackend["prepareLayer"]> | undefined;
      for (const [b, batch] of batches.entries()) {
        const nTokens = batch.windows.length * batch.seqLen;
        const input = batch.hidden!;
        const pending = backend.runLayer(input, batch.windows.length, batch.seqLen, prepared!, shapes[layer]!, batch.layout);
        // Read and expand the next layer's weights while the backend computes this one.
        if (prefetch && b === 0 && i + 1 < running.length) next = prepare(running[i + 1]!);
        const out = await pending;
        batch.hidden = out;
        await options.hooks?.onLayer(layer, input, out, batchInfo[b]!, backend);
        backend.release(input);
        done += nTokens;
        options.onProgress?.(done, total);
      }
      // Every batch has run this layer: its arrays can hold a later layer's weights.
      if (prepared) recycleF32([...Object.values(prepared.weights ?? {}), ...(prepared.recyclable ?? [])]);
      if (prefetch) prepared = next && (await next);
      else {
        prepared = undefined; // garbage before the next layer is read: one layer in memory at a time
        prepared = i + 1 < running.length ? await prepare(running[i + 1]!) : undefined;
      }
    }
    await options.hooks?.settle?.();
    return batches;
  } catch (err) {
    releaseBatches(batches, backend);
    throw err;
  } finally {
    clearF32Pool();
  }
}

/** Block Influence of every layer, layer by layer; the vocabulary projection never runs. */
export async function streamingBlockInfluence(source: StreamingSource, windows: readonly Window[], options: StreamingOptions): Promise<BlockInfluenceResult> {
  const bi = new BlockInfluence(source.config.nLayers);
  const pending = new PendingResults();
  const hooks: StreamHooks = {
    async onLayer(layer, input, output, _batch, backend) {
      pending.add(backend.rowStats(input, output, { cosine: true, magnitude: false }), (stats) => bi.addCosines(layer, stats.cosine!));
    },
    settle: () => pending.settle(),
  };
  releaseBatches(await runLayersStreaming(source, windows, { ...options, hooks }), options.backend);
  for (const w of windows) bi.windowDone(w.tokens.length);
  return bi.result();
}

/** Rows of the head per backend call: bounds the logits buffer to rows x vocab floats. */
const HEAD_ROWS = 1024;

/** Strided perplexity, layer by layer, then the final norm and classifier on the scored positions only. */
export async function streamingPerplexity(source: StreamingSource, windows: readonly PerplexityWindow[], options: StreamingOptions): Promise<PerplexityResult> {
  const { backend } = options;
  const batches = await runLayersStreaming(source, windows, options);
  try {
    const head = await prepareHead(source, backend);
    const { normEps } = source.config;
    const windowIndex = new Map<PerplexityWindow, number>(windows.map((w, i) => [w, i]));
    const perWindow = { nll: new Float64Array(windows.length), tokens: new Float64Array(windows.length) };
    for (const batch of batches) {
      // (row, target, window) triples: position p-1 predicts token p for p in [firstTarget, length).
      const rows: number[] = [];
      const targets: number[] = [];
      const owners: number[] = [];
      batch.windows.forEach((w, i) => {
        for (let pos = w.firstTarget; pos < w.tokens.length; pos++) {
          rows.push(i * batch.seqLen + pos - 1);
          targets.push(w.tokens[pos]!);
          owners.push(windowIndex.get(w)!);
        }
      });
      for (let start = 0; start < rows.length; start += HEAD_ROWS) {
        const end = Math.min(rows.length, start + HEAD_ROWS);
        const result = await backend.runHead(batch.hidden!, Int32Array.from(rows.slice(start, end)), head, normEps, Int32Array.from(targets.slice(start, end)));
        if (result.kind !== "nll") throw new Error("internal: the backend returned logits where log-likelihoods were asked for");
        for (let i = 0; i < end - start; i++) {
          const nll = result.logSumExp[i]! - result.targetLogit[i]!;
          perWindow.nll[owners[start + i]!]! += nll;
          perWindow.tokens[owners[start + i]!]! += 1;
        }
      }
    }
    // Summed per window, then over windows: the same arithmetic as merging shards.
    return { ...perplexityFromWindows(perWindow), windows: windows.length, perWindow };
  } finally {
    releaseBatches(batches, backend);
  }
}

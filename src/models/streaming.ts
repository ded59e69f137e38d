// Layer-by-layer execution: every window passes through layer 0, then layer 1, and so on,
// with at most two layers' weights in memory (the one computing, the next one loading), so a checkpoint larger than RAM can be scored and
// evaluated. The arithmetic is the backend's; this module only moves data.

import type { DecoderBackend, PackedLayout } from "../backend/backend.js";
import type { PerplexityWindow, Window } from "../data/windows.js";
import { OptionError } from "../errors.js";
import type { PerplexityResult } from "../eval/perplexity.js";
import { BlockInfluence, type BlockInfluenceResult } from "../metrics/blockInfluence.js";
import type { TensorProvider } from "../tensor/provider.js";
import { embeddingRow, type LayerHooks, layerShape, type LlamaConfig, type LlamaLayerWeights, type LlamaTensorNames, loadHeadWeights, loadLlamaLayer } from "./llama.js";

export { layerShape };

/** A checkpoint's lazy view: config, tensor access, and the family's tensor names. */
export interface StreamingSource {
  config: LlamaConfig;
  provider: TensorProvider;
  names: LlamaTensorNames;
}

export interface StreamingOptions {
  backend: DecoderBackend;
  skip?: ReadonlySet<number>;
  hooks?: LayerHooks;
  /** Most tokens per backend call; windows of equal length are batched up to it. */
  batchTokens?: number;
  /** Token-layers done so far and in all (for progress bars). */
  onProgress?: (done: number, total: number) => void;
}

/** Windows of one length that go through the backend together, with their residual stream. */
export interface Batch<W extends Window = Window> {
  windows: W[];
  seqLen: number;
  hidden: Float32Array;
  /** The windows' packed layouts end to end, when the batch runs packed. */
  layout?: PackedLayout;
}

export const DEFAULT_BATCH_TOKENS = 4096;


/**
 * Groups windows by length and cuts each group into batches of at most batchTokens tokens.
 * A length with any packed window runs all its windows packed (a plain window is one branch-0
 * sequence), so that each length compiles one graph and fills whole batches.
 */
export function makeBatches<W extends Window>(windows: readonly W[], dim: number, batchTokens: number): Batch<W>[] {
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
      batches.push({ windows: chunk, seqLen, hidden: new Float32Array(chunk.length * seqLen * dim), ...(packed ? { layout: joinLayouts(chunk, seqLen) } : {}) });
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

/** Runs every window through every layer not skipped; returns the batches with the final residual stream. */
export async function runLayersStreaming<W extends Window>(source: StreamingSource, windows: readonly W[], options: StreamingOptions): Promise<Batch<W>[]> {
  const { config, provider, names } = source;
  const { dim, vocabSize } = config;
  const batches = makeBatches(windows, dim, options.batchTokens ?? DEFAULT_BATCH_TOKENS);
  const windowIndex = new Map<Window, number>(windows.map((w, i) => [w, i]));
  const batchWindows = batches.map((batch) => batch.windows.map((w) => windowIndex.get(w)!));
  // The embeddings are needed once, to start the residual stream; they are dropped before the layers run.
  {
    const embedding = provider.readF32(names.embedding);
    const positionTable = config.learnedPositions ? provider.readF32(names.positionEmbedding!) : undefined;
    for (const batch of batches) {
      batch.windows.forEach((w, i) => {
        w.tokens.forEach((id, pos) => {
          if (!Number.isInteger(id) || id < 0 || id >= vocabSize) throw new OptionError(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
          // A packed window's tokens sit at their own sequence's positions.
          const positions = positionTable && { table: positionTable, position: w.layout ? w.layout.positions[pos]! : pos };
          batch.hidden.set(embeddingRow(embedding, id, dim, config, positions), (i * batch.seqLen + pos) * dim);
        });
      });
    }
  }
  const shape = layerShape(config);
  const skip = options.skip ?? new Set<number>();
  const running = Array.from({ length: config.nLayers }, (_, l) => l).filter((l) => !skip.has(l));
  const tokens = batches.reduce((n, b) => n + b.windows.length * b.seqLen, 0);
  const total = tokens * running.length;
  let done = 0;
  let weights = running.length > 0 ? loadLlamaLayer(provider, config, names, running[0]!) : undefined;
  for (let i = 0; i < running.length; i++) {
    const layer = running[i]!;
    let next: LlamaLayerWeights | undefined;
    for (const [b, batch] of batches.entries()) {
      const nTokens = batch.windows.length * batch.seqLen;
      const pending = options.backend.runLayer(batch.hidden, batch.windows.length, batch.seqLen, weights!, shape, batch.layout);
      // Read and expand the next layer's weights while the backend computes this one.
      if (b === 0 && i + 1 < running.length) next = loadLlamaLayer(provider, config, names, running[i + 1]!);
      const out = await pending;
      options.hooks?.onLayer(layer, batch.hidden, out, nTokens, dim, batchWindows[b]);
      batch.hidden = out;
      done += nTokens;
      options.onProgress?.(done, total);
    }
    weights = next;
  }
  return batches;
}

/** Block Influence of every layer, layer by layer; the vocabulary projection never runs. */
export async function streamingBlockInfluence(source: StreamingSource, windows: readonly Window[], options: StreamingOptions): Promise<BlockInfluenceResult> {
  const bi = new BlockInfluence(source.config.nLayers);
  await runLayersStreaming(source, windows, { ...options, hooks: bi });
  for (const w of windows) bi.windowDone(w.tokens.length);
  return bi.result();
}

/** Rows of the head per backend call: bounds the logits buffer to rows x vocab floats. */
const HEAD_ROWS = 1024;

/** Strided perplexity, layer by layer, then the final norm and classifier on the scored positions only. */
export async function streamingPerplexity(source: StreamingSource, windows: readonly PerplexityWindow[], options: StreamingOptions): Promise<PerplexityResult> {
  const { config } = source;
  const { dim } = config;
  const batches = await runLayersStreaming(source, windows, options);
  const head = loadHeadWeights(source.provider, config, source.names);
  let nllSum = 0;
  let tokens = 0;
  // Gather (hidden row, target) pairs: position p-1 predicts token p for p in [firstTarget, length).
  const windowIndex = new Map<PerplexityWindow, number>(windows.map((w, i) => [w, i]));
  const rows: { batch: Batch<PerplexityWindow>; offset: number; target: number; window: number }[] = [];
  for (const batch of batches) {
    batch.windows.forEach((w, i) => {
      for (let pos = w.firstTarget; pos < w.tokens.length; pos++) rows.push({ batch, offset: (i * batch.seqLen + pos - 1) * dim, target: w.tokens[pos]!, window: windowIndex.get(w)! });
    });
  }
  const perWindow = { nll: new Float64Array(windows.length), tokens: new Float64Array(windows.length) };
  for (let start = 0; start < rows.length; start += HEAD_ROWS) {
    const chunk = rows.slice(start, start + HEAD_ROWS);
    const x = new Float32Array(chunk.length * dim);
    const targets = new Int32Array(chunk.length);
    chunk.forEach((r, i) => {
      x.set(r.batch.hidden.subarray(r.offset, r.offset + dim), i * dim);
      targets[i] = r.target;
    });
    const result = await options.backend.runHead(x, chunk.length, head, config.vocabSize, config.normEps, targets);
    if (result.kind !== "nll") throw new Error("internal: the backend returned logits where log-likelihoods were asked for");
    for (let i = 0; i < chunk.length; i++) {
      const nll = result.logSumExp[i]! - result.targetLogit[i]!;
      nllSum += nll;
      perWindow.nll[chunk[i]!.window]! += nll;
      perWindow.tokens[chunk[i]!.window]! += 1;
    }
    tokens += chunk.length;
  }
  const nll = nllSum / tokens;
  return { perplexity: Math.exp(nll), nll, tokens, windows: windows.length, perWindow };
}

// Turns the host-array kernels of a CPU backend into a DecoderBackend: hidden states are
// Float32Arrays in host memory, weights are loaded afresh for every pass (so that at most two
// layers are in memory, and a checkpoint larger than RAM still runs), statistics run in float64.

import { type DecoderBackend, type EmbeddingWeights, type HeadResult, type HeadWeights, type HiddenStates, type HostKernels, type LayerShape, type LayerWeightsF32, type PreparedEmbedding, type PreparedHead, type PreparedLayer, type RowStats, type SideStreams } from "./backend.js";
import { checkTokenIds, embedRows } from "./embedding.js";
import { rowCosine, rowRelativeMagnitude } from "./rowStats.js";
import { OptionError } from "../errors.js";
import { ALL_ATTENTION_FAMILY_FEATURES } from "./shapeFeatures.js";

/** Host-memory hidden states: the array is the residual stream itself. */
export interface HostHiddenStates extends HiddenStates {
  readonly data: Float32Array;
  /** What the layers carry beside the residual stream (RWKV-7's value residual), absent until a layer starts one. */
  readonly side?: SideStreams;
}

export type HostBackend<K extends HostKernels = HostKernels> = DecoderBackend & { readonly kernels: K };

/** The states as host arrays, when backend `name` made them; else a typed error. */
export function ownHostStates(states: HiddenStates, name: string): HostHiddenStates {
  if (states.owner !== name || !("data" in states)) throw new OptionError(`hidden states made by backend ${states.owner} were given to backend ${name}`);
  return states as HostHiddenStates;
}

export function hostStates(data: Float32Array, rows: number, dim: number, owner: string, side?: SideStreams): HostHiddenStates {
  if (data.length !== rows * dim) throw new OptionError(`hidden states have ${data.length} values, expected ${rows} rows x ${dim}`);
  return { data, rows, dim, owner, ...(side && Object.keys(side).length > 0 ? { side } : {}) };
}

/** The listed rows of x (rows, dim), or all of it. */
export function gatherRows(x: Float32Array, dim: number, rows?: Int32Array): Float32Array {
  if (!rows) return x;
  const out = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => out.set(x.subarray(r * dim, (r + 1) * dim), i * dim));
  return out;
}

/** Every listed row index is inside 0..total-1 (a bad index would read another batch's memory on a device). */
export function checkRowIndices(rows: Int32Array, total: number, what: string): void {
  for (const r of rows) if (!(r >= 0 && r < total)) throw new OptionError(`${what}: row ${r} is outside 0..${total - 1}`);
}

/** Tokens per layer call on the CPU: enough to fill the cores, few enough to keep a batch's activations small. */
export const HOST_BATCH_TOKENS = 4096;

export function hostBackend<K extends HostKernels>(kernels: K, batchTokens = HOST_BATCH_TOKENS): HostBackend<K> {
  const name = kernels.name;
  const own = (states: HiddenStates): HostHiddenStates => ownHostStates(states, name);
  return {
    name,
    // The reference kernels and the onnx graphs compute every Gemma 2/3 and Phi-3 feature.
    shapeFeatures: ALL_ATTENTION_FAMILY_FEATURES,
    threads: kernels.threads,
    batchTokens,
    // Every host backend runs the recurrent kinds (on the plain kernels where it has no graph for them).
    computesRecurrentLayers: true,
    kernels,
    async upload(x, rows, dim) {
      return hostStates(x, rows, dim, name);
    },
    async readRows(states, rows) {
      const s = own(states);
      if (rows) checkRowIndices(rows, s.rows, "readRows");
      return rows ? gatherRows(s.data, s.dim, rows) : s.data;
    },
    release() {},
    async prepareEmbedding(key: string, load: () => EmbeddingWeights, vocabSize: number, dim: number): Promise<PreparedEmbedding> {
      return { key, weights: load(), vocabSize, dim };
    },
    async embed(embedding, ids, seqLen, positions) {
      if (!embedding.weights) throw new OptionError(`embedding ${embedding.key} was not prepared by backend ${name}`);
      checkTokenIds(ids, embedding.vocabSize);
      return hostStates(embedRows(embedding.weights, ids, embedding.dim, seqLen, positions), ids.length, embedding.dim, name);
    },
    async prepareLayer(key: string, load: () => LayerWeightsF32, _shape: LayerShape): Promise<PreparedLayer> {
      return { key, weights: load() };
    },
    async prepareHead(key: string, load: () => HeadWeights, vocabSize: number): Promise<PreparedHead> {
      return { key, weights: load(), vocabSize };
    },
    async runLayer(x, nWindows, seqLen, layer, shape, layout) {
      const s = own(x);
      if (!layer.weights) throw new OptionError(`layer ${layer.key} was not prepared by backend ${name}`);
      // The side streams travel with the rows from layer to layer (the input's stay as they were).
      const side: SideStreams = { ...s.side };
      const out = await kernels.runLayer(s.data, nWindows, seqLen, layer.weights, shape, layout, side);
      return hostStates(out, s.rows, s.dim, name, side);
    },
    async rowStats(a, b, wanted, rows): Promise<RowStats> {
      const x = own(a);
      const y = own(b);
      if (x.rows !== y.rows || x.dim !== y.dim) throw new OptionError(`rowStats: states of ${x.rows}x${x.dim} and ${y.rows}x${y.dim} differ in shape`);
      if (rows) checkRowIndices(rows, x.rows, "rowStats");
      const n = rows ? rows.length : x.rows;
      const cosine = wanted.cosine ? new Float64Array(n) : undefined;
      const magnitude = wanted.magnitude ? new Float64Array(n) : undefined;
      for (let i = 0; i < n; i++) {
        const offset = (rows ? rows[i]! : i) * x.dim;
        if (cosine) cosine[i] = rowCosine(x.data, y.data, offset, x.dim);
        if (magnitude) magnitude[i] = rowRelativeMagnitude(x.data, y.data, offset, x.dim);
      }
      return { ...(cosine ? { cosine } : {}), ...(magnitude ? { magnitude } : {}) };
    },
    async runHead(x, rows, head, normEps, targets): Promise<HeadResult> {
      const s = own(x);
      if (!head.weights) throw new OptionError(`head ${head.key} was not prepared by backend ${name}`);
      checkRowIndices(rows, s.rows, "runHead");
      return kernels.runHead(gatherRows(s.data, s.dim, rows), rows.length, head.weights, head.vocabSize, normEps, targets);
    },
    dispose: () => kernels.dispose(),
  };
}

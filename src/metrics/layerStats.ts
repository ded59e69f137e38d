// Everything the residual-stream metrics need, collected in one pass through the layer hooks and
// kept per calibration window, so that bootstrap resamples re-aggregate without re-running:
//   cosine       cos(x_l, x_{l+1}) per token                 -> bi = 1 - mean, bi-angular
//   angle        arccos(cos(x_l, x_{l+1})) / pi per token     -> bi-angular (mean of angles)
//   magnitude    ||f(x)|| / ||x + f(x)||, f(x) = x_{l+1} - x_l -> relative-magnitude
//   block angle  arccos(cos(x_l, x_{l+n})) / pi, on each window's last token or on all tokens
//                (Gromov et al.'s angular distance of a block of n layers starting at l)
// Layer l here is the l-th layer that runs; with no skipped layers that is the layer index.

import type { DecoderBackend, HiddenStates } from "../backend/backend.js";
import { rowCosine, rowRelativeMagnitude } from "../backend/rowStats.js";
import type { BatchInfo, StreamHooks } from "../models/streaming.js";
import { PendingResults } from "../util/pendingResults.js";

export { rowRelativeMagnitude };

export type BlockTokens = "last" | "all";

export interface BlockAngleOptions {
  block: number;
  tokens: BlockTokens;
}

/** Per-window sums of one per-token quantity, for every layer (or block start). */
class WindowSums {
  readonly sums: Float64Array;
  readonly counts: Float64Array;

  constructor(readonly rows: number, readonly windows: number) {
    this.sums = new Float64Array(rows * windows);
    this.counts = new Float64Array(rows * windows);
  }

  add(row: number, window: number, value: number): void {
    this.sums[row * this.windows + window]! += value;
    this.counts[row * this.windows + window]! += 1;
  }

  /** Weighted mean over windows of row `row` (weights: how often each window is drawn; default all 1). */
  mean(row: number, weights?: ArrayLike<number>): number {
    const from = row * this.windows;
    return weightedMean(this.sums.subarray(from, from + this.windows), this.counts.subarray(from, from + this.windows), weights);
  }
}

/** sum_w k_w * sums_w / sum_w k_w * counts_w, with k_w = weights[w] (default 1). */
export function weightedMean(sums: ArrayLike<number>, counts: ArrayLike<number>, weights?: ArrayLike<number>): number {
  let s = 0;
  let c = 0;
  for (let w = 0; w < sums.length; w++) {
    const k = weights ? weights[w]! : 1;
    s += k * sums[w]!;
    c += k * counts[w]!;
  }
  return s / c;
}

/** The angle of a cosine in units of pi (0: same direction, 1: opposite); rounding past +-1 is clamped. */
function angleOfCosine(cos: number): number {
  return Math.acos(Math.min(1, Math.max(-1, cos))) / Math.PI;
}

/** Angle between two rows in units of pi. */
export function rowAngle(a: Float32Array | Float64Array, b: Float32Array | Float64Array, offset: number, dim: number): number {
  return angleOfCosine(rowCosine(a, b, offset, dim));
}

export class LayerStats implements StreamHooks {
  /** Each present only when asked for (see the constructor). */
  readonly cosine: WindowSums | undefined;
  readonly angle: WindowSums | undefined;
  readonly magnitude: WindowSums | undefined;
  readonly blockAngle: WindowSums | undefined;
  /** Original layer index of each running layer, in order. */
  readonly layers: number[] = [];
  private batchInLayer = 0;
  /** Per batch (in call order), the rows the block angle needs at the last `block` boundaries. */
  private readonly history: { rows: Float32Array; windowOfRow: Int32Array }[][] = [];
  private readonly pending = new PendingResults();

  /**
   * `want` names the per-token quantities to collect: the cosine (BI), its angle (which needs
   * the cosine) and the relative magnitude. Each costs a pass over every token row on the
   * scoring hot path, so only the metrics asked for pay for them; `blockOptions` adds the
   * block angle, on the tokens it names.
   */
  constructor(nLayers: number, readonly nWindows: number, want: { cosine: boolean; angle: boolean; magnitude: boolean }, readonly blockOptions?: BlockAngleOptions) {
    const sums = (on: boolean): WindowSums | undefined => (on ? new WindowSums(nLayers, nWindows) : undefined);
    this.cosine = sums(want.cosine || want.angle);
    this.angle = sums(want.angle);
    this.magnitude = sums(want.magnitude);
    this.blockAngle = sums(blockOptions !== undefined);
  }

  async onLayer(layer: number, input: HiddenStates, output: HiddenStates, batch: BatchInfo, backend: DecoderBackend): Promise<void> {
    if (this.layers[this.layers.length - 1] !== layer) {
      this.layers.push(layer);
      this.batchInLayer = 0;
    }
    const k = this.layers.length - 1;
    const ids = batch.windows;
    const { seqLen } = batch;
    const { cosine, angle, magnitude } = this;
    if (cosine || magnitude) {
      const rows = input.rows;
      // Not awaited: the sums are added when the backend answers (in order), by settle() at the latest.
      this.pending.add(backend.rowStats(input, output, { cosine: cosine !== undefined, magnitude: magnitude !== undefined }), (stats) => {
        for (let t = 0; t < rows; t++) {
          const w = ids[Math.floor(t / seqLen)]!;
          if (cosine) {
            const cos = stats.cosine![t]!;
            cosine.add(k, w, cos);
            angle?.add(k, w, angleOfCosine(cos));
          }
          if (magnitude) magnitude.add(k, w, stats.magnitude![t]!);
        }
      });
    }
    if (this.blockOptions) await this.trackBlocks(k, input, output, ids, seqLen, backend);
    this.batchInLayer += 1;
  }

  /** Keeps the residual rows entering the last `block` layers (on the host); pairs the oldest with this layer's output. */
  private async trackBlocks(k: number, input: HiddenStates, output: HiddenStates, ids: readonly number[], seqLen: number, backend: DecoderBackend): Promise<void> {
    const { block, tokens } = this.blockOptions!;
    const { dim } = input;
    const lastRows = Int32Array.from(ids, (_, i) => (i + 1) * seqLen - 1);
    const pick = async (x: HiddenStates): Promise<{ rows: Float32Array; windowOfRow: Int32Array }> => {
      if (tokens === "all") return { rows: Float32Array.from(await backend.readRows(x)), windowOfRow: Int32Array.from({ length: ids.length * seqLen }, (_, t) => ids[Math.floor(t / seqLen)]!) };
      return { rows: await backend.readRows(x, lastRows), windowOfRow: Int32Array.from(ids) };
    };
    const queue = (this.history[this.batchInLayer] ??= []);
    queue.push(await pick(input));
    if (queue.length === block) {
      const start = queue.shift()!;
      const end = await pick(output);
      for (let r = 0; r < start.windowOfRow.length; r++) this.blockAngle!.add(k + 1 - block, start.windowOfRow[r]!, rowAngle(start.rows, end.rows, r * dim, dim));
    }
  }

  settle(): Promise<void> {
    return this.pending.settle();
  }

  /** Number of block starts scored: running layers - block + 1. */
  get blockStarts(): number {
    return this.blockOptions ? Math.max(0, this.layers.length - this.blockOptions.block + 1) : 0;
  }
}

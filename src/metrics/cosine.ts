// Cosine similarity between token rows, accumulated in float64.

import { rowCosine } from "../backend/rowStats.js";

export { rowCosine };

/** Sum and count of per-token cosines, kept per layer. */
export class CosineAccumulator {
  readonly sums: Float64Array;
  readonly counts: Float64Array;

  constructor(nLayers: number) {
    this.sums = new Float64Array(nLayers);
    this.counts = new Float64Array(nLayers);
  }

  add(layer: number, a: Float32Array | Float64Array, b: Float32Array | Float64Array, nTokens: number, dim: number): void {
    let sum = 0;
    for (let t = 0; t < nTokens; t++) sum += rowCosine(a, b, t * dim, dim);
    this.sums[layer]! += sum;
    this.counts[layer]! += nTokens;
  }

  addSums(layer: number, sum: number, count: number): void {
    this.sums[layer]! += sum;
    this.counts[layer]! += count;
  }

  mean(layer: number): number {
    return this.sums[layer]! / this.counts[layer]!;
  }
}

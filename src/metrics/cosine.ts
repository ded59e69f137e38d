// Cosine similarity between token rows, accumulated in float64.

/** cos(a[t], b[t]) for one row of length dim at offset; 1 when both rows are zero (nothing changed). */
export function rowCosine(a: Float32Array | Float64Array, b: Float32Array | Float64Array, offset: number, dim: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < dim; i++) {
    const x = a[offset + i]!;
    const y = b[offset + i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  if (na === 0 || nb === 0) return na === nb ? 1 : 0;
  return dot / Math.sqrt(na * nb);
}

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

  mean(layer: number): number {
    return this.sums[layer]! / this.counts[layer]!;
  }
}

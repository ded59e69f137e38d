// Per-row statistics between two residual streams on the host, accumulated in float64: the
// reference twin of the device kernels that compute the same sums (cuda/kernels.ts, row_stats).

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

/** ||b - a|| / ||b|| for one row: the size of the layer's update relative to its output. */
export function rowRelativeMagnitude(a: Float32Array | Float64Array, b: Float32Array | Float64Array, offset: number, dim: number): number {
  let update = 0;
  let out = 0;
  for (let i = 0; i < dim; i++) {
    const y = b[offset + i]!;
    const d = y - a[offset + i]!;
    update += d * d;
    out += y * y;
  }
  if (out === 0) return update === 0 ? 0 : 1;
  return Math.sqrt(update / out);
}

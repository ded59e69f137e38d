// The input embedding on the host: the reference twin of the device kernel embed_rows.

import { OptionError } from "../errors.js";
import type { EmbeddingWeights } from "./backend.js";

/**
 * One input row as the first layer sees it: the token's embedding (scaled for Gemma, in float32),
 * plus the position's row for learned positions (GPT-2). A row with nothing added is a view.
 */
export function embeddingRow(embedding: Float32Array, id: number, dim: number, scale: number | undefined, positions?: { table: Float32Array; position: number }): Float32Array {
  const row = embedding.subarray(id * dim, (id + 1) * dim);
  if (scale === undefined && !positions) return row;
  const out = new Float32Array(dim);
  // The scale is a float32, as the device kernel takes it (models round sqrt(dim) to float32 already).
  const s = scale === undefined ? undefined : Math.fround(scale);
  for (let i = 0; i < dim; i++) out[i] = s === undefined ? row[i]! : row[i]! * s;
  if (positions) {
    const { table, position } = positions;
    checkPosition(position, table.length / dim);
    for (let i = 0; i < dim; i++) out[i] = out[i]! + table[position * dim + i]!;
  }
  return out;
}

export function checkPosition(position: number, nPositions: number): void {
  if (!(Number.isInteger(position) && position >= 0 && position < nPositions)) throw new OptionError(`position ${position} is beyond the model's ${nPositions} learned positions`, { hint: "use shorter windows (--seq-len)" });
}

/** Every id is a token of the vocabulary. */
export function checkTokenIds(ids: Int32Array, vocabSize: number): void {
  for (const id of ids) if (!(id >= 0 && id < vocabSize)) throw new OptionError(`token id ${id} is outside the vocabulary (0..${vocabSize - 1})`);
}

/** Rows for ids (see DecoderBackend.embed) on the host. */
export function embedRows(w: EmbeddingWeights, ids: Int32Array, dim: number, seqLen: number, positions?: Int32Array): Float32Array {
  const x = new Float32Array(ids.length * dim);
  ids.forEach((id, r) => {
    const pos = w.positions && { table: w.positions, position: positions ? positions[r]! : r % seqLen };
    x.set(embeddingRow(w.table, id, dim, w.scale, pos), r * dim);
  });
  return x;
}

// The view a model family has of a checkpoint: named, shaped tensors it can read as float32.
// Formats implement it; models consume it without knowing which file it came from.

import { CheckpointError, OptionError } from "../errors.js";

export interface TensorEntry {
  name: string;
  /** Row-major, outermost first: a linear layer's weight is (out, in). */
  shape: number[];
  /** Stored element type, e.g. "F32", "F16", "Q8_0". */
  dtype: string;
}

export interface TensorProvider {
  /** The file or directory the tensors come from, for error messages. */
  readonly source: string;
  entries(): TensorEntry[];
  /** The tensor expanded to float32, row-major. */
  readF32(name: string): Float32Array;
  /**
   * The tensor's bf16 bits as stored, row-major, when it is stored as BF16; undefined otherwise
   * (and from providers that reshape or rescale what they read: they only offer readF32). The
   * CPU bf16 engine packs these without expanding them to float32: half the bytes in memory.
   */
  readBF16?(name: string): Uint16Array | undefined;
  /**
   * Rows of a tensor (indices into its first dimension, in the order given) as float32, read
   * without expanding the rest: a run embeds a few hundred tokens, and Gemma's table is 256000 x
   * 2304 (2.4 GB as float32). Optional: readTensorRows falls back to the whole tensor.
   */
  readRowsF32?(name: string, rows: Int32Array): Float32Array;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The rows of a tensor (see TensorProvider.readRowsF32), from the provider's own reader when it has one. */
export function readTensorRows(provider: TensorProvider, name: string, rows: Int32Array): Float32Array {
  if (provider.readRowsF32) return provider.readRowsF32(name, rows);
  const entry = provider.entries().find((e) => e.name === name);
  if (!entry) throw new CheckpointError(`${provider.source}: no tensor named ${name}`, { file: provider.source, tensor: name, hint: "the checkpoint does not hold this tensor" });
  return gatherTensorRows(provider.readF32(name), entry.shape[0]!, rows, name, provider.source);
}

/** The listed rows of a whole tensor of nRows rows, read as float32. */
export function gatherTensorRows(w: Float32Array, nRows: number, rows: Int32Array, name: string, source: string): Float32Array {
  const width = w.length / nRows;
  const out = new Float32Array(rows.length * width);
  rows.forEach((r, i) => {
    checkRowIndex(r, nRows, name, source);
    out.set(w.subarray(r * width, (r + 1) * width), i * width);
  });
  return out;
}

/** Refuses a row index outside the tensor (token ids are checked against the vocabulary before they get here). */
export function checkRowIndex(row: number, nRows: number, name: string, source: string): void {
  if (!(Number.isInteger(row) && row >= 0 && row < nRows)) throw new OptionError(`${source}: row ${row} of tensor ${name} is outside 0..${nRows - 1}`, { file: source, tensor: name });
}

/**
 * Reads the three row-thirds of tensors that stack q, k and v (GPT-2's c_attn, Baichuan's
 * W_pack) with one read of the stacked tensor: a layer load asks for q, k and v in turn, and
 * reading (and, for GPT-2, transposing) the whole stack for each part tripled that work. The
 * stack is kept until its three parts have been handed out.
 */
export function stackedThirds(read: (name: string) => Float32Array): (stacked: string, index: number) => Float32Array {
  let held: { name: string; data: Float32Array; served: Set<number> } | undefined;
  return (stacked, index) => {
    if (held?.name !== stacked) held = { name: stacked, data: read(stacked), served: new Set() };
    const size = held.data.length / 3;
    const part = held.data.slice(index * size, (index + 1) * size);
    held.served.add(index);
    if (held.served.size === 3) held = undefined;
    return part;
  };
}

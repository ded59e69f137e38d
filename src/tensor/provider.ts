// The view a model family has of a checkpoint: named, shaped tensors it can read as float32.
// Formats implement it; models consume it without knowing which file it came from.

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
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

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
  /**
   * The tensor's bf16 bits as stored, row-major, when it is stored as BF16; undefined otherwise
   * (and from providers that reshape or rescale what they read: they only offer readF32). The
   * CPU bf16 engine packs these without expanding them to float32: half the bytes in memory.
   */
  readBF16?(name: string): Uint16Array | undefined;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
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

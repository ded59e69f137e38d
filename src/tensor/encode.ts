// float32 values to the stored dtypes shortgpt writes: F32, F16, BF16, and ggml's block types
// (Q8_0, Q4_0, Q5_0, Q5_1, and the K-quants Q4_K, Q5_K, Q6_K).

import { decodeToF32 } from "./dtype.js";
import { f32ToBf16Bits, f32ToF16Bits } from "./half.js";
import { QUANT_BLOCKS, QUANTIZERS } from "./quant.js";

export const WRITABLE_DTYPES = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K"] as const;
export type WritableDtype = (typeof WRITABLE_DTYPES)[number];

export function isWritableDtype(name: string): name is WritableDtype {
  return (WRITABLE_DTYPES as readonly string[]).includes(name);
}

/** True when rows of `rowLength` elements can be stored in `dtype` (quantized blocks must not straddle rows). */
export function fitsRows(dtype: WritableDtype, rowLength: number): boolean {
  return dtype === "F32" || dtype === "F16" || dtype === "BF16" ? true : rowLength % QUANT_BLOCKS[dtype].blockSize === 0;
}

/** The little-endian bytes of `values` in `dtype`. */
export function encodeF32(values: Float32Array, dtype: WritableDtype): Uint8Array {
  switch (dtype) {
    case "F32":
      return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
    case "F16":
    case "BF16": {
      const words = new Uint16Array(values.length);
      const encode = dtype === "F16" ? f32ToF16Bits : f32ToBf16Bits;
      for (let i = 0; i < values.length; i++) words[i] = encode(values[i]!);
      return new Uint8Array(words.buffer);
    }
    default:
      return QUANTIZERS[dtype](values);
  }
}

/** The float dtypes in which multiplying by a power of two is exact (an exponent shift; ggml blocks would need requantizing). */
export const EXACT_SCALE_DTYPES = ["F32", "F16", "BF16"] as const;

/**
 * The tensor's bytes with every value multiplied by 2^exponent, for a dtype of EXACT_SCALE_DTYPES;
 * undefined for any other dtype.
 */
export function scaleByPowerOfTwo(bytes: Uint8Array, dtype: string, exponent: number): Uint8Array | undefined {
  if (!(EXACT_SCALE_DTYPES as readonly string[]).includes(dtype)) return undefined;
  const values = new Float32Array(bytes.byteLength / (dtype === "F32" ? 4 : 2));
  decodeToF32(dtype, bytes, values);
  const factor = 2 ** exponent;
  for (let i = 0; i < values.length; i++) values[i] = values[i]! * factor;
  return encodeF32(values, dtype as WritableDtype);
}

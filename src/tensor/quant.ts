// ggml's block-quantized tensor types (as stored in GGUF files): dequantization to float32,
// bit-exact with ggml's reference (scalar, unfused float32) dequantization, and the reference
// quantizers (Q8_0, Q4_0, Q5_0, Q5_1, and the K-quants Q4_K, Q5_K, Q6_K) used when writing such files.
//
// The block layouts and formulas are facts of the GGUF format (ggml-common.h, ggml-quants.c);
// this is an independent implementation. Each step rounds to float32 where ggml's float code
// does (Math.fround), so the results match bit for bit; test/oracle/gguf_quant.py checks them
// against gguf-py, llama.cpp's Python reader.

import { f16ToF32, f32ToF16Bits } from "./half.js";
import { quantizeQ4K, quantizeQ5K, quantizeQ6K } from "./quantizeK.js";

/** Elements per block and bytes per block of each quantized type that can be dequantized. */
export const QUANT_BLOCKS = {
  Q4_0: { blockSize: 32, blockBytes: 18 },
  Q4_1: { blockSize: 32, blockBytes: 20 },
  Q5_0: { blockSize: 32, blockBytes: 22 },
  Q5_1: { blockSize: 32, blockBytes: 24 },
  Q8_0: { blockSize: 32, blockBytes: 34 },
  Q2_K: { blockSize: 256, blockBytes: 84 },
  Q3_K: { blockSize: 256, blockBytes: 110 },
  Q4_K: { blockSize: 256, blockBytes: 144 },
  Q5_K: { blockSize: 256, blockBytes: 176 },
  Q6_K: { blockSize: 256, blockBytes: 210 },
} as const;

export type QuantType = keyof typeof QUANT_BLOCKS;
export const QUANT_TYPES = Object.keys(QUANT_BLOCKS) as QuantType[];

export function isQuantType(name: string): name is QuantType {
  return Object.hasOwn(QUANT_BLOCKS, name);
}

const fround = Math.fround;

/** Little-endian float16 at byte `at`, as a float32 value. */
function half(b: Uint8Array, at: number): number {
  return f16ToF32(b[at]! | (b[at + 1]! << 8));
}

function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

/** One block's dequantizer: reads the block at `b[at..]`, writes its elements at `y[o..]`. */
type BlockDecoder = (b: Uint8Array, at: number, y: Float32Array, o: number) => void;

const q4_0: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  for (let j = 0; j < 16; j++) {
    const q = b[at + 2 + j]!;
    y[o + j] = ((q & 0xf) - 8) * d;
    y[o + j + 16] = ((q >> 4) - 8) * d;
  }
};

const q4_1: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const m = half(b, at + 2);
  for (let j = 0; j < 16; j++) {
    const q = b[at + 4 + j]!;
    y[o + j] = fround((q & 0xf) * d) + m;
    y[o + j + 16] = fround((q >> 4) * d) + m;
  }
};

const q5_0: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const qh = u32(b, at + 2);
  for (let j = 0; j < 16; j++) {
    const q = b[at + 6 + j]!;
    const h0 = ((qh >>> j) << 4) & 0x10;
    const h1 = (qh >>> (j + 12)) & 0x10;
    y[o + j] = (((q & 0xf) | h0) - 16) * d;
    y[o + j + 16] = (((q >> 4) | h1) - 16) * d;
  }
};

const q5_1: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  const m = half(b, at + 2);
  const qh = u32(b, at + 4);
  for (let j = 0; j < 16; j++) {
    const q = b[at + 8 + j]!;
    const h0 = ((qh >>> j) << 4) & 0x10;
    const h1 = (qh >>> (j + 12)) & 0x10;
    y[o + j] = fround(((q & 0xf) | h0) * d) + m;
    y[o + j + 16] = fround(((q >> 4) | h1) * d) + m;
  }
};

const q8_0: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at);
  for (let j = 0; j < 32; j++) y[o + j] = ((b[at + 2 + j]! << 24) >> 24) * d;
};

// Q2_K: scales[16] (low nibble scale, high nibble min), qs[64] (2 bits), d, dmin.
const q2_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at + 80);
  const min = half(b, at + 82);
  let is = 0;
  for (let n = 0; n < 2; n++) {
    const q = at + 16 + 32 * n;
    for (let shift = 0; shift < 8; shift += 2) {
      for (const half16 of [0, 16]) {
        const sc = b[at + is++]!;
        const dl = fround(d * (sc & 0xf));
        const ml = fround(min * (sc >> 4));
        for (let l = 0; l < 16; l++) y[o++] = fround(dl * ((b[q + half16 + l]! >> shift) & 3)) - ml;
      }
    }
  }
};

// Q3_K: hmask[32] (high bit), qs[64] (low 2 bits), scales[12] (16 six-bit scales), d.
const q3_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at + 108);
  const scales = q3kScales(b, at + 96);
  let is = 0;
  let m = 1;
  for (let n = 0; n < 2; n++) {
    const q = at + 32 + 32 * n;
    for (let shift = 0; shift < 8; shift += 2) {
      for (const half16 of [0, 16]) {
        const dl = fround(d * (scales[is++]! - 32));
        for (let l = 0; l < 16; l++) {
          const low = (b[q + half16 + l]! >> shift) & 3;
          const high = b[at + half16 + l]! & m ? 0 : 4;
          y[o++] = dl * (low - high);
        }
      }
      m <<= 1;
    }
  }
};

/** The 16 six-bit Q3_K scales: low 4 bits in bytes 0..7, high 2 bits packed in bytes 8..11. */
function q3kScales(b: Uint8Array, at: number): number[] {
  const scales: number[] = [];
  for (let i = 0; i < 16; i++) {
    const low = i < 8 ? b[at + i]! & 0xf : b[at + i - 8]! >> 4;
    const high = (b[at + 8 + (i % 4)]! >> (2 * Math.floor(i / 4))) & 3;
    scales.push(low | (high << 4));
  }
  return scales;
}

/** Q4_K/Q5_K: scale and min number j (0..7), six bits each, packed into 12 bytes. */
function scaleMinK4(b: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [b[at + j]! & 63, b[at + j + 4]! & 63];
  return [(b[at + j + 4]! & 0xf) | ((b[at + j - 4]! >> 6) << 4), (b[at + j + 4]! >> 4) | ((b[at + j]! >> 6) << 4)];
}

/**
 * Q4_K and Q5_K share their layout: d, dmin, scales[12], then for Q5_K qh[32] (the fifth bit of
 * each element), then qs[128] (low 4 bits). Sub-block is (32 elements) has scale and min
 * number is; element l of it is dl * q - ml.
 */
function kQuant(fifthBit: boolean): BlockDecoder {
  const qsOffset = fifthBit ? 48 : 16;
  return (b, at, y, o) => {
    const d = half(b, at);
    const min = half(b, at + 2);
    for (let j = 0; j < 4; j++) {
      const q = at + qsOffset + 32 * j;
      for (const [is, shift] of [[2 * j, 0], [2 * j + 1, 4]] as const) {
        const [sc, m] = scaleMinK4(b, at + 4, is);
        const dl = fround(d * sc);
        const ml = fround(min * m);
        const bit = 1 << is;
        for (let l = 0; l < 32; l++) {
          const high = fifthBit && b[at + 16 + l]! & bit ? 16 : 0;
          y[o++] = fround(dl * (((b[q + l]! >> shift) & 0xf) + high)) - ml;
        }
      }
    }
  };
}

const q4_K = kQuant(false);
const q5_K = kQuant(true);

// Q6_K: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] (int8), d.
const q6_K: BlockDecoder = (b, at, y, o) => {
  const d = half(b, at + 208);
  for (let n = 0; n < 2; n++) {
    const ql = at + 64 * n;
    const qh = at + 128 + 32 * n;
    const sc = at + 192 + 8 * n;
    for (let l = 0; l < 32; l++) {
      const is = l >> 4;
      const h = b[qh + l]!;
      const quants = [
        ((b[ql + l]! & 0xf) | (((h >> 0) & 3) << 4)) - 32,
        ((b[ql + l + 32]! & 0xf) | (((h >> 2) & 3) << 4)) - 32,
        ((b[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32,
        ((b[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32,
      ];
      for (let k = 0; k < 4; k++) {
        const scale = (b[sc + is + 2 * k]! << 24) >> 24;
        y[o + 128 * n + l + 32 * k] = fround(d * scale) * quants[k]!;
      }
    }
  }
};

const DECODERS: Record<QuantType, BlockDecoder> = {
  Q4_0: q4_0, Q4_1: q4_1, Q5_0: q5_0, Q5_1: q5_1, Q8_0: q8_0, Q2_K: q2_K, Q3_K: q3_K, Q4_K: q4_K, Q5_K: q5_K, Q6_K: q6_K,
};

/** Dequantizes `out.length` elements (a whole number of blocks) from `bytes` into `out`. */
export function dequantize(type: QuantType, bytes: Uint8Array, out: Float32Array): void {
  const { blockSize, blockBytes } = QUANT_BLOCKS[type];
  const blocks = out.length / blockSize;
  if (!Number.isInteger(blocks) || bytes.byteLength < blocks * blockBytes) {
    throw new RangeError(`${type}: ${out.length} elements need ${Math.ceil(blocks) * blockBytes} bytes in whole blocks of ${blockSize}, got ${bytes.byteLength}`);
  }
  const decode = DECODERS[type];
  for (let i = 0; i < blocks; i++) decode(bytes, i * blockBytes, out, i * blockSize);
}

/** Round half away from zero, as C's roundf. */
function roundAway(x: number): number {
  return Math.sign(x) * Math.round(Math.abs(x));
}

/** Quantizers for the types shortgpt writes: ggml's reference quantize_row_*_ref. */

/** The value of largest magnitude among x[start .. start + n) (the first one on ties), with its sign. */
function signedLargest(x: Float32Array, start: number, n: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[start + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

export const QUANTIZERS = {
  /** Q8_0: d = max|x| / 127, q = round(x / d). */
  Q8_0(x: Float32Array): Uint8Array {
    const out = new Uint8Array((x.length / 32) * 34);
    for (let blk = 0; blk * 32 < x.length; blk++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * blk + j]!));
      const d = fround(amax / 127);
      const id = d !== 0 ? fround(1 / d) : 0;
      const h = f32ToF16Bits(d);
      const at = 34 * blk;
      out[at] = h & 0xff;
      out[at + 1] = h >> 8;
      for (let j = 0; j < 32; j++) out[at + 2 + j] = roundAway(fround(x[32 * blk + j]! * id)) & 0xff;
    }
    return out;
  },
  /** Q4_0: d = (value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5)). */
  Q4_0(x: Float32Array): Uint8Array {
    const out = new Uint8Array((x.length / 32) * 18);
    for (let blk = 0; blk * 32 < x.length; blk++) {
      const max = signedLargest(x, 32 * blk, 32);
      const d = fround(max / -8);
      const id = d !== 0 ? fround(1 / d) : 0;
      const h = f32ToF16Bits(d);
      const at = 18 * blk;
      out[at] = h & 0xff;
      out[at + 1] = h >> 8;
      const q = (v: number): number => Math.min(15, Math.trunc(fround(fround(v * id) + 8.5)));
      for (let j = 0; j < 16; j++) out[at + 2 + j] = q(x[32 * blk + j]!) | (q(x[32 * blk + 16 + j]!) << 4);
    }
    return out;
  },
  /** Q5_0: d = (value of largest magnitude) / -16, q = min(31, trunc(x / d + 16.5)); fifth bits in qh. */
  Q5_0(x: Float32Array): Uint8Array {
    const out = new Uint8Array((x.length / 32) * 22);
    for (let blk = 0; blk * 32 < x.length; blk++) {
      const max = signedLargest(x, 32 * blk, 32);
      const d = fround(max / -16);
      const id = d !== 0 ? fround(1 / d) : 0;
      const q = (v: number): number => Math.min(31, Math.trunc(fround(fround(v * id) + 16.5)));
      writeQ5(out, 22 * blk, d, undefined, x, 32 * blk, q);
    }
    return out;
  },
  /** Q5_1: d = (max - min) / 31, m = min, q = trunc((x - min) / d + 0.5); fifth bits in qh. */
  Q5_1(x: Float32Array): Uint8Array {
    const out = new Uint8Array((x.length / 32) * 24);
    for (let blk = 0; blk * 32 < x.length; blk++) {
      let min = Infinity;
      let max = -Infinity;
      for (let j = 0; j < 32; j++) {
        const v = x[32 * blk + j]!;
        if (v < min) min = v;
        if (v > max) max = v;
      }
      const d = fround(fround(max - min) / 31);
      const id = d !== 0 ? fround(1 / d) : 0;
      const q = (v: number): number => Math.trunc(fround(fround(fround(v - min) * id) + 0.5)) & 0xff;
      writeQ5(out, 24 * blk, d, min, x, 32 * blk, q);
    }
    return out;
  },
  Q4_K: quantizeQ4K,
  Q5_K: quantizeQ5K,
  Q6_K: quantizeQ6K,
} as const;

/** A Q5_0 (no min) or Q5_1 block at `at`: d, [m], qh (bit 4 of each level), then low nibbles, j and j + 16 per byte. */
function writeQ5(out: Uint8Array, at: number, d: number, min: number | undefined, x: Float32Array, xo: number, level: (v: number) => number): void {
  const putHalf = (pos: number, v: number): void => {
    const h = f32ToF16Bits(v);
    out[pos] = h & 0xff;
    out[pos + 1] = h >> 8;
  };
  putHalf(at, d);
  let qsAt = at + 6;
  if (min !== undefined) {
    putHalf(at + 2, min);
    qsAt = at + 8;
  }
  let qh = 0;
  for (let j = 0; j < 16; j++) {
    const lo = level(x[xo + j]!);
    const hi = level(x[xo + 16 + j]!);
    out[qsAt + j] = (lo & 0xf) | ((hi & 0xf) << 4);
    qh |= ((lo & 0x10) >> 4) << j;
    qh |= ((hi & 0x10) >> 4) << (j + 16);
  }
  const qhAt = qsAt - 4;
  out[qhAt] = qh & 0xff;
  out[qhAt + 1] = (qh >>> 8) & 0xff;
  out[qhAt + 2] = (qh >>> 16) & 0xff;
  out[qhAt + 3] = (qh >>> 24) & 0xff;
}

export type WritableQuantType = keyof typeof QUANTIZERS;

// ggml block quantization: dequantization of every supported type bit-exact with gguf-py
// (llama.cpp's Python package; golden written by test/oracle/gguf_quant.py), hand-built blocks
// whose values are known by construction, and the Q8_0/Q4_0 quantizers byte-exact.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { f32ToF16Bits } from "../src/tensor/half.js";
import { dequantize, isQuantType, QUANT_BLOCKS, QUANT_TYPES, QUANTIZERS, type QuantType } from "../src/tensor/quant.js";
import { repoRoot } from "../src/shared.js";

interface Golden {
  dequantize: Record<string, { bytes: string; values: number[] }>;
  quantize: Record<string, { input: number[]; bytes: string }>;
}
const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "gguf_quant.json"), "utf8")) as Golden;

function decode(type: QuantType, bytes: Uint8Array, blocks = 1): Float32Array {
  const out = new Float32Array(blocks * QUANT_BLOCKS[type].blockSize);
  dequantize(type, bytes, out);
  return out;
}

test("every quantized type dequantizes bit-exactly as gguf-py does", () => {
  assert.deepEqual(Object.keys(golden.dequantize).sort(), [...QUANT_TYPES].sort());
  for (const [name, { bytes, values }] of Object.entries(golden.dequantize)) {
    assert.ok(isQuantType(name));
    const raw = Buffer.from(bytes, "hex");
    const got = decode(name, raw, raw.length / QUANT_BLOCKS[name].blockBytes);
    const want = Float32Array.from(values);
    let mismatches = 0;
    for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) mismatches++;
    assert.equal(mismatches, 0, `${name}: ${mismatches} of ${want.length} values differ (first: got ${got[0]}, want ${want[0]})`);
  }
});

test("Q8_0 and Q4_0 quantizers write the bytes llama.cpp's reference quantizers write", () => {
  for (const name of ["Q8_0", "Q4_0"] as const) {
    const { input, bytes } = golden.quantize[name]!;
    assert.equal(Buffer.from(QUANTIZERS[name](Float32Array.from(input))).toString("hex"), bytes, name);
  }
});

function halfBytes(x: number): [number, number] {
  const h = f32ToF16Bits(x);
  return [h & 0xff, h >> 8];
}

test("hand-built Q8_0 and Q4_0 blocks: scale times signed quants, low nibbles first", () => {
  const q8 = new Uint8Array(34);
  q8.set(halfBytes(0.5));
  for (let j = 0; j < 32; j++) q8[2 + j] = (j * 8 - 128) & 0xff; // -128, -120, ..., 120
  assert.deepEqual([...decode("Q8_0", q8)], Array.from({ length: 32 }, (_, j) => (j * 8 - 128) * 0.5));

  const q4 = new Uint8Array(18);
  q4.set(halfBytes(-2));
  for (let j = 0; j < 16; j++) q4[2 + j] = j | ((15 - j) << 4);
  const want = [...Array.from({ length: 16 }, (_, j) => (j - 8) * -2), ...Array.from({ length: 16 }, (_, j) => (7 - j) * -2)];
  assert.deepEqual([...decode("Q4_0", q4)], want);
});

test("hand-built Q4_K block: eight (scale, min) pairs of six bits, 32 elements each", () => {
  const block = new Uint8Array(144);
  block.set(halfBytes(0.25), 0); // d
  block.set(halfBytes(0.125), 2); // dmin
  const scales = [1, 2, 3, 4, 40, 50, 60, 63];
  const mins = [5, 6, 7, 8, 33, 44, 55, 62];
  // Packing: j < 4 in the low six bits of bytes j (scale) and j+4 (min); j >= 4 split into a low
  // nibble in byte j+4 and two high bits in the top of bytes j-4 (scale) and j (min).
  for (let j = 0; j < 4; j++) {
    block[4 + j] = scales[j]! | ((scales[j + 4]! >> 4) << 6);
    block[4 + j + 4] = mins[j]! | ((mins[j + 4]! >> 4) << 6);
    block[4 + j + 8] = (scales[j + 4]! & 0xf) | ((mins[j + 4]! & 0xf) << 4);
  }
  for (let i = 0; i < 128; i++) block[16 + i] = (i % 16) | (((i * 7) % 16) << 4);
  const got = decode("Q4_K", block);
  for (let sub = 0; sub < 8; sub++) {
    for (let l = 0; l < 32; l++) {
      const byte = block[16 + 32 * (sub >> 1) + l]!;
      const q = sub % 2 === 0 ? byte & 0xf : byte >> 4;
      assert.equal(got[32 * sub + l], Math.fround(Math.fround(0.25 * scales[sub]!) * q) - Math.fround(0.125 * mins[sub]!), `sub-block ${sub} element ${l}`);
    }
  }
});

test("hand-built Q6_K block: 16 int8 scales, six-bit quants centred on 32", () => {
  const block = new Uint8Array(210);
  const scales = Array.from({ length: 16 }, (_, i) => i - 8); // negative scales too
  const quants = Array.from({ length: 256 }, (_, i) => (i * 37) % 64);
  for (let i = 0; i < 16; i++) block[192 + i] = scales[i]! & 0xff;
  block.set(halfBytes(0.5), 208);
  // Element e of half n (128 each): position l = e % 32 and group k = floor(e / 32) within the half.
  for (let n = 0; n < 2; n++) {
    for (let k = 0; k < 4; k++) {
      for (let l = 0; l < 32; l++) {
        const q = quants[128 * n + 32 * k + l]!;
        const lowAt = 64 * n + l + (k % 2) * 32;
        block[lowAt] = block[lowAt]! | ((q & 0xf) << (k >= 2 ? 4 : 0));
        const highAt = 128 + 32 * n + l;
        block[highAt] = block[highAt]! | ((q >> 4) << (2 * k));
      }
    }
  }
  const got = decode("Q6_K", block);
  for (let e = 0; e < 256; e++) {
    const scale = scales[8 * Math.floor(e / 128) + Math.floor((e % 32) / 16) + 2 * Math.floor((e % 128) / 32)]!;
    assert.equal(got[e], 0.5 * scale * (quants[e]! - 32), `element ${e}`);
  }
});

test("quantize then dequantize: Q8_0 within half a step, Q4_0 within one step (plus the float16 scale's rounding)", () => {
  const x = Float32Array.from({ length: 256 }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
  for (const [name, steps] of [["Q8_0", 127], ["Q4_0", 8]] as const) {
    const back = decode(name, QUANTIZERS[name](x), x.length / 32);
    for (let b = 0; b < x.length / 32; b++) {
      const block = x.subarray(32 * b, 32 * b + 32);
      const step = Math.max(...block.map(Math.abs)) / steps;
      // The scale is stored as float16 (relative error 2^-11), multiplied by quants up to 128.
      const bound = ((name === "Q8_0" ? 0.5 : 1) + 128 * 2 ** -11) * step;
      for (let j = 0; j < 32; j++) assert.ok(Math.abs(back[32 * b + j]! - block[j]!) <= bound, `${name} block ${b} element ${j}`);
    }
  }
});

test("dequantize refuses a byte buffer shorter than the blocks it needs", () => {
  assert.throws(() => dequantize("Q4_K", new Uint8Array(100), new Float32Array(256)), /Q4_K: 256 elements need 144 bytes/);
  assert.throws(() => dequantize("Q8_0", new Uint8Array(34), new Float32Array(31)), /whole blocks of 32/);
});

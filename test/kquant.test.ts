// The quantizers shortgpt adds for K-quant files, byte-exact with llama.cpp's own: Q4_K, Q5_K and
// Q6_K against ggml's reference C functions, Q5_0 and Q5_1 (llama.cpp's fallbacks for rows that are
// not whole blocks of 256) against gguf-py (golden written by test/oracle/ggml_kquant.py); and the
// blocks they write read back by gguf-py to the values shortgpt's dequantizer gives.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { dequantize, QUANT_BLOCKS, QUANTIZERS } from "../src/tensor/quant.js";
import { repoRoot } from "../src/shared.js";

interface Golden {
  explicit: { input: string; bytes: Record<string, string>; dequantized: Record<string, string> };
  generated: { seed: number; length: number; sha256: Record<string, string>; input_sha256: string };
}
const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "ggml_kquant.json"), "utf8")) as Golden;
const TYPES = ["Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1"] as const;

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
const bytesOf = (x: Float32Array): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

function explicitInput(): Float32Array {
  const raw = Buffer.from(golden.explicit.input, "hex");
  return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
}

/** The oracle's generated row: a 32-bit LCG, v = top 24 bits / 2^23 - 1, x = 2 v^3 + v / 8, all exact in float32. */
function generatedInput(n: number, seed: number): Float32Array {
  const f = Math.fround;
  const out = new Float32Array(n);
  let state = seed >>> 0;
  for (let i = 0; i < n; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const v = f((state >>> 8) / 8388608 - 1);
    out[i] = f(f(f(f(v * v) * v) * 2) + f(v / 8));
  }
  return out;
}

test("K-quant, Q5_0 and Q5_1 quantizers write llama.cpp's bytes on edge-case rows (zeros, outlier, all positive, constant, tiny)", () => {
  const x = explicitInput();
  for (const name of TYPES) {
    const got = Buffer.from(QUANTIZERS[name](x)).toString("hex");
    const want = golden.explicit.bytes[name]!;
    let firstDiff = 0;
    while (firstDiff < want.length && got[firstDiff] === want[firstDiff]) firstDiff++;
    assert.equal(got.length, want.length, name);
    assert.ok(got === want, `${name}: first differing byte ${firstDiff >> 1} (block ${Math.floor((firstDiff >> 1) / QUANT_BLOCKS[name].blockBytes)})`);
  }
});

test("K-quant, Q5_0 and Q5_1 quantizers write llama.cpp's bytes on 64 generated blocks (sha256)", () => {
  const { seed, length, sha256: want, input_sha256 } = golden.generated;
  const x = generatedInput(length, seed);
  assert.equal(sha256(bytesOf(x)), input_sha256, "the generated input is the oracle's");
  for (const name of TYPES) assert.equal(sha256(QUANTIZERS[name](x)), want[name], name);
});

test("gguf-py dequantizes the reference blocks to the values shortgpt's dequantizer gives", () => {
  const x = explicitInput();
  for (const name of TYPES) {
    const values = new Float32Array(x.length);
    dequantize(name, Buffer.from(golden.explicit.bytes[name]!, "hex"), values);
    assert.equal(sha256(bytesOf(values)), golden.explicit.dequantized[name], name);
  }
});

test("quantize then dequantize: K-quants stay within a few steps of each sub-block's range", () => {
  const x = generatedInput(256 * 8, 7);
  // Levels per sub-block: Q4_K 15, Q5_K 31, Q6_K 63 (symmetric); scales and mins are 6-bit, so allow 2 steps.
  for (const [name, levels] of [["Q4_K", 15], ["Q5_K", 31], ["Q6_K", 63]] as const) {
    const back = new Float32Array(x.length);
    dequantize(name, QUANTIZERS[name](x), back);
    const sub = name === "Q6_K" ? 16 : 32;
    let worst = 0;
    for (let s = 0; s < x.length / sub; s++) {
      const block = x.subarray(sub * s, sub * s + sub);
      const range = Math.max(...block) - Math.min(0, ...block);
      for (let j = 0; j < sub; j++) worst = Math.max(worst, Math.abs(back[sub * s + j]! - block[j]!) / (range / levels));
    }
    assert.ok(worst <= 2, `${name}: worst error ${worst.toFixed(2)} steps`);
  }
});

// Unit tests with values checkable by hand: RMSNorm, RoPE, softmax, cosine accumulation,
// matmul, float16 decoding.

import assert from "node:assert/strict";
import { test } from "node:test";
import { causalAttention, logSumExp, matmul, rmsNorm, ropeHalf, ropeInverseFrequencies, softmax } from "../src/backend/reference.js";
import { CosineAccumulator, rowCosine } from "../src/metrics/cosine.js";
import { f16ToF32 } from "../src/tensor/dtype.js";

const close = (a: number, b: number, tol = 1e-12): void => assert.ok(Math.abs(a - b) <= tol, `${a} != ${b}`);

test("rmsNorm: [3, 4] has mean square 12.5, so it scales by 1/sqrt(12.5)", () => {
  const out = new Float64Array(2);
  rmsNorm(out, Float64Array.of(3, 4), Float32Array.of(1, 2), 1, 2, 0);
  close(out[0]!, 3 / Math.sqrt(12.5));
  close(out[1]!, (2 * 4) / Math.sqrt(12.5));
  // eps enters under the square root
  rmsNorm(out, Float64Array.of(0, 0), Float32Array.of(1, 1), 1, 2, 1);
  assert.deepEqual([...out], [0, 0]);
});

test("rope: position 0 is the identity; position 1 turns pair (i, i+d/2) by theta^(-2i/d)", () => {
  const inv = ropeInverseFrequencies(4, 10000);
  close(inv[0]!, 1);
  close(inv[1]!, 0.01);
  const x = Float64Array.of(1, 2, 3, 4, 1, 0, 1, 0); // two tokens, one head of size 4
  ropeHalf(x, 2, 1, 4, 0, inv);
  assert.deepEqual([...x.subarray(0, 4)], [1, 2, 3, 4]);
  // token 1: pair (x0, x2) = (1, 1) turns by 1 rad; pair (x1, x3) = (0, 0) stays 0
  close(x[4]!, Math.cos(1) - Math.sin(1));
  close(x[6]!, Math.cos(1) + Math.sin(1));
  close(x[5]!, 0);
  close(x[7]!, 0);
  // startPos shifts positions: a single token at startPos 1 equals token 1 above
  const y = Float64Array.of(1, 0, 1, 0);
  ropeHalf(y, 1, 1, 4, 1, inv);
  assert.deepEqual([...y], [...x.subarray(4)]);
});

test("softmax and logSumExp: [0, ln 3] gives [1/4, 3/4]; large values stay finite", () => {
  const x = Float64Array.of(0, Math.log(3));
  close(logSumExp(x, 0, 2), Math.log(4));
  softmax(x, 0, 2);
  close(x[0]!, 0.25);
  close(x[1]!, 0.75);
  const big = Float64Array.of(1000, 1000);
  softmax(big, 0, 2);
  assert.deepEqual([...big], [0.5, 0.5]);
});

test("matmul: x (2x3) times w^T with w (2x3) stored (out, in)", () => {
  const out = new Float64Array(4);
  matmul(out, Float64Array.of(1, 2, 3, 4, 5, 6), Float32Array.of(1, 0, 0, 1, 1, 1), 2, 3, 2);
  assert.deepEqual([...out], [1, 6, 4, 15]);
});

test("causal attention: the first token attends only to itself; equal scores average values", () => {
  // one head, headDim 2, q = 0 so all scores are equal
  const q = new Float64Array(4);
  const k = Float64Array.of(1, 0, 0, 1);
  const v = Float64Array.of(2, 4, 6, 8);
  const out = new Float64Array(4);
  causalAttention(out, q, k, v, new Float64Array(2), 2, 0, 1, 1, 2);
  assert.deepEqual([...out], [2, 4, 4, 6]);
});

test("cosine: parallel = 1, orthogonal = 0, opposite = -1; the accumulator averages per token", () => {
  close(rowCosine(Float64Array.of(1, 2), Float64Array.of(2, 4), 0, 2), 1);
  close(rowCosine(Float64Array.of(1, 0), Float64Array.of(0, 3), 0, 2), 0);
  close(rowCosine(Float64Array.of(1, 1), Float64Array.of(-1, -1), 0, 2), -1);
  close(rowCosine(Float64Array.of(0, 0), Float64Array.of(0, 0), 0, 2), 1);
  const acc = new CosineAccumulator(2);
  // layer 1, two tokens: cos 1 and cos 0 -> mean 0.5; a second call with one token of cos -1
  acc.add(1, Float64Array.of(1, 0, 1, 0), Float64Array.of(5, 0, 0, 2), 2, 2);
  acc.add(1, Float64Array.of(1, 0), Float64Array.of(-1, 0), 1, 2);
  close(acc.mean(1), (1 + 0 - 1) / 3);
  assert.equal(acc.counts[0], 0);
});

test("float16: 1.0, -2.0, 65504, smallest subnormal, infinity", () => {
  assert.equal(f16ToF32(0x3c00), 1);
  assert.equal(f16ToF32(0xc000), -2);
  assert.equal(f16ToF32(0x7bff), 65504);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.equal(f16ToF32(0x7c00), Infinity);
});

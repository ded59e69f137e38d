// The native scans of the batched recurrent layers and the RWKV glue around them
// (native/recurrent_scan.c, src/backend/rwkvGlue.ts) against their TypeScript twins: the same layer call with the helper switched on and off, its projections
// from a kernel that hands out random values and keeps what it was given, so the scans see random
// inputs and their outputs (the inputs of the next projection) are compared directly; the same
// values for every thread count; and bad arguments refused with an error naming the array.

import assert from "node:assert/strict";
import { test } from "node:test";
import { type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims, type SideStreams } from "../src/backend/backend.js";
import type { LinearKernel } from "../src/backend/linearKernel.js";
import { batchedRecurrentLayer } from "../src/backend/recurrentLayer.js";
import { RECURRENT_SCAN_HELPER_PATH, recurrentNative, type RecurrentScanNative, setRecurrentNative } from "../src/backend/recurrentNative.js";
import { xorshiftFill } from "../src/util/random.js";
import { scaledError } from "./helpers.js";

// Both paths compute in float64 and round the scans' outputs to float32; they differ only in the
// order of a few sums and in exp's last bits, so at most a float32 rounding step apart.
// Measured: 0 on every case here (the float64 differences vanish in the rounding); a scan output
// off by 1e-4 of itself fails.
const BOUND = 1e-6;

/** Random weights: matrices scaled by 1/sqrt(fan-in), vectors spread over +-`spread` (decays and gates well inside their ranges). */
function randomWeights(shape: LayerShape, seed: number, spread = 0.5): LayerWeightsF32 {
  const weights: Partial<LayerWeightsF32> = {};
  let s = seed;
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) {
    const n = dims.reduce((a, b) => a * b, 1);
    const matrix = dims.length === 2 && name !== "mambaALog" && name !== "mambaConv";
    weights[name] = xorshiftFill(n, matrix ? 1 / Math.sqrt(dims[1]!) : spread, s++);
  }
  return weights as LayerWeightsF32;
}

/**
 * A LinearKernel that ignores its weights: call i returns values spread over +-spread from seed i,
 * and keeps a copy of what it was given. Both paths then see the same projections, and the scans'
 * outputs are what the following projection was given.
 */
function recordingLinear(spread: number): { linear: LinearKernel; inputs: Float32Array[] } {
  const inputs: Float32Array[] = [];
  const linear: LinearKernel = async (x, rows, _w, nOut) => {
    inputs.push(Float32Array.from(x));
    return xorshiftFill(rows * nOut, spread, 1000 + inputs.length);
  };
  return { linear, inputs };
}

const MAMBA: LayerShape = {
  kind: "mamba", mamba: { dInner: 96, dState: 16, dtRank: 6, convKernel: 4, convBias: true },
  dim: 48, hiddenDim: 96, nHeads: 1, nKvHeads: 1, headDim: 48, normEps: 1e-5, ropeTheta: 10000,
};
const MAMBA_ODD: LayerShape = {
  kind: "mamba", mamba: { dInner: 37, dState: 5, dtRank: 3, convKernel: 3, convBias: false },
  dim: 20, hiddenDim: 37, nHeads: 1, nKvHeads: 1, headDim: 20, normEps: 1e-5, ropeTheta: 10000,
};
const RWKV4: LayerShape = { kind: "rwkv4", rwkvAttDim: 72, dim: 64, hiddenDim: 128, nHeads: 1, nKvHeads: 1, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };
const RWKV7: LayerShape = {
  kind: "rwkv7", rwkv7: { headSize: 64, decayRank: 8, iclrRank: 8, valueRank: 8, gateRank: 8 },
  dim: 128, hiddenDim: 256, nHeads: 2, nKvHeads: 2, headDim: 64, normEps: 1e-5, ropeTheta: 10000,
};
const RWKV7_SMALL_HEADS: LayerShape = {
  kind: "rwkv7", rwkv7: { headSize: 6, decayRank: 4, iclrRank: 4, valueRank: 4, gateRank: 4 },
  dim: 30, hiddenDim: 40, nHeads: 5, nKvHeads: 5, headDim: 6, normEps: 1e-5, ropeTheta: 10000,
};

interface Case {
  name: string;
  shape: LayerShape;
  weights: LayerWeightsF32;
  /** Spread of the random projections: large ones push RWKV-4's running maximum and Mamba's decays to their edges. */
  spread: number;
  /** RWKV-7 blocks after the first read the first block's values. */
  vFirst?: boolean;
}

const cases: Case[] = [
  { name: "mamba", shape: MAMBA, weights: randomWeights(MAMBA, 1), spread: 1 },
  // A_log up to 6: A dt far below -708 for large dt, where exp underflows.
  { name: "mamba, steep decays", shape: MAMBA, weights: { ...randomWeights(MAMBA, 2), mambaALog: xorshiftFill(96 * 16, 3, 77, 3) }, spread: 30 },
  { name: "mamba, odd sizes, no conv bias", shape: MAMBA_ODD, weights: randomWeights(MAMBA_ODD, 3), spread: 1 },
  { name: "rwkv4", shape: RWKV4, weights: randomWeights(RWKV4, 4), spread: 1 },
  { name: "rwkv4, large keys", shape: RWKV4, weights: randomWeights(RWKV4, 5, 3), spread: 40 },
  { name: "rwkv7, first block", shape: RWKV7, weights: randomWeights(RWKV7, 6), spread: 1 },
  { name: "rwkv7, a later block", shape: RWKV7, weights: randomWeights(RWKV7, 7), spread: 2, vFirst: true },
  { name: "rwkv7, heads of 6", shape: RWKV7_SMALL_HEADS, weights: randomWeights(RWKV7_SMALL_HEADS, 8), spread: 1, vFirst: true },
];

async function runCase(c: Case, native: boolean, threads: number, nWindows = 3, seqLen = 40): Promise<{ out: Float32Array; inputs: Float32Array[] }> {
  const x = xorshiftFill(nWindows * seqLen * c.shape.dim, 1, 5);
  const side: SideStreams = c.vFirst ? { rwkv7VFirst: Float64Array.from(xorshiftFill(x.length, 1, 6)) } : {};
  const { linear, inputs } = recordingLinear(c.spread);
  setRecurrentNative(native);
  try {
    const out = await batchedRecurrentLayer(x, nWindows, seqLen, c.weights, c.shape, linear, side, threads);
    return { out, inputs };
  } finally {
    setRecurrentNative(true);
  }
}

// This file switches the helper on and off itself, so it runs the same under SHORTGPT_NATIVE_SCAN=0.
test("the native scan helper is built (npm install runs scripts/build-native.mjs) and can be switched off", () => {
  setRecurrentNative(true);
  assert.ok(recurrentNative(), `${RECURRENT_SCAN_HELPER_PATH} is built by npm install`);
  setRecurrentNative(false);
  assert.equal(recurrentNative(), undefined);
  setRecurrentNative(true);
  assert.ok(recurrentNative());
});

test("native scans equal their TypeScript twins on random projections: every GEMM input and the layer's output", async () => {
  for (const c of cases) {
    const twin = await runCase(c, false, 1);
    const native = await runCase(c, true, 2);
    assert.equal(native.inputs.length, twin.inputs.length, `${c.name}: the same projections ran`);
    twin.inputs.forEach((want, i) => {
      const err = scaledError(native.inputs[i]!, want);
      assert.ok(err < BOUND, `${c.name}: the input of projection ${i} is off by ${err} of its scale`);
    });
    const err = scaledError(native.out, twin.out);
    assert.ok(err < BOUND, `${c.name}: the layer's output is off by ${err} of its scale`);
    assert.ok(native.out.every(Number.isFinite), `${c.name}: finite output`);
  }
});

test("native scans give the same values for every thread count (work splits over independent channels and heads)", async () => {
  for (const c of cases) {
    const one = await runCase(c, true, 1);
    for (const threads of [2, 3, 7]) {
      const many = await runCase(c, true, threads);
      assert.deepEqual(many.out, one.out, `${c.name}: ${threads} threads`);
    }
  }
});

test("native scans with no windows and with windows of one token", async () => {
  for (const c of cases) {
    const empty = await runCase(c, true, 2, 0, 5);
    assert.equal(empty.out.length, 0);
    const single = await runCase(c, true, 2, 4, 1);
    const twin = await runCase(c, false, 1, 4, 1);
    assert.ok(scaledError(single.out, twin.out) < BOUND, `${c.name}: one-token windows`);
  }
});

function expectThrow(f: () => void, kind: typeof TypeError | typeof RangeError, pattern: RegExp, what: string): void {
  assert.throws(f, (e: unknown) => e instanceof kind && pattern.test((e as Error).message), what);
}

test("native scans refuse arrays of the wrong length or type, naming them, rather than reading past them", () => {
  setRecurrentNative(true);
  const native = recurrentNative() as RecurrentScanNative;
  const f = (n: number): Float32Array => new Float32Array(n);
  // RWKV-4: 2 windows of 3 tokens, att 4.
  const k4 = (): Float32Array => f(24);
  native.rwkv4Wkv(k4(), k4(), k4(), k4(), f(4), f(4), 2, 3, 2);
  expectThrow(() => native.rwkv4Wkv(k4(), f(23), k4(), k4(), f(4), f(4), 2, 3, 2), RangeError, /rwkv4Wkv: k has 23 values, expected 24/, "short k");
  expectThrow(() => native.rwkv4Wkv(f(25), k4(), k4(), k4(), f(4), f(4), 2, 3, 2), RangeError, /wkv has 25 values/, "long output");
  expectThrow(() => native.rwkv4Wkv(k4(), k4(), k4(), k4(), f(4), f(3), 2, 3, 2), RangeError, /timeFirst has 3 values, expected 4/, "short timeFirst");
  expectThrow(() => native.rwkv4Wkv(k4(), k4(), k4(), k4(), f(4), f(4), 2, 4, 2), RangeError, /expected 32/, "more tokens than the arrays hold");
  expectThrow(() => native.rwkv4Wkv(k4(), new Float64Array(24) as unknown as Float32Array, k4(), k4(), f(4), f(4), 2, 3, 2), TypeError, /k must be a Float32Array/, "float64 k");
  expectThrow(() => native.rwkv4Wkv(k4(), k4(), k4(), k4(), f(4), f(4), 2, 3, 0), RangeError, /threads must be an integer >= 1/, "no threads");
  expectThrow(() => native.rwkv4Wkv(k4(), k4(), k4(), k4(), f(4), f(4), 1.5, 3, 1), RangeError, /nWindows must be an integer/, "fractional windows");
  expectThrow(() => native.rwkv4Wkv(k4(), k4(), k4(), k4(), f(4), f(4), 2 ** 40, 2 ** 40, 1), RangeError, /overflows/, "an overflowing product");
  expectThrow(() => (native.rwkv4Wkv as unknown as (...a: unknown[]) => void)(k4(), k4()), TypeError, /rwkv4Wkv: expected 9 arguments/, "missing arguments");
  // RWKV-7: 1 window of 2 tokens, dim 8, heads of 4.
  const n7 = 16;
  const args7 = (over: Partial<Record<number, unknown>> = {}): unknown[] => {
    const a: unknown[] = [f(n7), f(n7), f(n7), f(n7), new Float64Array(n7), f(n7), f(n7), ...Array.from({ length: 7 }, () => f(8)), 1, 2, 4, 2];
    for (const [i, v] of Object.entries(over)) a[Number(i)] = v;
    return a;
  };
  const rwkv7 = native.rwkv7Scan as unknown as (...a: unknown[]) => void;
  rwkv7(...args7());
  expectThrow(() => rwkv7(...args7({ 4: f(n7) })), TypeError, /v must be a Float64Array/, "float32 v");
  expectThrow(() => rwkv7(...args7({ 4: new Float64Array(n7 - 1) })), RangeError, /v has 15 values, expected 16/, "short v");
  expectThrow(() => rwkv7(...args7({ 6: f(n7 - 2) })), RangeError, /gate has 14 values/, "short gate");
  expectThrow(() => rwkv7(...args7({ 12: f(7) })), RangeError, /lnX has 7 values, expected 8/, "short lnX");
  expectThrow(() => rwkv7(...args7({ 16: 3 })), RangeError, /headSize 3 does not divide dim 8/, "a head size that does not divide dim");
  const d = (n: number): Float64Array => new Float64Array(n);
  native.rwkv7ValueResidual(d(16), f(16), d(16), f(16), f(8), 2);
  expectThrow(() => native.rwkv7ValueResidual(d(16), f(16), d(15), f(16), f(8), 2), RangeError, /vFirst has 15 values, expected 16/, "short vFirst");
  expectThrow(() => native.rwkv7ValueResidual(d(16), f(16), d(16), f(16), f(5), 2), RangeError, /not a whole number of rows/, "ragged rows");
  expectThrow(() => native.rwkv7ValueResidual(f(16) as unknown as Float64Array, f(16), d(16), f(16), f(8), 2), TypeError, /v must be a Float64Array/, "float32 v");
  native.rmsNorm(f(12), f(12), f(4), 1e-5, 2);
  expectThrow(() => native.rmsNorm(f(12), f(10), f(4), 1e-5, 2), RangeError, /not a whole number of rows/, "ragged rows");
  expectThrow(() => native.rmsNorm(f(8), f(12), f(4), 1e-5, 2), RangeError, /out has 8 values, expected 12/, "a short output");
  // Mamba: 1 window of 3 tokens, dInner 4, dState 2, dtRank 1, kernel 2.
  native.mambaConvSilu(f(12), f(24), f(8), null, 1, 3, 2, 2);
  native.mambaConvSilu(f(12), f(24), f(8), f(4), 1, 3, 2, 2);
  expectThrow(() => native.mambaConvSilu(f(12), f(23), f(8), null, 1, 3, 2, 2), RangeError, /projected has 23 values, expected 24/, "short projected");
  expectThrow(() => native.mambaConvSilu(f(12), f(24), f(8), f(3), 1, 3, 2, 2), RangeError, /bias has 3 values, expected 4/, "short bias");
  expectThrow(() => native.mambaConvSilu(f(12), f(24), f(9), null, 1, 3, 2, 2), RangeError, /not a multiple of convKernel/, "a ragged conv");
  const scan = (over: Partial<Record<number, unknown>> = {}): void => {
    const a: unknown[] = [f(12), f(12), f(24), f(3 * 5), f(12), f(8), f(4), f(4), 1, 3, 2, 1, 2];
    for (const [i, v] of Object.entries(over)) a[Number(i)] = v;
    (native.mambaScan as unknown as (...a: unknown[]) => void)(...a);
  };
  scan();
  expectThrow(() => scan({ 3: f(14) }), RangeError, /params has 14 values, expected 15/, "short params");
  expectThrow(() => scan({ 5: f(7) }), RangeError, /aLog has 7 values, expected 8/, "short aLog");
  expectThrow(() => scan({ 10: 3 }), RangeError, /params has 15 values, expected 21/, "a dState the arrays do not hold");
  expectThrow(() => scan({ 7: f(5) }), RangeError, /d has 5 values, expected 4/, "long D");
  // The RWKV glue: 2 windows of 3 tokens, dim 4.
  const mix = (over: Partial<Record<number, unknown>> = {}): void => {
    const a: unknown[] = [[f(24), f(24)], f(24), null, f(4), f(4), [f(4), f(4)], 2, 3, 1e-5, false, 2];
    for (const [i, v] of Object.entries(over)) a[Number(i)] = v;
    (native.layerNormShiftMix as unknown as (...a: unknown[]) => void)(...a);
  };
  mix();
  mix({ 2: f(24), 9: true });
  expectThrow(() => mix({ 0: [f(24), f(23)] }), RangeError, /outs\[1\] has 23 values, expected 24/, "a short output");
  expectThrow(() => mix({ 5: [f(4)] }), RangeError, /outs and mixes differ in length/, "fewer mixes than outputs");
  expectThrow(() => mix({ 5: [f(4), f(3)] }), RangeError, /mixes\[1\] has 3 values, expected 4/, "a short mix");
  expectThrow(() => mix({ 2: f(20) }), RangeError, /add has 20 values, expected 24/, "a short add");
  expectThrow(() => mix({ 0: [], 5: [] }), RangeError, /outs must hold 1 to 8 arrays/, "no outputs");
  expectThrow(() => native.residualAdd(f(8), f(8), f(7), null, f(8), 1), RangeError, /residualAdd: add has 7 values, expected 8/, "a short add");
  expectThrow(() => native.residualAdd(f(8), f(8), f(8), f(9), f(8), 1), RangeError, /gate has 9 values/, "a long gate");
  expectThrow(() => native.reluSquare(new Float64Array(4) as unknown as Float32Array, 1), TypeError, /h must be a Float32Array/, "float64 h");
});

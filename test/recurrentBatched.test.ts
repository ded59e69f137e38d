// The batched recurrent layers (projections over every window's tokens through a LinearKernel,
// scans in C, or in TypeScript with SHORTGPT_NATIVE_SCAN=0) against the float64 reference layers:
// on the transformers-saved fixtures' real layers and on medium random shapes (RWKV-7's real
// layers: test/rwkv7.test.ts), with the plain twin of the GEMM, with onnxruntime's Gemm on the
// onnx backends, native and WebAssembly (whose session counts prove the fast path ran), and with
// the CPU bf16 engine's GEMM.

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims } from "../src/backend/backend.js";
import { plainLinear } from "../src/backend/linearKernel.js";
import { createCpuBf16Kernels } from "../src/backend/cpuBf16/bf16Kernels.js";
import { cpuBf16Availability } from "../src/backend/cpuBf16/native.js";
import { createOrtKernels } from "../src/backend/ortBackend.js";
import { batchedRecurrentLayer } from "../src/backend/recurrentLayer.js";
import { createReferenceKernels } from "../src/backend/referenceBackend.js";
import { openModel } from "../src/load.js";
import { loadLlamaLayer } from "../src/models/llama.js";
import { layerShape } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { xorshiftFill } from "../src/util/random.js";
import { scaledError } from "./helpers.js";

// Bounds on the layer's update (output - input) relative to its largest value: float32 between the
// GEMMs against the reference's float64 everywhere. Measured: fixtures <= 1.4e-7 (plain twin) and
// <= 4.7e-7 (onnx), the medium random Mamba 1.2e-6 / 1.3e-6 (its random dt and B, C rounded to float32).
const PLAIN_BOUND = 5e-6;
const ONNX_BOUND = 5e-6;
// The bf16 engine rounds every GEMM input to bf16 (8 bits of mantissa). Measured: <= 8.8e-3 (RWKV-7 medium random).
const BF16_BOUND = 2e-2;

interface Case {
  name: string;
  shape: LayerShape;
  weights: LayerWeightsF32;
  nWindows: number;
  seqLen: number;
  /** Matrix products per layer call: sessions that must run once per chunk of rows. */
  nLinear: number;
}

function fixtureCases(): Case[] {
  return (["mamba", "rwkv4"] as const).flatMap((family) => {
    const opened = openModel(join(repoRoot(), "test", "fixtures", `${family}_tiny`));
    try {
      return Array.from({ length: opened.config.nLayers }, (_, layer) => ({
        name: `${family}_tiny layer ${layer}`, shape: layerShape(opened.config, layer), weights: loadLlamaLayer(opened.provider, opened.config, opened.names, layer) as LayerWeightsF32,
        nWindows: 3, seqLen: 12, nLinear: family === "mamba" ? 4 : 7,
      }));
    } finally {
      opened.close();
    }
  });
}

/** Random weights of a medium shape: uniform, scaled by 1/sqrt(fan-in) for matrices, norms near 1. */
function randomWeights(shape: LayerShape, seed: number): LayerWeightsF32 {
  const weights: Partial<LayerWeightsF32> = {};
  let s = seed;
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) {
    const n = dims.reduce((a, b) => a * b, 1);
    const norm = name === "attnNorm" || name === "ffnNorm";
    const spread = dims.length === 2 && !name.startsWith("mambaALog") ? 1 / Math.sqrt(dims[1]!) : 0.5;
    weights[name] = xorshiftFill(n, norm ? 0.1 : spread, s++, norm ? 1 : 0);
  }
  return weights as LayerWeightsF32;
}

const MEDIUM_MAMBA: LayerShape = {
  kind: "mamba", mamba: { dInner: 128, dState: 16, dtRank: 4, convKernel: 4, convBias: true },
  dim: 64, hiddenDim: 128, nHeads: 1, nKvHeads: 1, headDim: 64, normEps: 1e-5, ropeTheta: 10000,
};
const MEDIUM_RWKV4: LayerShape = { kind: "rwkv4", rwkvAttDim: 64, dim: 64, hiddenDim: 256, nHeads: 1, nKvHeads: 1, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };
// Two heads of llama.cpp's size 64; the real layers of the rwkv7 GGUF fixture are in test/rwkv7.test.ts.
const MEDIUM_RWKV7: LayerShape = {
  kind: "rwkv7", rwkv7: { headSize: 64, decayRank: 16, iclrRank: 16, valueRank: 8, gateRank: 16 },
  dim: 128, hiddenDim: 256, nHeads: 2, nKvHeads: 2, headDim: 64, normEps: 1e-5, ropeTheta: 10000,
};

const cases = (): Case[] => [
  ...fixtureCases(),
  { name: "mamba medium random", shape: MEDIUM_MAMBA, weights: randomWeights(MEDIUM_MAMBA, 11), nWindows: 2, seqLen: 64, nLinear: 4 },
  { name: "rwkv4 medium random", shape: MEDIUM_RWKV4, weights: randomWeights(MEDIUM_RWKV4, 23), nWindows: 2, seqLen: 64, nLinear: 7 },
  // Without side streams the block is a first one (it starts v_first): 4 square matrices, 3 LoRAs of 2, channel mixing's 2.
  { name: "rwkv7 medium random", shape: MEDIUM_RWKV7, weights: randomWeights(MEDIUM_RWKV7, 31), nWindows: 2, seqLen: 64, nLinear: 12 },
];

const update = (out: Float32Array, x: Float32Array): Float64Array => Float64Array.from(out, (v, i) => v - x[i]!);

test("batched recurrent layers with the plain GEMM twin equal the float64 reference layers", async () => {
  const reference = createReferenceKernels();
  for (const c of cases()) {
    const x = xorshiftFill(c.nWindows * c.seqLen * c.shape.dim, 1, 7);
    const want = update(await reference.runLayer(x, c.nWindows, c.seqLen, c.weights, c.shape), x);
    const got = update(await batchedRecurrentLayer(x, c.nWindows, c.seqLen, c.weights, c.shape, plainLinear), x);
    const err = scaledError(got, want);
    assert.ok(err < PLAIN_BOUND, `${c.name}: update off by ${err} of its scale`);
    // The windows are independent: a later window's update is not the first's (each starts from a zero state, on different input).
    assert.ok(want.some((v) => v !== 0));
  }
});

for (const flavor of ["node", "web"] as const) test(`the onnxruntime-${flavor} backend runs recurrent projections through Gemm sessions and equals the reference`, async () => {
  const reference = createReferenceKernels();
  // Runs of 8 rows split every layer call's GEMMs across window boundaries.
  const onnx = await createOrtKernels({ threads: 1, flavor, maxRowsPerRun: 8 });
  try {
    for (const c of cases()) {
      const x = xorshiftFill(c.nWindows * c.seqLen * c.shape.dim, 1, 9);
      const runsBefore = onnx.stats.sessionRuns;
      const got = update(await onnx.runLayer(x, c.nWindows, c.seqLen, c.weights, c.shape), x);
      assert.equal(onnx.stats.sessionRuns - runsBefore, c.nLinear * Math.ceil((c.nWindows * c.seqLen) / 8), `${c.name}: every projection ran in onnxruntime, in runs of 8 rows`);
      const want = update(await reference.runLayer(x, c.nWindows, c.seqLen, c.weights, c.shape), x);
      const err = scaledError(got, want);
      assert.ok(err < ONNX_BOUND, `${flavor} ${c.name}: update off by ${err} of its scale`);
    }
    assert.ok(onnx.stats.sessionsCreated >= 4, "one Gemm session per (in, out) pair");
  } finally {
    await onnx.dispose();
  }
});

test("a second window of the same tokens gets the same update as the first (each scan starts from a zero state)", async () => {
  const onnx = await createOrtKernels({ threads: 1, flavor: "node" });
  try {
    for (const shape of [MEDIUM_MAMBA, MEDIUM_RWKV4, MEDIUM_RWKV7]) {
      const weights = randomWeights(shape, 5);
      const one = xorshiftFill(32 * shape.dim, 1, 3);
      const two = new Float32Array(2 * one.length);
      two.set(one);
      two.set(one, one.length);
      const out = await onnx.runLayer(two, 2, 32, weights, shape);
      assert.deepEqual(out.subarray(one.length), out.subarray(0, one.length), `${shape.kind}: the second window carried state from the first`);
    }
  } finally {
    await onnx.dispose();
  }
});

const bf16Skip = cpuBf16Availability().ok ? false : "the CPU bf16 engine is not available here";

test("the CPU bf16 engine runs the recurrent layers' projections on its bf16 GEMM, near the float64 reference", { skip: bf16Skip }, async (t) => {
  const reference = createReferenceKernels();
  const bf16 = await createCpuBf16Kernels({ threads: 2 });
  try {
    let worst = 0;
    for (const c of cases()) {
      const x = xorshiftFill(c.nWindows * c.seqLen * c.shape.dim, 1, 13);
      const want = update(await reference.runLayer(x, c.nWindows, c.seqLen, c.weights, c.shape), x);
      const got = update(await bf16.runLayer(x, c.nWindows, c.seqLen, c.weights, c.shape), x);
      const err = scaledError(got, want);
      worst = Math.max(worst, err);
      assert.ok(err < BF16_BOUND, `${c.name}: update off by ${err} of its scale`);
    }
    t.diagnostic(`worst update error ${worst.toExponential(2)} of its scale`);
    assert.deepEqual({ recurrent: bf16.stats.recurrentLayers, fallback: bf16.stats.fallbackLayers }, { recurrent: cases().length, fallback: 0 });
  } finally {
    await bf16.dispose();
  }
});

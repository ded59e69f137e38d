// Seconds per recurrent layer call on the onnx backend at real shapes (Mamba-1.4B, RWKV-4-430M,
// RWKV-7 1.5B as a block after the first, reading a value residual; random weights), split into the host part (norms, conv, scan: the call with a LinearKernel that
// returns zeros) and the rest (onnxruntime's GEMMs), beside the float64 reference layer. Prints a
// table; not a test. With --precision bf16 the layer runs on the CPU bf16 engine (its projections
// on the bf16 GEMM) instead of onnxruntime.
//
//   node dist/bench/recurrentLayerSpeed.js [--windows 2] [--seq-len 256] [--threads 2] [--runs 2] [--reference] [--shapes rwkv-7-1.5b,...] [--precision bf16]

import { parseArgs } from "node:util";
import { type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims, type SideStreams } from "../src/backend/backend.js";
import type { LinearKernel } from "../src/backend/linearKernel.js";
import { createCpuBf16Kernels } from "../src/backend/cpuBf16/bf16Kernels.js";
import { createOrtKernels } from "../src/backend/ortBackend.js";
import { batchedRecurrentLayer } from "../src/backend/recurrentLayer.js";
import { createReferenceKernels } from "../src/backend/referenceBackend.js";
import { xorshiftFill } from "../src/util/random.js";

const SHAPES: Record<string, LayerShape> = {
  "mamba-1.4b": { kind: "mamba", mamba: { dInner: 4096, dState: 16, dtRank: 128, convKernel: 4, convBias: true }, dim: 2048, hiddenDim: 4096, nHeads: 1, nKvHeads: 1, headDim: 2048, normEps: 1e-5, ropeTheta: 10000 },
  "rwkv-4-430m": { kind: "rwkv4", rwkvAttDim: 1024, dim: 1024, hiddenDim: 4096, nHeads: 1, nKvHeads: 1, headDim: 1024, normEps: 1e-5, ropeTheta: 10000 },
  // RWKV7-Goose World 1.5B (bench/random_rwkv7_gguf.py's shape).
  "rwkv-7-1.5b": {
    kind: "rwkv7", rwkv7: { headSize: 64, decayRank: 96, iclrRank: 96, valueRank: 64, gateRank: 256 },
    dim: 2048, hiddenDim: 8192, nHeads: 32, nKvHeads: 32, headDim: 64, normEps: 1e-5, ropeTheta: 10000,
  },
};

const { values } = parseArgs({ options: { windows: { type: "string", default: "2" }, "seq-len": { type: "string", default: "256" }, threads: { type: "string", default: "2" }, runs: { type: "string", default: "2" }, reference: { type: "boolean" }, shapes: { type: "string" }, precision: { type: "string", default: "fp32" } } });
const nWindows = Number(values.windows);
const seqLen = Number(values["seq-len"]);
const runs = Number(values.runs);

function randomWeights(shape: LayerShape): LayerWeightsF32 {
  const w: Partial<LayerWeightsF32> = {};
  let seed = 1;
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) {
    const fanIn = dims.length === 2 && name !== "mambaALog" ? dims[1]! : 4;
    w[name] = xorshiftFill(dims.reduce((a, b) => a * b, 1), 1 / Math.sqrt(fanIn), seed++);
  }
  return w as LayerWeightsF32;
}

async function seconds(f: () => Promise<unknown>): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    await f();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return best;
}

const zeros: LinearKernel = async (_x, rows, _w, nOut) => new Float32Array(rows * nOut);
const onnx = values.precision === "bf16" ? await createCpuBf16Kernels({ threads: Number(values.threads) }) : await createOrtKernels({ threads: Number(values.threads), flavor: "node" });
const rows: Record<string, string | number>[] = [];
for (const [name, shape] of Object.entries(SHAPES).filter(([n]) => values.shapes === undefined || values.shapes.split(",").includes(n))) {
  const w = randomWeights(shape);
  const x = xorshiftFill(nWindows * seqLen * shape.dim, 1, 99);
  // RWKV-7: a block after the first, which reads the first block's values (and runs its value-residual LoRA).
  const vFirst = shape.kind === "rwkv7" ? Float64Array.from(xorshiftFill(x.length, 1, 98)) : undefined;
  const side = (): SideStreams => (vFirst ? { rwkv7VFirst: vFirst } : {});
  await onnx.runLayer(x.subarray(0, seqLen * shape.dim), 1, seqLen, w, shape, undefined, vFirst ? { rwkv7VFirst: vFirst.subarray(0, seqLen * shape.dim) } : {}); // sessions built outside the timing
  const total = await seconds(() => onnx.runLayer(x, nWindows, seqLen, w, shape, undefined, side()));
  const host = await seconds(() => batchedRecurrentLayer(x, nWindows, seqLen, w, shape, zeros, side(), Number(values.threads)));
  const row: Record<string, string | number> = { layer: name, tokens: nWindows * seqLen, "onnx s/layer": total.toFixed(3), "host part s": host.toFixed(3), "GEMM part s": (total - host).toFixed(3), "tokens/s per layer": Math.round((nWindows * seqLen) / total) };
  if (values.reference) {
    const reference = createReferenceKernels();
    const t0 = process.hrtime.bigint();
    await reference.runLayer(x, nWindows, seqLen, w, shape, undefined, side());
    row["reference s/layer"] = (Number(process.hrtime.bigint() - t0) / 1e9).toFixed(3);
  }
  rows.push(row);
}
await onnx.dispose();
console.table(rows);
console.log(JSON.stringify(rows));

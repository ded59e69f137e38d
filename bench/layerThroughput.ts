// Throughput of one Llama decoder layer through the ONNX Runtime backends on a TinyLlama-1.1B
// shaped layer (random weights): seconds per runLayer call and effective GFLOP/s, for each
// backend and graph variant. Prints a table; not a test.
//
//   node dist/bench/layerThroughput.js [--flavors node,web] [--runs 3] [--batch 8] [--seq-len 512] [--threads 2]
//     [--linear gemm,matmul] [--rows 1024,2048] [--arena on,off] [--spinning on,off]
// Every combination of the listed settings is one variant; omitted settings take the backend defaults.

import { parseArgs } from "node:util";
import type { LayerShape, LayerWeightsF32 } from "../src/backend/backend.js";
import type { LinearMode } from "../src/backend/onnx/llamaGraphs.js";
import { createOrtKernels, type OrtFlavor } from "../src/backend/ortBackend.js";
import { xorshiftFill } from "../src/util/random.js";

const TINYLLAMA: LayerShape = { dim: 2048, hiddenDim: 5632, nHeads: 32, nKvHeads: 4, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };

const { values } = parseArgs({
  options: {
    flavors: { type: "string", default: "node,web" },
    runs: { type: "string", default: "3" },
    batch: { type: "string", default: "8" },
    "seq-len": { type: "string", default: "512" },
    threads: { type: "string", default: "2" },
    linear: { type: "string" },
    rows: { type: "string" },
    arena: { type: "string" },
    spinning: { type: "string" },
  },
});
const flavors = values.flavors.split(",") as OrtFlavor[];
const runs = Number(values.runs);
const B = Number(values.batch);
const T = Number(values["seq-len"]);
const threads = Number(values.threads);

/** A fast deterministic fill (xorshift32) in ±spread; the values only need to be plausible. */
const fill = xorshiftFill;

function randomLayer(shape: LayerShape): LayerWeightsF32 {
  const { dim: C, hiddenDim: F, nHeads, nKvHeads, headDim } = shape;
  const q = nHeads * headDim;
  const kv = nKvHeads * headDim;
  const s = (fanIn: number): number => Math.sqrt(3 / fanIn);
  return {
    attnNorm: fill(C, 0.1, 1, 1), wq: fill(q * C, s(C), 2), wk: fill(kv * C, s(C), 3), wv: fill(kv * C, s(C), 4), wo: fill(C * q, s(q), 5),
    ffnNorm: fill(C, 0.1, 6, 1), wGate: fill(F * C, s(C), 7), wDown: fill(C * F, s(F), 8), wUp: fill(F * C, s(C), 9),
  };
}

/**
 * FLOPs of one call: 2 per multiply-add of every linear weight for every token, plus the two
 * attention matmuls (QK^T and PV) over the full T x T square the graph computes (the causal
 * half of it is masked, so counting it flatters attention, which is ~5% of the total here).
 */
function layerFlops(shape: LayerShape, nWindows: number, seqLen: number): { linear: number; attention: number } {
  const { dim: C, hiddenDim: F, nHeads, nKvHeads, headDim: d } = shape;
  const linearParams = C * nHeads * d * 2 + C * nKvHeads * d * 2 + 3 * C * F;
  return { linear: 2 * linearParams * nWindows * seqLen, attention: 2 * 2 * nWindows * nHeads * seqLen * seqLen * d };
}

interface Variant {
  flavor: OrtFlavor;
  linear: LinearMode;
  cpuMemArena: boolean;
  /** Thread-pool spin-waiting (onnxruntime's default on); off can help when other processes share the cores. */
  spinning: boolean;
  /** Token rows per session run (the backend chunks larger batches by whole windows). */
  maxRows: number;
}

const list = (v: string | undefined, fallback: string): string[] => (v ?? fallback).split(",");
const onOff = (v: string): boolean => v === "on";
const variants: Variant[] = [];
for (const flavor of flavors) {
  for (const linear of list(values.linear, "gemm") as LinearMode[]) {
    for (const maxRows of list(values.rows, "1024").map(Number)) {
      for (const cpuMemArena of list(values.arena, "on").map(onOff)) {
        for (const spinning of list(values.spinning, "on").map(onOff)) variants.push({ flavor, linear, maxRows, cpuMemArena, spinning });
      }
    }
  }
}

const weights = randomLayer(TINYLLAMA);
const x = fill(B * T * TINYLLAMA.dim, 1, 10);
const flops = layerFlops(TINYLLAMA, B, T);
const total = flops.linear + flops.attention;
console.log(`TinyLlama-1.1B layer (dim ${TINYLLAMA.dim}, hidden ${TINYLLAMA.hiddenDim}, ${TINYLLAMA.nHeads}/${TINYLLAMA.nKvHeads} heads), B=${B}, T=${T}, ${threads} threads, ${runs} timed calls per variant, interleaved`);
console.log(`${(total / 1e9).toFixed(1)} GFLOP per call (${(flops.linear / 1e9).toFixed(1)} linear + ${(flops.attention / 1e9).toFixed(1)} attention, the full T x T square)`);
console.log(`"cpu-normalized" divides by process CPU seconds / threads: what the call would take with the cores to itself (a lower bound, since spin-waiting counts as CPU)\n`);

interface Timing { wall: number; cpu: number }
const label = (v: Variant): string => `${v.flavor} | ${v.linear} | ${v.maxRows} | ${v.cpuMemArena ? "on" : "off"} | ${v.spinning ? "on" : "off"}`;

async function timeCall(run: () => Promise<unknown>): Promise<Timing> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

// One backend per variant; calls are interleaved across variants so that load from other
// processes on the machine spreads evenly over them instead of skewing one.
const backends = [];
for (const v of variants) {
  try {
    const backend = await createOrtKernels({ threads, flavor: v.flavor, graph: { linear: v.linear }, cpuMemArena: v.cpuMemArena, spinning: v.spinning, maxRowsPerRun: v.maxRows });
    const first = await timeCall(() => backend.runLayer(x, B, T, weights, TINYLLAMA));
    backends.push({ v, backend, first, times: [] as Timing[] });
  } catch (e) {
    console.log(`${label(v)}: failed: ${e instanceof Error ? e.message : String(e)}`);
  }
}
for (let r = 0; r < runs; r++) {
  for (const b of backends) b.times.push(await timeCall(() => b.backend.runLayer(x, B, T, weights, TINYLLAMA)));
}
const median = (a: number[]): number => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)]!;
console.log("| backend | linear | rows/run | mem arena | spinning | first call s | s/call best | s/call median | GFLOP/s best | GFLOP/s median | GFLOP/s cpu-normalized (median) |");
console.log("| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
for (const b of backends) {
  const walls = b.times.map((t) => t.wall);
  const best = Math.min(...walls);
  const med = median(walls);
  const cpuNorm = median(b.times.map((t) => total / (t.cpu / threads) / 1e9));
  console.log(`| ${label(b.v)} | ${b.first.wall.toFixed(2)} | ${best.toFixed(3)} | ${med.toFixed(3)} | ${(total / best / 1e9).toFixed(1)} | ${(total / med / 1e9).toFixed(1)} | ${cpuNorm.toFixed(1)} |`);
  await b.backend.dispose();
}

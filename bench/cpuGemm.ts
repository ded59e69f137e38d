// The CPU's GEMM units, alone: the helper's two bf16 GEMM kernels (native/cpu_bf16.c's own, and
// oneDNN's matmul on plain weights where the helper was built with libdnnl: what the engine runs)
// on the GEMMs of a TinyLlama-1.1B and a Llama-2-7B layer (1024 token rows), beside onnxruntime's
// fp32 Gemm on the same shapes, and on a cache-resident GEMM as the attainable peak; and, where
// Debian's libdnnl-dev is installed, oneDNN standalone with weights reordered to its blocked layout
// (bench/onednn/onednnGemm.cpp, compiled here). oneDNN takes AMX where a CPU has it ("impl").
// Self-contained, for a quick check on another machine (an AMX Xeon, say):
//   node dist/bench/cpuGemm.js [--threads 2] [--runs 3]
// Prints a table on stderr and one JSON object on stdout.

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { repoRoot } from "../src/shared.js";
import { cpuBf16Availability } from "../src/backend/cpuBf16/native.js";
import { attr, encodeModel, GraphBuilder } from "../src/backend/onnx/model.js";
import { xorshiftFill } from "../src/util/random.js";

const { values } = parseArgs({ options: { threads: { type: "string", default: "2" }, runs: { type: "string", default: "3" } } });
const threads = Number(values.threads);
const runs = Number(values.runs);

/** Values in [-0.5, 0.5). */
const fill = (n: number, seed: number): Float32Array => xorshiftFill(n, 0.5, seed);

/** Best of `runs` timings of fn, in seconds (after one warm-up call). */
async function best(fn: () => unknown): Promise<number> {
  await fn();
  let t = Infinity;
  for (let r = 0; r < runs; r++) {
    const started = process.hrtime.bigint();
    await fn();
    t = Math.min(t, Number(process.hrtime.bigint() - started) / 1e9);
  }
  return t;
}

// (m, n, k, what): fused q/k/v, o, fused gate/up, down; m = 1024 token rows.
const SHAPES: [number, number, number, string][] = [
  [1024, 2560, 2048, "TinyLlama qkv"], [1024, 2048, 2048, "TinyLlama o"], [1024, 11264, 2048, "TinyLlama gate+up"], [1024, 2048, 5632, "TinyLlama down"],
  [1024, 12288, 4096, "Llama-2-7B qkv"], [1024, 22016, 4096, "Llama-2-7B gate+up"], [1024, 4096, 11008, "Llama-2-7B down"],
];

const available = cpuBf16Availability();
const ort = await import("onnxruntime-node");
const rows: Record<string, string | number>[] = [];
for (const [m, n, k, what] of SHAPES) {
  const a = fill(m * k, 1);
  const w = fill(n * k, 2);
  const flops = 2 * m * n * k;
  const g = new GraphBuilder("gemm");
  g.output(g.op("Gemm", [g.input("a", "float", [m, k]), g.input("w", "float", [n, k])], [attr.int("transB", 1)]), "y", "float", [m, n]);
  const session = await ort.InferenceSession.create(encodeModel(g.build()), { intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: "sequential" });
  const feeds = { a: new ort.Tensor("float32", a, [m, k]), w: new ort.Tensor("float32", w, [n, k]) };
  const fp32 = flops / (await best(() => session.run(feeds))) / 1e9;
  await session.release();
  const bf16 = await helperGflops("native", m, n, k, a, w);
  const inHelper = await helperGflops("onednn", m, n, k, a, w);
  rows.push({ gemm: what, m, n, k, "fp32 onnxruntime GFLOP/s": fp32.toFixed(0), "bf16 native GFLOP/s": bf16.toFixed(0), "bf16 / fp32": (bf16 / fp32).toFixed(2), "bf16 oneDNN in shortgpt GFLOP/s": inHelper.toFixed(0) });
}

/** The helper's GEMM with one kernel (its own, or oneDNN's when built with it): GFLOP/s, NaN when that kernel is not there. */
async function helperGflops(kernel: "native" | "onednn", m: number, n: number, k: number, a: Float32Array, w: Float32Array): Promise<number> {
  if (!available.ok || (kernel === "onednn" && !available.features.onednnBuilt)) return NaN;
  const { native } = available;
  const initial = native.features().gemm === "native" ? "native" : "onednn";
  native.useGemm(kernel);
  try {
    const packed = native.packWeights([w], k);
    const out = new Float32Array(m * n);
    return (2 * m * n * k) / (await best(() => native.gemm(out, a, packed, m, n, k, false, threads))) / 1e9;
  } finally {
    native.useGemm(initial);
  }
}
// oneDNN's bf16 matmul on the same shapes, in its own process (OpenMP threads set by environment).
const onednn = oneDnnRows();
for (const row of rows) {
  const theirs = onednn.rows?.find((r) => r.gemm === row["gemm"]);
  row["bf16 oneDNN blocked weights GFLOP/s"] = theirs ? theirs.gflops.toFixed(0) : "n/a";
  row["native / oneDNN blocked"] = theirs ? (Number(row["bf16 native GFLOP/s"]) / theirs.gflops).toFixed(2) : "";
}

/** Compiles and runs the oneDNN measurement; rows, or why there are none. */
function oneDnnRows(): { rows?: { gemm: string; gflops: number; impl: string }[]; library?: string; why?: string } {
  const source = join(repoRoot(), "bench", "onednn", "onednnGemm.cpp");
  if (!existsSync("/usr/include/oneapi/dnnl/dnnl.hpp")) return { why: "libdnnl-dev is not installed (apt-get install libdnnl-dev)" };
  const binary = join(repoRoot(), "build", "onednn-gemm");
  mkdirSync(join(repoRoot(), "build"), { recursive: true });
  const built = spawnSync("g++", ["-O2", "-std=c++17", source, "-ldnnl", "-o", binary], { encoding: "utf8" });
  if (built.status !== 0) return { why: `could not compile ${source}: ${built.stderr.split("\n")[0] ?? ""}` };
  const run = spawnSync(binary, [], { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
  if (run.status !== 0) return { why: `oneDNN run failed: ${run.stderr.trim().split("\n")[0] ?? ""}` };
  return JSON.parse(run.stdout.trim().split("\n").pop()!) as { rows: { gemm: string; gflops: number; impl: string }[]; library: string };
}

// Cache-resident: 1200 x 512 x 512 (A and W in L2), the attainable rate on these cores: the
// faster of the two kernels (oneDNN's where it was built with it).
const cached = { m: 1200, n: 512, k: 512, a: fill(1200 * 512, 3), w: fill(512 * 512, 4) };
// One after the other: the kernel is a process-wide setting.
const peaks = [await helperGflops("native", cached.m, cached.n, cached.k, cached.a, cached.w), await helperGflops("onednn", cached.m, cached.n, cached.k, cached.a, cached.w)];
const measuredPeaks = peaks.filter(Number.isFinite);
const peak = measuredPeaks.length > 0 ? Math.max(...measuredPeaks) : NaN;
const features = available.features;
const keys = Object.keys(rows[0]!);
process.stderr.write(`CPU: ${cpus()[0]?.model ?? "?"}; features ${JSON.stringify(features ?? {})}; threads ${threads}; bf16 engine: ${available.ok ? "yes" : `no (${available.reason})`}\n`);
process.stderr.write([`| ${keys.join(" | ")} |`, `| ${keys.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${keys.map((key) => r[key]).join(" | ")} |`)].join("\n") + "\n");
process.stderr.write(`cache-resident 1200x512x512 bf16 GEMM: native kernel ${peaks[0]!.toFixed(0)}, oneDNN in shortgpt ${peaks[1]!.toFixed(0)} GFLOP/s (${available.ok ? available.native.features().gemmImpl || "no oneDNN" : "no helper"})\n`);
const onednnLine = onednn.library ? `${onednn.library} (${onednn.rows?.[0]?.impl ?? "?"})` : `not measured: ${onednn.why}`;
process.stderr.write(`oneDNN: ${onednnLine}\n`);
console.log(JSON.stringify({ cpu: cpus()[0]?.model ?? "", features: features ?? null, threads, bf16Engine: available.ok, rows, bf16PeakGflops: peak, bf16PeakByKernel: { native: peaks[0], onednn: peaks[1] }, gemmImpl: available.ok ? available.native.features().gemmImpl : "", onednn: onednnLine }));

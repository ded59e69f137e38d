// Builds the optional native helpers with the machine's C compiler: native/output_writer.c ->
// build/shortgpt_native.node, native/cpu_bf16.c -> build/shortgpt_cpu.node (the CPU's bf16
// engine; its layer GEMMs on oneDNN when libdnnl-dev is installed; without the helper the CPU engine
// computes in fp32), native/host_memory.c -> build/shortgpt_memory.node (huge pages and bf16
// widening for layer loads), and native/recurrent_scan.c -> build/shortgpt_scan.node (the scans of
// the RWKV and Mamba layers; without it they run in TypeScript, same values, slower). It runs as the package's install script; when no compiler or no
// Node-API headers are found it says so on one line and exits 0, and shortgpt writes checkpoints
// with plain buffered writes instead (same output, slower pruning). Node-API symbols resolve against the running
// node binary at load time, so a plain shared object is enough: no node-gyp, no downloads.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const source = join(root, "native", "output_writer.c");
const output = join(root, "build", "shortgpt_native.node");

function headerDirs() {
  const dirs = [join(dirname(dirname(process.execPath)), "include", "node")];
  try {
    dirs.push(createRequire(import.meta.url).resolve("node-api-headers/include/node_api.h").replace(/[\\/]node_api\.h$/, ""));
  } catch {
    // node-api-headers not installed; the node installation's own headers may still be there.
  }
  return dirs.filter((dir) => existsSync(join(dir, "node_api.h")));
}

function firstError(stderr) {
  const lines = stderr.trim().split("\n");
  return (lines.find((line) => line.includes("error")) ?? lines[0] ?? "no message").trim();
}

function skip(reason) {
  console.log(`shortgpt: native output helper not built (${reason}); checkpoints will be written with buffered writes`);
  process.exit(0);
}

/** Compiles one helper; on failure says so on one line and returns false. */
function compile(sourceFile, outputFile, flags, what, libraries = []) {
  const temp = `${outputFile}.${process.pid}.tmp`;
  const r = spawnSync(compiler, [...flags, "-Wall", "-shared", "-fPIC", "-pthread", `-I${includes[0]}`, sourceFile, "-o", temp, ...libraries], { encoding: "utf8" });
  if (r.error || r.status !== 0) {
    rmSync(temp, { force: true });
    console.log(`shortgpt: ${what} not built (${r.error ? `${compiler}: ${r.error.message}` : `${compiler} failed: ${firstError(r.stderr)}`})`);
    return false;
  }
  renameSync(temp, outputFile);
  console.log(`shortgpt: built ${outputFile}`);
  return true;
}

/**
 * The CPU bf16 helper, with oneDNN's matmul for the layer GEMMs when Debian's libdnnl-dev is
 * installed (AMX on the CPUs that have it; faster than the built-in kernel on AVX512_BF16 too),
 * else with the built-in kernel alone. The rpath lets a copy of libdnnl.so.2 beside the helper
 * stand in on a machine without the package (the GPU bundle).
 */
function buildCpuHelper() {
  const source = join(root, "native", "cpu_bf16.c");
  const target = join(root, "build", "shortgpt_cpu.node");
  const what = "CPU bf16 helper (--precision bf16 on the CPU will compute in fp32)";
  const header = ["/usr/include", "/usr/local/include"].find((dir) => existsSync(join(dir, "oneapi", "dnnl", "dnnl.h")));
  if (process.env.SHORTGPT_ONEDNN !== "0" && header) {
    if (compile(source, target, ["-O3", "-DSHORTGPT_ONEDNN", "-Wl,-rpath,$ORIGIN"], "CPU bf16 helper with oneDNN", ["-ldnnl", "-lgomp"])) return;
    console.log("shortgpt: building the CPU bf16 helper with its own GEMM kernel instead");
  } else if (!header) {
    console.log("shortgpt: oneDNN not found (apt-get install libdnnl-dev, then npm rebuild, for its GEMMs: AMX where the CPU has it); the CPU bf16 helper uses its own kernel");
  }
  compile(source, target, ["-O3"], what);
}

if (process.platform !== "linux") skip(`the helper uses Linux O_DIRECT, this is ${process.platform}`);
const includes = headerDirs();
if (includes.length === 0) skip("no Node-API headers found");
const compiler = process.env.CC || "cc";
mkdirSync(dirname(output), { recursive: true });
// The bf16 helper first: its failure (an old compiler without AVX512_BF16 intrinsics, a CPU
// that is not x86-64) leaves the CPU engine in fp32 and must not stop the output helper.
if (process.arch === "x64") buildCpuHelper();
else console.log(`shortgpt: CPU bf16 helper not built (it is for x86-64, this is ${process.arch}); the CPU engine computes in fp32`);
// Huge pages and C widening for layer loads; without it the same loads run in JavaScript (same values, slower).
compile(join(root, "native", "host_memory.c"), join(root, "build", "shortgpt_memory.node"), ["-O3"], "host memory helper (layer loads will widen bf16 in JavaScript)");
// The recurrent layers' scans; -fopenmp-simd lets the vector loops reorder their sums (no OpenMP
// runtime), and a compiler without gcc's per-CPU function clones builds the baseline code alone.
const scanSource = join(root, "native", "recurrent_scan.c");
const scanTarget = join(root, "build", "shortgpt_scan.node");
const scanWhat = "recurrent scan helper (RWKV and Mamba scans will run in TypeScript)";
if (!compile(scanSource, scanTarget, ["-O3", "-fopenmp-simd"], scanWhat, ["-lm"])) compile(scanSource, scanTarget, ["-O3", "-DSHORTGPT_NO_CLONES", "-Wno-unknown-pragmas"], scanWhat, ["-lm"]);
const temp = `${output}.${process.pid}.tmp`;
const result = spawnSync(compiler, ["-O2", "-Wall", "-shared", "-fPIC", "-pthread", `-I${includes[0]}`, source, "-o", temp], { encoding: "utf8" });
if (result.error || result.status !== 0) {
  rmSync(temp, { force: true });
  skip(result.error ? `${compiler}: ${result.error.message}` : `${compiler} failed: ${firstError(result.stderr)}`);
}
renameSync(temp, output);
console.log(`shortgpt: built ${output}`);

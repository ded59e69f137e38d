// The cuda backend's host path without a GPU: a stand-in for libcuda, cuBLAS and NVRTC
// (fixtures/cuda-stub/stub.c, built here with the machine's C compiler) logs every kernel launch
// and GEMM, so these tests check what the backend asks of the device — the GEMM shapes of a
// layer, the kernels, resident and streamed weights, the kernel cache, out-of-memory and
// device-index errors — while the arithmetic itself is checked on a GPU by bench/gpu/deviceCheck.ts.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { createCudaBackend, type CudaBackendOptions } from "../src/backend/cuda/cudaBackend.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { DeviceError } from "../src/errors.js";
import { openModel } from "../src/load.js";
import { streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { MODEL_BIN, TINYSTORIES, runCli, tempDir } from "./helpers.js";

const dir = tempDir("shortgpt-cuda-stub-");
const log = join(dir, "calls.log");
const compiler = ["cc", "gcc"].find((c) => spawnSync(c, ["--version"]).status === 0);
assert.ok(compiler, "these tests build a stand-in CUDA library with the machine's C compiler (cc or gcc)");
const built = spawnSync(compiler, ["-shared", "-fPIC", "-O1", "-o", join(dir, "libcuda.so.1"), join(repoRoot(), "test", "fixtures", "cuda-stub", "stub.c")], { encoding: "utf8" });
assert.equal(built.status, 0, built.stderr);
copyFileSync(join(dir, "libcuda.so.1"), join(dir, "libcublas.so.13"));
copyFileSync(join(dir, "libcuda.so.1"), join(dir, "libnvrtc.so.13"));
const libraries = { cuda: join(dir, "libcuda.so.1"), cublas: join(dir, "libcublas.so.13"), nvrtc: join(dir, "libnvrtc.so.13") };
process.env["CUDA_STUB_LOG"] = log;
after(() => rmSync(dir, { recursive: true, force: true }));

function calls(): string[] {
  if (!existsSync(log)) return [];
  const lines = readFileSync(log, "utf8").trim().split("\n");
  rmSync(log);
  return lines;
}

const opened = openModel(MODEL_BIN);
const documents = [opened.tokenizer.encode(readFileSync(TINYSTORIES, "utf8").slice(0, 6000), { bos: true })];
const options = (extra: Partial<CudaBackendOptions> = {}): CudaBackendOptions => ({ libraries, cacheDir: join(dir, "cache"), ...extra });

test("a layer on the device: the fused QKV, output, gate|up and down GEMMs with the residual accumulated, attention as batched GEMMs around the softmax", async () => {
  calls();
  const backend = await createCudaBackend(options());
  const compiled = calls().filter((l) => l.startsWith("compile"));
  assert.deepEqual(compiled, ["compile --gpu-architecture=sm_90"], "compiled once, for the device's architecture");
  assert.equal(backend.stats.kernelsCached, false);
  const again = await createCudaBackend(options());
  assert.equal(again.stats.kernelsCached, true, "the second backend loads the cached cubin");
  assert.deepEqual(calls().filter((l) => l.startsWith("compile")), []);
  await again.dispose();

  const windows = scoringWindows(documents, { seqLen: 64, stride: 64 }).slice(0, 3);
  const rows = 3 * 64;
  await streamingBlockInfluence(opened, windows, { backend });
  const log = calls();
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, nLayers } = opened.config;
  const qkv = nHeads * headDim + 2 * nKvHeads * headDim;
  const bf16 = 14;
  const f32 = 0;
  const gemms = log.filter((l) => l.startsWith("gemm"));
  assert.equal(gemms.length, 4 * nLayers, "four GEMMs a layer");
  assert.deepEqual(gemms.slice(0, 4), [
    `gemm 1 0 m=${qkv} n=${rows} k=${dim} types=${bf16},${bf16},${f32} lda=${dim} ldb=${dim} ldc=${qkv} beta=0 compute=68`,
    `gemm 1 0 m=${dim} n=${rows} k=${nHeads * headDim} types=${bf16},${bf16},${f32} lda=${nHeads * headDim} ldb=${nHeads * headDim} ldc=${dim} beta=1 compute=68`,
    `gemm 1 0 m=${2 * hiddenDim} n=${rows} k=${dim} types=${bf16},${bf16},${f32} lda=${dim} ldb=${dim} ldc=${2 * hiddenDim} beta=0 compute=68`,
    `gemm 1 0 m=${dim} n=${rows} k=${hiddenDim} types=${bf16},${bf16},${f32} lda=${hiddenDim} ldb=${hiddenDim} ldc=${dim} beta=1 compute=68`,
  ]);
  const group = nHeads / nKvHeads;
  const batched = log.filter((l) => l.startsWith("batched"));
  // One query block (64 <= 512): each KV group's query heads in one call, scores then P @ V (bf16 probabilities, row stride 2 x 64).
  assert.deepEqual(batched.slice(0, 2), [
    `batched 1 0 m=64 n=${group * 64} k=${headDim} lda=${headDim} ldb=${headDim} ldc=64 strides=${64 * headDim},${group * 64 * headDim},${group * 64 * 64} count=${3 * nKvHeads}`,
    `batched 0 0 m=${headDim} n=${group * 64} k=64 lda=${headDim} ldb=128 ldc=${headDim} strides=${64 * headDim},${group * 64 * 128},${group * 64 * headDim} count=${3 * nKvHeads}`,
  ]);
  const kernels = log.filter((l) => l.startsWith("launch")).map((l) => l.split(" ")[1]);
  const perLayer = ["norm_rows", "qkv_heads", "qkv_heads", "qkv_heads", "attention_softmax_4", "heads_to_rows", "norm_rows", "mlp_activation", "row_stats"];
  assert.equal(kernels.filter((k) => k === "embed_rows").length, 1, "the embedding is looked up on the device, once per batch");
  for (const k of perLayer) assert.equal(kernels.filter((x) => x === k).length, nLayers * perLayer.filter((y) => y === k).length, `${k} per layer`);
  assert.equal(backend.stats.residentLayers, nLayers, "every layer stays resident");
  assert.ok(kernels.filter((k) => k === "to_gin").length >= 4 * nLayers, "weights converted to bf16 on the device");

  // A second pass uploads nothing: weights and embedding are resident.
  await streamingBlockInfluence(opened, windows, { backend });
  assert.equal(calls().filter((l) => l.startsWith("launch to_gin")).length, 0);
  assert.equal(backend.stats.layersUploaded, nLayers);
  await backend.dispose();
});

test("long windows run attention by blocks of queries, each head of a KV group on its own, keys cut at the block's end", async () => {
  calls();
  const backend = await createCudaBackend(options({ attentionBlock: 32 }));
  const windows = scoringWindows(documents, { seqLen: 80, stride: 80 }).slice(0, 1);
  await streamingBlockInfluence(opened, windows, { backend, skip: new Set([1, 2, 3, 4]) });
  const { nHeads, nKvHeads, headDim } = opened.config;
  const group = nHeads / nKvHeads;
  const scores = calls().filter((l) => l.startsWith("batched 1 0"));
  // Blocks of 32, 32 and 16 queries with 32, 64 and 80 keys; `group` calls each.
  assert.equal(scores.length, 3 * group);
  assert.match(scores[0]!, new RegExp(`^batched 1 0 m=32 n=32 k=${headDim} .* count=${nKvHeads}$`));
  assert.match(scores[group]!, /^batched 1 0 m=64 n=32 /);
  assert.match(scores[2 * group]!, /^batched 1 0 m=80 n=16 /);
  await backend.dispose();
});

test("weights that do not fit stay on the host and are uploaded per pass, keeping only the layer in use and the next", async () => {
  process.env["CUDA_STUB_FREE"] = String(2 ** 30); // below the 4 GiB kept free for activations
  try {
    calls();
    const backend = await createCudaBackend(options());
    const windows = perplexityWindows(documents, { seqLen: 64, stride: 64 }).slice(0, 2);
    const first = await streamingPerplexity(opened, windows, { backend });
    await streamingPerplexity(opened, windows, { backend });
    const { nLayers } = opened.config;
    assert.equal(backend.stats.residentLayers, 0);
    assert.equal(backend.stats.streamedLayers, 2 * nLayers, "every layer uploaded on each pass");
    const log = calls();
    assert.ok(log.filter((l) => l === "free").length >= 2 * nLayers - 2, "streamed layers are freed as the pass moves on");
    assert.ok(Number.isFinite(first.tokens) && first.tokens === 2 * 63);
    await backend.dispose();
  } finally {
    delete process.env["CUDA_STUB_FREE"];
  }
});

test("out of device memory and a missing device index are one-line errors that name what did not fit and what to do", async () => {
  process.env["CUDA_STUB_ALLOC_LIMIT"] = String(60_000);
  try {
    const backend = await createCudaBackend(options());
    const windows = scoringWindows(documents, { seqLen: 64, stride: 64 }).slice(0, 1);
    await assert.rejects(streamingBlockInfluence(opened, windows, { backend }), (e: unknown) =>
      e instanceof DeviceError && /^out of GPU memory allocating [\d.]+ MiB for (layer weights|embedding|scratch|hidden states)/.test(e.message) && /smaller --batch-tokens/.test(e.describe()));
    await backend.dispose();
  } finally {
    delete process.env["CUDA_STUB_ALLOC_LIMIT"];
  }
  await assert.rejects(createCudaBackend(options({ device: 1 })), (e: unknown) => e instanceof DeviceError && /--device 1: this machine has 1 CUDA device/.test(e.message));
  const run = runCli(["score", MODEL_BIN, "--data", TINYSTORIES, "--max-tokens", "600", "--seq-len", "128", "--backend", "cuda", "--device", "2"]);
  // Without SHORTGPT_CUDA_LIBS pointing at the stand-in, this machine's own libraries decide: a GPU-less machine says libcuda is missing.
  assert.equal(run.status, 1);
  assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
  const viaStub = spawnSync(process.execPath, [join(repoRoot(), "dist", "src", "cli", "main.js"), "score", MODEL_BIN, "--data", TINYSTORIES, "--max-tokens", "600", "--seq-len", "128", "--backend", "cuda", "--device", "2"], {
    encoding: "utf8", env: { ...process.env, SHORTGPT_CUDA_LIBS: dir, SHORTGPT_CACHE_DIR: join(dir, "cache") },
  });
  assert.equal(viaStub.status, 1);
  assert.match(viaStub.stderr, /--device 2: this machine has 1 CUDA device/);
});

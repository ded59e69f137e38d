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
import { checkBackendComputes, type DecodeSupport, type LayerShape, type LayerWeightsF32, layerWeightDims, type PackedLayout } from "../src/backend/backend.js";
import { activationReserve, type CudaBackend, createCudaBackend, type CudaBackendOptions } from "../src/backend/cuda/cudaBackend.js";
import { generateOnBackend } from "../src/eval/generate.js";
import { layerShape } from "../src/models/llama.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { DeviceError, OptionError, UnsupportedError } from "../src/errors.js";
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

test("a layer on the device: the fused QKV, output, gate|up and down GEMMs (q/k/v and gate|up written as bf16, the residual accumulated in fp32), attention as batched GEMMs around the softmax for a head size the fused kernel does not take", async () => {
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
    `gemm 1 0 m=${qkv} n=${rows} k=${dim} types=${bf16},${bf16},${bf16} lda=${dim} ldb=${dim} ldc=${qkv} beta=0 compute=68`,
    `gemm 1 0 m=${dim} n=${rows} k=${nHeads * headDim} types=${bf16},${bf16},${f32} lda=${nHeads * headDim} ldb=${nHeads * headDim} ldc=${dim} beta=1 compute=68`,
    `gemm 1 0 m=${2 * hiddenDim} n=${rows} k=${dim} types=${bf16},${bf16},${bf16} lda=${dim} ldb=${dim} ldc=${2 * hiddenDim} beta=0 compute=68`,
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

test("each pass's embedding rows are freed once two newer sets are prepared, and a freed set is refused rather than read", async () => {
  calls();
  const backend = await createCudaBackend(options());
  const { dim } = opened.config;
  const rowsOf = (first: number) => () => ({ table: new Float32Array(4 * dim).fill(first) });
  const sets = [];
  for (let i = 0; i < 3; i++) sets.push(await backend.prepareEmbedding(`rows set ${i}`, rowsOf(i), 4, dim));
  assert.equal(calls().filter((l) => l === "free").length, 1, "the oldest of three sets is freed");
  await assert.rejects(backend.embed(sets[0]!, new Int32Array([0, 1]), 2), /was released from cuda/);
  await backend.embed(sets[2]!, new Int32Array([0, 1]), 2); // the newest stays usable
  assert.equal(await backend.prepareEmbedding("rows set 1", rowsOf(1), 4, dim), sets[1], "a set still held is reused, not uploaded again");
  await backend.dispose();
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

/** A random layer of a given shape (values do not matter: the stand-in computes nothing). */
function zeroLayer(shape: LayerShape): LayerWeightsF32 {
  const dims = layerWeightDims(shape);
  return Object.fromEntries(Object.entries(dims).map(([name, d]) => [name, new Float32Array(d!.reduce((a, b) => a * b, 1))])) as unknown as LayerWeightsF32;
}

test("head sizes 64 and 128 run the fused (flash) attention kernel, one block per 64 queries of each head and window, with no score GEMMs; fp32, packed layouts and other head sizes take the GEMM path", async () => {
  const shape: LayerShape = { dim: 256, hiddenDim: 512, nHeads: 4, nKvHeads: 2, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };
  const run = async (backend: CudaBackend, s: LayerShape, layout?: PackedLayout): Promise<string[]> => {
    const x = await backend.upload(new Float32Array(2 * 100 * s.dim), 200, s.dim);
    const layer = await backend.prepareLayer(`flash/${s.headDim}/${layout ? 1 : 0}`, () => zeroLayer(s), s);
    calls();
    backend.release(await backend.runLayer(x, 2, 100, layer, s, layout));
    return calls();
  };
  const bf16 = await createCudaBackend(options());
  for (const headDim of [64, 128]) {
    const s = { ...shape, headDim };
    const log = await run(bf16, s);
    assert.deepEqual(log.filter((l) => l.startsWith("launch flash_attention")), [`launch flash_attention_${headDim} 2 4 128 z=2`], "ceil(100 / 64) query blocks x 4 heads x 2 windows");
    assert.equal(log.filter((l) => l.startsWith("batched")).length, 0, "no score or P @ V GEMMs");
    assert.equal(log.filter((l) => l.includes("heads_to_rows") || l.includes("attention_softmax")).length, 0, "the kernel writes rows itself");
  }
  const layout = { positions: Int32Array.from({ length: 200 }, (_, i) => i % 100), branches: new Int32Array(200) };
  const packed = await run(bf16, shape, layout);
  assert.equal(packed.filter((l) => l.includes("flash_attention")).length, 0, "packed branches: GEMM path");
  assert.ok(packed.some((l) => l.startsWith("launch attention_softmax")));
  const odd = await run(bf16, { ...shape, dim: 192, headDim: 48 });
  assert.equal(odd.filter((l) => l.includes("flash_attention")).length, 0, "head size 48: GEMM path");
  await bf16.dispose();
  const fp32 = await createCudaBackend(options({ precision: "fp32" }));
  const full = await run(fp32, shape);
  assert.equal(full.filter((l) => l.includes("flash_attention")).length, 0, "fp32: GEMM path");
  assert.equal(full.filter((l) => l.startsWith("batched")).length, 2);
  await fp32.dispose();
  const off = await createCudaBackend(options({ flashAttention: false }));
  assert.equal((await run(off, shape)).filter((l) => l.includes("flash_attention")).length, 0, "turned off");
  await off.dispose();
});

test("generation on the device: the prompt in one step, then one token a step through a key/value cache that each layer appends to and attends over", async () => {
  const backend = await createCudaBackend(options());
  assert.ok(backend.decode, "the cuda backend decodes with its own cache");
  calls();
  const prompt = opened.tokenizer.encode("Once upon a time", { bos: true });
  const ids = await generateOnBackend(opened, backend as CudaBackend & { decode: DecodeSupport }, prompt, { maxTokens: 5, temperature: 0, seed: 0 });
  assert.equal(ids.length, 5);
  const log = calls();
  const { nLayers, nHeads, nKvHeads, headDim } = opened.config;
  const capacity = prompt.length + 5;
  const group = nHeads / nKvHeads;
  // Head size 8: scores and P @ V by batched GEMMs over the cache (stride capacity x headDim), keys growing by one each step.
  const scores = log.filter((l) => l.startsWith("batched 1 0"));
  assert.equal(scores.length, 5 * nLayers, "one step for the prompt and one per new token but the last, per layer");
  for (let step = 0; step < 5; step++) {
    const n = step === 0 ? prompt.length : 1;
    const keys = prompt.length + step;
    assert.equal(scores[step * nLayers], `batched 1 0 m=${keys} n=${group * n} k=${headDim} lda=${headDim} ldb=${headDim} ldc=${keys} strides=${capacity * headDim},${group * n * headDim},${group * n * keys} count=${nKvHeads}`);
  }
  assert.equal(log.filter((l) => l.startsWith("launch embed_rows")).length, 5);
  assert.equal(log.filter((l) => l.startsWith("gemm") && l.includes(`m=${opened.config.vocabSize} n=1 `)).length, 5, "the classifier runs on the last position only");
  await assert.rejects(backend.decode.runLayerCached(await backend.upload(new Float32Array(opened.config.dim * 3), 3, opened.config.dim), await backend.prepareLayer("x", () => zeroLayer(layerShape(opened.config)), layerShape(opened.config)), layerShape(opened.config), backend.decode.createKvCache(1, 2, layerShape(opened.config)), 0),
    (e: unknown) => e instanceof Error && /3 new tokens after 0 do not fit a cache of 2 positions/.test(e.message));
  await backend.dispose();
});

// --- Gemma 2/3 and Phi-3 (issue #15): what the launches carry. The stand-in computes nothing, so
// these check the arguments the kernels get; bench/gpu/deviceCheck.ts checks the arithmetic on a GPU.

/** Each launch of `kernel` as its arguments by name (the stand-in's "args" lines, read from the kernel source's signatures). */
function argsOf(log: readonly string[], kernel: string): Record<string, string>[] {
  // Numbers in JavaScript's spelling (C prints 1e-06 where String gives 1e-6).
  const value = (v: string): string => (/^-?[\d.]+(e[-+]?\d+)?$/.test(v) ? String(Number(v)) : v);
  return log.filter((l) => l.startsWith(`args ${kernel} `)).map((l) => Object.fromEntries(l.split(" ").slice(2).map((kv) => {
    const [name, v] = kv.split("=") as [string, string];
    return [name, value(v)];
  })));
}
/** A float as the kernel sees it (float32), printed as the stand-in prints it (%.9g). */
const asF32 = (v: number): string => String(Number(Math.fround(v).toPrecision(9)));
const familyFixture = (name: string): string => join(repoRoot(), "test", "fixtures", "hf-attn", name);
/** One window of 12 tokens: longer than the fixtures' sliding window of 5, so the window hides keys. */
const familyWindows = [{ document: 0, begin: 0, tokens: Array.from({ length: 12 }, (_, i) => 3 + ((i * 7) % 90)), firstTarget: 1 }];

test("Gemma 2 on the device: scores scaled by query_pre_attn_scalar^-0.5 and soft-capped, local layers windowed, sandwich norms at both residual adds, the GELU gate, soft-capped logits", async () => {
  const opened = openModel(familyFixture("gemma2"));
  const backend = await createCudaBackend(options());
  try {
    assert.deepEqual([...backend.shapeFeatures!].sort(), ["attnScale", "attnSoftcap", "logitSoftcap", "postNorms", "ropeAttentionFactor", "slidingWindow"]);
    calls();
    const result = await streamingPerplexity(opened, familyWindows, { backend });
    assert.equal(result.tokens, 11);
    const log = calls();
    const { nLayers, vocabSize } = opened.config;
    const softmax = argsOf(log, "attention_softmax_4");
    assert.equal(softmax.length, nLayers, "head size 8: the GEMM path, one softmax a layer");
    softmax.forEach((a, layer) => {
      assert.equal(a["scale"], asF32(6 ** -0.5), `layer ${layer}: query_pre_attn_scalar 6, not 1/sqrt(head size 8)`);
      assert.equal(a["softcap"], "2", `layer ${layer}: attn_logit_softcapping`);
      assert.equal(a["sliding_window"], layer % 2 === 0 ? "5" : "0", `layer ${layer}: ${layer % 2 === 0 ? "local (window 5)" : "global"}`);
      assert.equal(a["positions"], "null", "one plain window: a token's position is its index");
    });
    // Two sandwich norms a layer: attention (after wo) and MLP (after wDown), each GEMM then written without accumulating.
    assert.equal(argsOf(log, "residual_add_normed").length, 2 * nLayers);
    assert.ok(argsOf(log, "residual_add_normed").every((a) => a["dim"] === "32" && a["weight"] === "ptr" && a["eps"] === asF32(1e-6)));
    const outputs = log.filter((l) => l.startsWith("gemm") && (l.includes("m=32 n=12 k=32 ") || l.includes("m=32 n=12 k=48 ")));
    assert.equal(outputs.length, 2 * nLayers);
    assert.ok(outputs.every((l) => l.includes("beta=0")), "wo and wDown write the block's output apart from the stream, for the norm");
    assert.ok(argsOf(log, "mlp_activation").every((a) => a["kind"] === "1" && a["gated"] === "1"), "the GELU-tanh gate");
    const capped = argsOf(log, "softcap_in_place");
    assert.deepEqual(capped, [{ x: "ptr", cap: "3", n: String(11 * vocabSize) }], "final_logit_softcapping on the 11 scored rows' logits, before log-sum-exp");
    const order = log.filter((l) => l.startsWith("launch softcap_in_place") || l.startsWith("launch head_logsumexp"));
    assert.deepEqual(order.map((l) => l.split(" ")[1]), ["softcap_in_place", "head_logsumexp"]);
  } finally {
    await backend.dispose();
    opened.close();
  }
});

test("Gemma 3 and Phi-3 on the device: per-head q/k norms, local layers windowed with their own RoPE base; LongRoPE's attention factor squared into the score scale; no caps or post norms where the model has none", async () => {
  const gemma3 = openModel(familyFixture("gemma3"));
  const phi3 = openModel(familyFixture("phi3"));
  const backend = await createCudaBackend(options());
  try {
    calls();
    await streamingBlockInfluence(gemma3, familyWindows, { backend });
    let log = calls();
    const softmax = argsOf(log, "attention_softmax_4");
    assert.deepEqual(softmax.map((a) => [a["scale"], a["softcap"], a["sliding_window"]]), [0, 1, 2, 3].map((layer) => [asF32(6 ** -0.5), "0", layer % 2 === 0 ? "5" : "0"]));
    // q, k, v out of the fused projection per layer: q and k normed per head (norm_weight), v not.
    const heads = argsOf(log, "qkv_heads");
    assert.equal(heads.length, 3 * 4);
    assert.deepEqual(heads.slice(0, 3).map((a) => [a["norm_weight"], a["inv_freq"]]), [["ptr", "ptr"], ["ptr", "ptr"], ["null", "null"]]);
    assert.equal(argsOf(log, "residual_add_normed").length, 2 * 4);
    assert.equal(argsOf(log, "softcap_in_place").length, 0, "Gemma 3 has no logit soft-cap");

    await streamingBlockInfluence(phi3, familyWindows, { backend });
    log = calls();
    const factor = layerShape(phi3.config).ropeAttentionFactor!;
    assert.ok(factor > 1.1, `the fixture's LongRoPE factor (${factor})`);
    assert.ok(argsOf(log, "attention_softmax_4").every((a) => a["scale"] === asF32((factor * factor) / Math.sqrt(8)) && a["softcap"] === "0" && a["sliding_window"] === "0"),
      "q . k times the factor squared: what multiplying q and k by it after RoPE gives");
    assert.equal(argsOf(log, "residual_add_normed").length, 0, "no sandwich norms: the output GEMMs accumulate into the stream");
    assert.ok(argsOf(log, "mlp_activation").every((a) => a["kind"] === "0"), "SiLU");
  } finally {
    await backend.dispose();
    gemma3.close();
    phi3.close();
  }
});

test("the fused (flash) kernel and the GEMM path take the same score rule, in full passes, packed layouts (windowed by the tokens' positions) and decoding; Gemma-2-2B's head size 256 takes the GEMM path", async () => {
  const gemmaLike: LayerShape = {
    dim: 256, hiddenDim: 512, nHeads: 4, nKvHeads: 2, headDim: 64, normEps: 1e-6, ropeTheta: 10000, activation: "gelu_tanh",
    postNorms: true, attnScale: 0.0625, attnSoftcap: 50, slidingWindow: 40,
  };
  const bf16 = await createCudaBackend(options());
  const fp32 = await createCudaBackend(options({ precision: "fp32" }));
  const run = async (backend: CudaBackend, s: LayerShape, layout?: PackedLayout): Promise<string[]> => {
    const x = await backend.upload(new Float32Array(2 * 100 * s.dim), 200, s.dim);
    const layer = await backend.prepareLayer(`rule/${JSON.stringify(s)}/${layout ? 1 : 0}`, () => zeroLayer(s), s);
    calls();
    backend.release(await backend.runLayer(x, 2, 100, layer, s, layout));
    backend.release(x);
    return calls();
  };
  const rule = { scale: asF32(0.0625), softcap: "50", sliding_window: "40" };
  const pick = (a: Record<string, string>): Record<string, string | undefined> => ({ scale: a["scale"], softcap: a["softcap"], sliding_window: a["sliding_window"] });
  try {
    for (const headDim of [64, 128]) {
      const log = await run(bf16, { ...gemmaLike, headDim });
      const flash = argsOf(log, `flash_attention_${headDim}_rule`);
      assert.equal(flash.length, 1, "a capped or windowed layer takes the kernel's _rule variant");
      assert.equal(log.filter((l) => l.startsWith(`launch flash_attention_${headDim} `)).length, 0, "not the plain one, which compiles the cap and window away");
      assert.deepEqual(pick(flash[0]!), rule, `head ${headDim}: the fused kernel's scale, cap and window`);
      assert.equal(flash[0]!["q_offset"], "0");
    }
    // A layer with only a score scale (Phi-3's LongRoPE factor) keeps the plain kernel.
    const plain = await run(bf16, { dim: 256, hiddenDim: 512, nHeads: 4, nKvHeads: 2, headDim: 64, normEps: 1e-5, ropeTheta: 10000, ropeAttentionFactor: 1.5 });
    assert.deepEqual(argsOf(plain, "flash_attention_64").map(pick), [{ scale: asF32((1.5 * 1.5) / 8), softcap: "0", sliding_window: "0" }]);
    const gemmaPath = await run(fp32, gemmaLike);
    assert.equal(gemmaPath.filter((l) => l.startsWith("launch flash")).length, 0);
    assert.deepEqual(argsOf(gemmaPath, "attention_softmax_4").map(pick), [rule], "fp32: the softmax after the score GEMM");
    const wide = await run(bf16, { ...gemmaLike, dim: 2304, nHeads: 8, nKvHeads: 4, headDim: 256 });
    assert.equal(wide.filter((l) => l.startsWith("launch flash")).length, 0, "head size 256 (Gemma-2-2B): no fused kernel");
    assert.deepEqual(argsOf(wide, "attention_softmax_4").map(pick), [rule]);
    const layout = { positions: Int32Array.from({ length: 200 }, (_, i) => i % 100), branches: new Int32Array(200) };
    const packed = argsOf(await run(bf16, gemmaLike, layout), "attention_softmax_4");
    assert.deepEqual(packed.map((a) => [pick(a), a["positions"], a["branches"]]), [[rule, "ptr", "ptr"]], "packed: the window measured between the tokens' own positions");

    // Decoding: a prompt of 30, then one token; the cache's positions are its indices.
    for (const [backend, headDim, kernel] of [[bf16, 64, "flash_attention_64_rule"], [fp32, 64, "attention_softmax_4"], [bf16, 256, "attention_softmax_4"]] as const) {
      const s = { ...gemmaLike, ...(headDim === 256 ? { dim: 2304, nHeads: 8, nKvHeads: 4 } : {}), headDim };
      const layer = await backend.prepareLayer(`rule/decode/${headDim}`, () => zeroLayer(s), s);
      const cache = backend.decode!.createKvCache(1, 40, s);
      calls();
      for (const n of [30, 1]) {
        const x = await backend.upload(new Float32Array(n * s.dim), n, s.dim);
        backend.release(await backend.decode!.runLayerCached(x, layer, s, cache, 0));
        backend.release(x);
        cache.length += n;
      }
      const steps = argsOf(calls(), kernel);
      assert.equal(steps.length, 2, `${kernel}, head ${headDim}: one launch a step`);
      assert.deepEqual(steps.map(pick), [rule, rule], `${kernel}, head ${headDim}: decoding keeps the rule`);
      if (kernel === "attention_softmax_4") assert.deepEqual(steps.map((a) => [a["q0"], a["row_len"], a["positions"]]), [["0", "30", "null"], ["30", "31", "null"]]);
      else assert.deepEqual(steps.map((a) => [a["q_offset"], a["n_keys"]]), [["0", "30"], ["30", "31"]]);
      backend.decode!.releaseKvCache(cache);
    }
  } finally {
    await bf16.dispose();
    await fp32.dispose();
  }
});

test("generation on the device with a sliding-window model: each step's softmax windows the cached keys; values that would silently turn a feature off are refused", async () => {
  const opened = openModel(familyFixture("gemma2"));
  const backend = await createCudaBackend(options());
  try {
    calls();
    const prompt = [2, 10, 20, 30, 40, 50, 60, 70];
    const ids = await generateOnBackend(opened, backend as CudaBackend & { decode: DecodeSupport }, prompt, { maxTokens: 4, temperature: 0, seed: 0 });
    assert.equal(ids.length, 4);
    const log = calls();
    const softmax = argsOf(log, "attention_softmax_4");
    const { nLayers } = opened.config;
    assert.equal(softmax.length, 4 * nLayers, "the prompt step and three single tokens, per layer");
    softmax.forEach((a, i) => {
      const layer = i % nLayers;
      const step = Math.floor(i / nLayers);
      assert.deepEqual([a["sliding_window"], a["softcap"], a["q0"]], [layer % 2 === 0 ? "5" : "0", "2", String(step === 0 ? 0 : prompt.length + step - 1)]);
    });
    assert.equal(argsOf(log, "softcap_in_place").length, 4, "each step's logits soft-capped before sampling");

    const shape = { ...layerShape(opened.config, 0) };
    for (const [field, value] of [["attnSoftcap", 0], ["slidingWindow", -1], ["attnScale", Number.NaN], ["ropeAttentionFactor", Infinity]] as const) {
      await assert.rejects(backend.prepareLayer(`bad/${field}`, () => zeroLayer(shape), { ...shape, [field]: value }),
        (e: unknown) => e instanceof OptionError && new RegExp(`${field} is ${value}`).test(e.message), field);
    }
    await assert.rejects(backend.prepareHead("bad head", () => ({ finalNorm: new Float32Array(32), classifier: new Float32Array(96 * 32), logitSoftcap: 0 }), 96),
      (e: unknown) => e instanceof OptionError && /logitSoftcap is 0/.test(e.message));
    await assert.rejects(backend.prepareLayer("f16 gelu", () => zeroLayer(shape), { ...shape, activation: "gelu_tanh_f16" }), (e: unknown) => e instanceof UnsupportedError && /gelu_tanh_f16/.test(e.message));
  } finally {
    await backend.dispose();
    opened.close();
  }
});

test("recurrent layers: Mamba, Mamba-2, RWKV-4, RWKV-6 and RWKV-7 as GEMMs over every window's tokens (fp32 outputs where a kernel reads them, GEMM inputs where a GEMM does) around their scan kernels, one thread per (window, channel) or a block per (window, head); sizes the kernels do not take, packed layouts and decoding are refused", async () => {
  const common = { nHeads: 1, nKvHeads: 1, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };
  const mamba: LayerShape = { ...common, kind: "mamba", mamba: { dInner: 48, dState: 16, dtRank: 4, convKernel: 4, convBias: true }, dim: 24, hiddenDim: 48 };
  const rwkv4: LayerShape = { ...common, kind: "rwkv4", rwkvAttDim: 40, dim: 32, hiddenDim: 64 };
  const rwkv7: LayerShape = { ...common, kind: "rwkv7", rwkv7: { headSize: 64, decayRank: 8, iclrRank: 6, valueRank: 4, gateRank: 10 }, dim: 128, nHeads: 2, hiddenDim: 96 };
  const backend = await createCudaBackend(options());
  const [nWindows, seqLen] = [3, 10];
  const rows = nWindows * seqLen;
  // Each GEMM as out width x depth, its output type (f32 or gin) and "+" when it accumulates into the stream.
  const gemms = (log: readonly string[]): string[] => log.filter((l) => l.startsWith("gemm")).map((l) => {
    const f = Object.fromEntries(l.split(" ").slice(3).map((kv) => kv.split("=") as [string, string]));
    assert.equal(f["n"], String(rows), "every window's tokens in one GEMM");
    return `${f["m"]}x${f["k"]}${f["types"]!.endsWith(",0") ? "" : " gin"}${f["beta"] === "1" ? " +" : ""}`;
  });
  const launches = (log: readonly string[]): string[] => log.filter((l) => l.startsWith("launch")).map((l) => l.split(" ").slice(1).join(" "));
  const run = async (shape: LayerShape, x: Awaited<ReturnType<CudaBackend["upload"]>>, key: string): Promise<{ log: string[]; out: Awaited<ReturnType<CudaBackend["upload"]>> }> => {
    const layer = await backend.prepareLayer(key, () => zeroLayer(shape), shape);
    calls();
    const out = await backend.runLayer(x, nWindows, seqLen, layer, shape);
    return { log: calls(), out };
  };
  try {
    assert.ok(backend.computesRecurrentLayers instanceof Set && ["mamba", "mamba2", "rwkv4", "rwkv6", "rwkv7"].every((k) => (backend.computesRecurrentLayers as Set<string>).has(k)));
    const xm = await backend.upload(new Float32Array(rows * mamba.dim), rows, mamba.dim);
    const m = await run(mamba, xm, "mamba");
    // in_proj (stream | gate), x_proj (dt, B, C), dt_proj, out_proj accumulated into the stream.
    assert.deepEqual(gemms(m.log), ["96x24", "36x48", "48x4", "24x48 +"]);
    assert.deepEqual(launches(m.log), ["norm_rows 30 1 256 z=1", "mamba_conv_silu 6 1 256 z=1", "columns_to_gin 1 1 256 z=1", "mamba_scan_16 1 3 128 z=1"]);
    assert.deepEqual([argsOf(m.log, "mamba_scan_16")[0]!["d_state"], argsOf(m.log, "mamba_scan_16")[0]!["dt_rank"], argsOf(m.log, "mamba_conv_silu")[0]!["bias"]], ["16", "4", "ptr"]);
    for (const s of [xm, m.out]) backend.release(s);

    const mamba2: LayerShape = { ...common, kind: "mamba2", dim: 24, hiddenDim: 48, mamba2: { dInner: 48, dState: 100, nHeads: 6, headDim: 8, nGroups: 2, convKernel: 4, convBias: true, normGroupSize: 24, dtMin: 0, dtMax: Infinity } };
    const x2 = await backend.upload(new Float32Array(rows * mamba2.dim), rows, mamba2.dim);
    const m2 = await run(mamba2, x2, "mamba2");
    // in_proj (z | x B C | dt: 48 + 448 + 6), out_proj accumulated into the stream.
    assert.deepEqual(gemms(m2.log), ["502x24", "24x48 +"]);
    assert.deepEqual(launches(m2.log), ["norm_rows 30 1 256 z=1", "mamba_conv_silu 53 1 256 z=1", "mamba2_scan_128 1 3 128 z=1", "mamba2_gated_norm 30 2 256 z=1"]);
    assert.deepEqual([argsOf(m2.log, "mamba_conv_silu")[0]!["col0"], argsOf(m2.log, "mamba_conv_silu")[0]!["u_gin"], argsOf(m2.log, "mamba2_scan_128")[0]!["dt_max"]], ["48", "null", "inf"]);
    for (const s of [x2, m2.out]) backend.release(s);

    const x4 = await backend.upload(new Float32Array(rows * rwkv4.dim), rows, rwkv4.dim);
    const r4 = await run(rwkv4, x4, "rwkv4");
    // k, v, r; the output projection; channel mixing's key (written as GEMM inputs for its square), receptance, value.
    assert.deepEqual(gemms(r4.log), ["40x32", "40x32", "40x32", "32x40 +", "64x32 gin", "32x32", "32x64"]);
    assert.deepEqual(launches(r4.log).map((l) => l.split(" ")[0]), ["norm_rows_f32", "token_shift_mix", "rwkv4_wkv", "norm_rows_f32", "token_shift_mix", "relu_square_in_place", "add_sigmoid_gated"]);
    assert.deepEqual(argsOf(r4.log, "token_shift_mix").map((a) => [a["n_mix"], a["lerp_to_previous"]]), [["3", "0"], ["2", "0"]]);
    assert.ok(launches(r4.log).includes("rwkv4_wkv 1 3 128 z=1"), "one thread per (window, channel)");
    for (const s of [x4, r4.out]) backend.release(s);

    const rwkv6: LayerShape = { ...common, kind: "rwkv6", dim: 64, hiddenDim: 128, rwkv6: { headSize: 16, mixExtraDim: 8, decayExtraDim: 12 } };
    const x6 = await backend.upload(new Float32Array(rows * rwkv6.dim), rows, rwkv6.dim);
    const r6 = await run(rwkv6, x6, "rwkv6");
    // The token-shift LoRA (down, then each of five branches' up reading its 8 columns), k, v, r, gate, the decay LoRA, output; channel mixing.
    assert.deepEqual(gemms(r6.log), ["40x64", ...Array.from({ length: 5 }, () => "64x8"), "64x64", "64x64", "64x64", "64x64", "12x64", "64x12", "64x64 +", "128x64 gin", "64x64", "64x128"]);
    assert.deepEqual(r6.log.filter((l) => l.startsWith("gemm") && l.includes("m=64 n=30 k=8")).map((l) => /ldb=(\d+)/.exec(l)![1]), ["40", "40", "40", "40", "40"], "each branch reads its columns of the LoRA's middle");
    assert.ok(launches(r6.log).includes("rwkv6_scan_16 4 3 32 z=1"), "a block of 32 threads (16 columns of the state) per (head, window)");
    assert.deepEqual(argsOf(r6.log, "token_shift_mix").map((a) => [a["n_mix"], a["extra"], a["lerp_to_previous"]]), [["1", "null", "1"], ["5", "ptr", "1"], ["2", "null", "1"]]);
    for (const s of [x6, r6.out]) backend.release(s);

    const x7 = await backend.upload(new Float32Array(rows * rwkv7.dim), rows, rwkv7.dim);
    const first = await run(rwkv7, x7, "rwkv7 first");
    const second = await run(rwkv7, first.out, "rwkv7 second");
    // r, decay LoRA, k, v, [value-residual LoRA,] gate LoRA, a LoRA, output; channel mixing.
    const lora = (rank: number): string[] => [`${rank}x128`, `128x${rank}`];
    const common7 = [...lora(10), ...lora(6), "128x128 +", "96x128 gin", "128x96 +"];
    assert.deepEqual(gemms(first.log), ["128x128", ...lora(8), "128x128", "128x128", ...common7]);
    assert.deepEqual(gemms(second.log), ["128x128", ...lora(8), "128x128", "128x128", ...lora(4), ...common7]);
    assert.ok(launches(first.log).includes("rwkv7_scan_64 2 3 64 z=1"), "a block of 64 threads per (head, window)");
    assert.equal(launches(first.log).filter((l) => l.startsWith("rwkv7_value_residual")).length, 0, "the first block starts v_first");
    assert.equal(launches(second.log).filter((l) => l.startsWith("rwkv7_value_residual")).length, 1, "a later block mixes it in");
    assert.deepEqual(argsOf(second.log, "activation_to_gin").map((a) => a["kind"]), ["1", "0", "2", "0"], "tanh (decay), identity (value mix), sigmoid (gate), identity (a)");
    for (const s of [x7, first.out, second.out]) backend.release(s);

    const layout: PackedLayout = { positions: new Int32Array(rows), branches: new Int32Array(rows) };
    const again = await backend.upload(new Float32Array(rows * mamba.dim), rows, mamba.dim);
    await assert.rejects(backend.runLayer(again, nWindows, seqLen, await backend.prepareLayer("mamba", () => zeroLayer(mamba), mamba), mamba, layout), (e: unknown) => e instanceof UnsupportedError && /packed/.test(e.message));
    backend.release(again);
    assert.throws(() => backend.decode!.createKvCache(1, 8, mamba), (e: unknown) => e instanceof UnsupportedError && /does not decode mamba/.test(e.message));
    for (const shape of [mamba, mamba2, rwkv4, rwkv6, rwkv7]) checkBackendComputes(backend, shape);
    // The memory kept free beside resident recurrent weights grows with the batch and holds the largest weight's fp32 staging (Mamba-2's in_proj).
    assert.ok(activationReserve(mamba2, 1024, 2, 0) > activationReserve(mamba2, 16, 2, 0));
    assert.ok(activationReserve(mamba2, 0, 2, 0) >= 2 * 2 ** 30 + 502 * 24 * 4);
    const refused: [LayerShape, RegExp][] = [
      [{ ...mamba, mamba: { ...mamba.mamba!, dState: 128 } }, /Mamba scan holds a state of up to 64/],
      [{ ...mamba2, mamba2: { ...mamba2.mamba2!, dState: 256 } }, /Mamba-2 scan holds a state of up to 128/],
      [{ ...rwkv6, rwkv6: { ...rwkv6.rwkv6!, headSize: 128 } }, /RWKV-6 scan takes head sizes 16, 32, 64/],
      [{ ...rwkv7, rwkv7: { ...rwkv7.rwkv7!, headSize: 32 } }, /RWKV-7 scan takes head sizes 64/],
    ];
    for (const [shape, message] of refused) {
      await assert.rejects(backend.prepareLayer(`refused ${shape.kind!}`, () => zeroLayer(shape), shape), (e: unknown) => e instanceof UnsupportedError && message.test(e.message), shape.kind);
    }
    // generate --backend cuda on a recurrent model: the device keeps no recurrent state between calls, so the in-memory model generates.
    const generated = spawnSync(process.execPath, [join(repoRoot(), "dist", "src", "cli", "main.js"), "generate", join(repoRoot(), "test", "fixtures", "rwkv6_tiny.gguf"), "--prompt", "Once upon", "--max-tokens", "3", "--backend", "cuda", "--json", join(dir, "generated.json")], {
      encoding: "utf8", env: { ...process.env, SHORTGPT_CUDA_LIBS: dir, SHORTGPT_CACHE_DIR: join(dir, "cache") },
    });
    assert.equal(generated.status, 0, generated.stderr);
    const report = JSON.parse(readFileSync(join(dir, "generated.json"), "utf8")) as { ids: number[]; backend: string };
    assert.equal(report.ids.length, 3);
    assert.match(report.backend, /in memory/);
  } finally {
    await backend.dispose();
  }
});

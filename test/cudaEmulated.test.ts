// The cuda backend computing without a GPU: its kernel source (kernelSource.ts) compiled as C++
// after test/fixtures/cuda-stub/emulate.h (a block's threads as fibers, switched at barriers and
// warp shuffles; the flash kernel's tensor-core MMA computed from the PTX ISA's fragment layouts)
// and linked into the stand-in library (stub.c with -DCUDA_STUB_EMULATE: GEMMs as plain loops).
// So both attention paths (GEMM in fp32 and bf16, flash in bf16), decoding and the head are
// compared here with the float64 reference under the device check's bounds, for Gemma 2/3's and
// Phi-3's features; and the recurrent kinds (Mamba, Mamba-2, RWKV-4, RWKV-6, RWKV-7 with its
// v_first on the device), layer by layer and on tiny checkpoints end to end. Real cuBLAS, NVRTC
// and timing are the GPU's (bench/gpu/familyChecks.ts, recurrentChecks.ts).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { type DecodeSupport, type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims, type PackedLayout, type SideStreams } from "../src/backend/backend.js";
import { type CudaBackend, createCudaBackend, type CudaPrecision } from "../src/backend/cuda/cudaBackend.js";
import { BF16_KERNEL_NAMES, KERNEL_NAMES, KERNEL_SOURCE } from "../src/backend/cuda/kernelSource.js";
import { createReferenceBackend, createReferenceKernels } from "../src/backend/referenceBackend.js";
import { generate, generateOnBackend } from "../src/eval/generate.js";
import { loadModel, openModel } from "../src/load.js";
import { prepareHead, releaseBatches, runLayersStreaming, streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { getLlama, type Token } from "node-llama-cpp";
import { repoRoot, sharedDir } from "../src/shared.js";
import { oraclePython } from "./oraclePython.js";
import { scaledError, tempDir } from "./helpers.js";
import { runLayerInSteps } from "../bench/gpu/cachedDecode.js";

const dir = tempDir("shortgpt-cuda-emulated-");
after(() => rmSync(dir, { recursive: true, force: true }));
// The stand-in logs each launch here: which attention kernel ran.
const log = join(dir, "calls.log");
process.env["CUDA_STUB_LOG"] = log;
function launched(): string[] {
  if (!existsSync(log)) return [];
  const kernels = readFileSync(log, "utf8").split("\n").filter((l) => l.startsWith("launch ")).map((l) => l.split(" ")[1]!);
  rmSync(log);
  return kernels;
}
const stubDir = join(repoRoot(), "test", "fixtures", "cuda-stub");

function run(command: string, args: string[]): void {
  const r = spawnSync(command, args, { encoding: "utf8" });
  assert.equal(r.status, 0, `${command} ${args.join(" ")}: ${r.error?.message ?? ""}${r.stderr}`);
}

/** The kernel source with the flash kernel's inline PTX MMA (mma_bf16) replaced by the emulator's. */
function sourceForCpu(): string {
  const start = KERNEL_SOURCE.indexOf("__device__ __forceinline__ void mma_bf16(");
  const end = KERNEL_SOURCE.indexOf("\n}\n", start) + 3;
  assert.ok(start > 0 && end > start, "mma_bf16 is where this test expects it");
  const source = `${KERNEL_SOURCE.slice(0, start)}__device__ __forceinline__ void mma_bf16(float *c, const unsigned *a, unsigned b0, unsigned b1) { emu_mma_bf16(c, a, b0, b1); }\n${KERNEL_SOURCE.slice(end)}`;
  assert.ok(!source.includes("asm"), "no inline PTX left");
  return source;
}

/** The stand-in libraries with the kernels compiled for the CPU, with bf16 or fp32 GEMM inputs. */
function buildEmulator(precision: CudaPrecision): { cuda: string; cublas: string; nvrtc: string } {
  const out = join(dir, precision);
  mkdirSync(out, { recursive: true });
  const names = [...KERNEL_NAMES, ...(precision === "bf16" ? BF16_KERNEL_NAMES : [])];
  writeFileSync(join(out, "kernels.cpp"), [
    `#include "${join(stubDir, "emulate.h")}"`,
    `#define GIN_BF16 ${precision === "bf16" ? 1 : 0}`,
    sourceForCpu(),
    "static const emu_kernel emu_kernels[] = {",
    ...names.map((name) => `  EMU_KERNEL(${name}),`),
    "};",
    "extern \"C\" void *emu_find(const char *name) {",
    "  for (const emu_kernel &k : emu_kernels) if (std::strcmp(k.name, name) == 0) return (void *)k.body;",
    "  return nullptr;",
    "}",
    "extern \"C\" int emu_launch(void *kernel, unsigned gx, unsigned gy, unsigned gz, unsigned bx, void **params) {",
    "  return emu_run((void (*)(void **))kernel, gx, gy, gz, bx, params);",
    "}",
  ].join("\n"));
  run("cc", ["-c", "-fPIC", "-O1", "-DCUDA_STUB_EMULATE", "-o", join(out, "stub.o"), join(stubDir, "stub.c")]);
  run("c++", ["-std=c++17", "-O1", "-U_FORTIFY_SOURCE", "-fPIC", "-c", "-o", join(out, "kernels.o"), join(out, "kernels.cpp")]);
  run("c++", ["-shared", "-o", join(out, "libcuda.so.1"), join(out, "stub.o"), join(out, "kernels.o"), "-lm"]);
  // Three copies, as the real libraries are three: each keeps its own state.
  copyFileSync(join(out, "libcuda.so.1"), join(out, "libcublas.so.13"));
  copyFileSync(join(out, "libcuda.so.1"), join(out, "libnvrtc.so.13"));
  return { cuda: join(out, "libcuda.so.1"), cublas: join(out, "libcublas.so.13"), nvrtc: join(out, "libnvrtc.so.13") };
}

/** The device check's bounds (bench/gpu/deviceCheck.ts): max |error| / max |value|. */
const TOLERANCE = { fp32: 1e-5, bf16: 2e-2 } as const;
/** The backends under test: fp32 (GEMM attention), bf16 with the fused kernel off (GEMM) and on (flash for head sizes 64 and 128). */
const VARIANTS = [
  { name: "fp32", precision: "fp32", flash: false },
  { name: "bf16, GEMM attention", precision: "bf16", flash: false },
  { name: "bf16, flash attention", precision: "bf16", flash: true },
] as const;
type Variant = (typeof VARIANTS)[number];
const libraries = new Map<CudaPrecision, ReturnType<typeof buildEmulator>>();
const backends = new Map<string, CudaBackend>();
async function emulated(variant: Pick<Variant, "name" | "precision" | "flash">): Promise<CudaBackend> {
  let backend = backends.get(variant.name);
  if (!backend) {
    let libs = libraries.get(variant.precision);
    if (!libs) {
      libs = buildEmulator(variant.precision);
      libraries.set(variant.precision, libs);
    }
    backend = await createCudaBackend({ precision: variant.precision, flashAttention: variant.flash, libraries: libs, cacheDir: join(dir, `cache-${variant.name}`) });
    backends.set(variant.name, backend);
  }
  return backend;
}
after(async () => {
  for (const b of backends.values()) await b.dispose();
});

/** Deterministic values in [-scale, scale) + offset. */
function values(n: number, seed: number, scale: number, offset = 0): Float32Array {
  let s = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return offset + (s / 4294967296 * 2 - 1) * scale;
  });
}

function randomLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim } = shape;
  let next = seed;
  const v = (n: number, scale: number, offset = 0): Float32Array => values(n, next++ * 7919, scale, offset);
  const lin = (out: number, inp: number): Float32Array => v(out * inp, 1 / Math.sqrt(inp));
  return {
    attnNorm: v(dim, 0.2, 1), wq: lin(nHeads * headDim, dim), wk: lin(nKvHeads * headDim, dim), wv: lin(nKvHeads * headDim, dim), wo: lin(dim, nHeads * headDim),
    ffnNorm: v(dim, 0.2, 1), wGate: lin(hiddenDim, dim), wUp: lin(hiddenDim, dim), wDown: lin(dim, hiddenDim),
    ...(shape.qkNorm ? { qNorm: v(headDim, 0.2, 1), kNorm: v(headDim, 0.2, 1) } : {}),
    ...(shape.postNorms ? { attnPostNorm: v(dim, 0.2, 1), ffnPostNorm: v(dim, 0.2, 1) } : {}),
  };
}

type Feature = "slidingWindow" | "attnSoftcap" | "attnScale" | "ropeAttentionFactor";
function without(shape: LayerShape, feature: Feature): LayerShape {
  const copy = { ...shape };
  delete copy[feature];
  return copy;
}

const SMALL = { dim: 64, hiddenDim: 96, nHeads: 4, nKvHeads: 2, headDim: 16 };
const GEMMA2: LayerShape = { ...SMALL, normEps: 1e-6, ropeTheta: 10000, activation: "gelu_tanh", postNorms: true, attnScale: 0.4, attnSoftcap: 1, slidingWindow: 12 };
const GEMMA3: LayerShape = { ...SMALL, normEps: 1e-6, ropeTheta: 10000, activation: "gelu_tanh", postNorms: true, qkNorm: true, attnScale: 0.4, slidingWindow: 12 };
const PHI3: LayerShape = { ...SMALL, nKvHeads: 4, normEps: 1e-5, ropeTheta: 10000, ropeFreqFactors: [1, 1.5, 2, 3, 4, 6, 8, 12], ropeAttentionFactor: 1.5 };
/** Head sizes the flash kernel takes; over 200 positions a window of 40 lets the last query blocks skip whole key tiles. */
const GEMMA2_FLASH: LayerShape = { ...GEMMA2, dim: 128, nHeads: 2, nKvHeads: 1, headDim: 64, attnScale: 0.2, slidingWindow: 40 };
const PHI3_FLASH: LayerShape = { ...PHI3, dim: 128, nHeads: 2, nKvHeads: 2, headDim: 64, ropeFreqFactors: Array.from({ length: 32 }, (_, i) => 1 + i / 4) };
const GEMMA3_FLASH: LayerShape = { ...GEMMA3, dim: 128, nHeads: 2, nKvHeads: 1, headDim: 128, attnScale: 0.15, slidingWindow: 40 };

/** Two windows of a shared prefix and two branches; the second branch's positions restart after the prefix. */
function treeLayout(nWindows: number, seqLen: number): PackedLayout {
  const positions = new Int32Array(nWindows * seqLen);
  const branches = new Int32Array(nWindows * seqLen);
  const [prefix, branch] = [10, 15];
  for (let i = 0; i < nWindows * seqLen; i++) {
    const t = i % seqLen;
    branches[i] = t < prefix ? 0 : t < prefix + branch ? 1 : 2;
    positions[i] = t < prefix + branch ? t : t - branch;
  }
  return { positions, branches };
}

/** Name, shape, windows of seqLen, packed layout; the head size 64 and 128 cases take the flash kernel where it is on. */
const CASES: [string, LayerShape, number, PackedLayout | undefined][] = [
  ["gemma-2: post norms, scale 0.4, soft cap 1, window 12 of 40", GEMMA2, 40, undefined],
  ["gemma-2, packed tree layout: the window measured by the tokens' positions", GEMMA2, 40, treeLayout(2, 40)],
  ["gemma-3: q/k norms, post norms, scale 0.4, window 12", GEMMA3, 40, undefined],
  ["phi-3: LongRoPE factors, attention factor 1.5", PHI3, 40, undefined],
  ["gemma-2, head 64: soft cap 1, window 40 of 200", GEMMA2_FLASH, 200, undefined],
  ["phi-3, head 64: attention factor 1.5, 200 positions", PHI3_FLASH, 200, undefined],
  ["gemma-3, head 128: q/k norms, window 40 of 200", GEMMA3_FLASH, 200, undefined],
];
const FLASH_HEAD_SIZES: readonly number[] = [64, 128];

for (const variant of VARIANTS) {
  const { precision } = variant;
  test(`${variant.name}, kernels on the CPU: Gemma 2/3 and Phi-3 layers within ${TOLERANCE[precision]} of the float64 reference, while each feature moves the reference by more than twice that`, async () => {
    const backend = await emulated(variant);
    const reference = createReferenceKernels();
    const nWindows = 2;
    for (const [name, shape, seqLen, layout] of CASES) {
      if (variant.flash && !FLASH_HEAD_SIZES.includes(shape.headDim)) continue; // the other variants cover the GEMM path
      const weights = randomLayer(shape, 3);
      const x = values(nWindows * seqLen * shape.dim, 4, 1);
      const want = await reference.runLayer(x, nWindows, seqLen, weights, shape, layout);
      const states = await backend.upload(x, nWindows * seqLen, shape.dim);
      const prepared = await backend.prepareLayer(`${variant.name}/${name}`, () => weights, shape);
      launched();
      const out = await backend.runLayer(states, nWindows, seqLen, prepared, shape, layout);
      const attention = launched().filter((k) => k.startsWith("flash_attention") || k.startsWith("attention_softmax"));
      assert.ok(attention.length > 0 && attention.every((k) => k.startsWith(variant.flash ? `flash_attention_${shape.headDim}` : "attention_softmax")), `${name}: ${attention.join(", ")}`);
      const got = await backend.readRows(out);
      backend.release(states);
      backend.release(out);
      const err = scaledError(got, want);
      assert.ok(err <= TOLERANCE[precision] && err > 0, `${name}: scaled error ${err}`);
      for (const feature of ["slidingWindow", "attnSoftcap", "attnScale", "ropeAttentionFactor"] as const) {
        if (shape[feature] === undefined) continue;
        const effect = scaledError(await reference.runLayer(x, nWindows, seqLen, weights, without(shape, feature), layout), want);
        assert.ok(effect > 2 * TOLERANCE[precision], `${name}: ${feature} moves the reference by only ${effect}`);
      }
    }
  });

  test(`${variant.name}, kernels on the CPU: decoding through a sliding window (a prompt, 10 single tokens, then more at once) equals one full pass; the soft-capped head matches the reference`, async () => {
    const backend = await emulated(variant);
    const decode = backend.decode as DecodeSupport;
    // The window (12 of 60, or 40 of 150 for head size 64) is shorter than every step's keys.
    const [shape, steps] = variant.flash ? [GEMMA2_FLASH, [100, ...Array.from({ length: 10 }, () => 1), 40]] : [GEMMA2, [30, ...Array.from({ length: 10 }, () => 1), 20]];
    const total = steps.reduce((a, b) => a + b, 0);
    const weights = randomLayer(shape, 5);
    const x = values(total * shape.dim, 6, 1);
    const want = await createReferenceKernels().runLayer(x, 1, total, weights, shape);
    const prepared = await backend.prepareLayer(`${variant.name}/decode`, () => weights, shape);
    launched();
    const got = await runLayerInSteps(backend, decode, prepared, shape, x, steps);
    const attention = launched().filter((k) => k.startsWith("flash_attention") || k.startsWith("attention_softmax"));
    assert.equal(attention.length, steps.length);
    assert.ok(attention.every((k) => k.startsWith(variant.flash ? "flash_attention_64" : "attention_softmax")), attention.join(", "));
    const err = scaledError(got, want);
    assert.ok(err <= TOLERANCE[precision] && err > 0, `decode: scaled error ${err}`);

    const [dim, vocab, rows] = [64, 200, 12];
    const h = values(rows * dim, 7, 1);
    const head = { finalNorm: values(dim, 8, 0.2, 1), classifier: values(vocab * dim, 9, 0.5), logitSoftcap: 3 };
    const all = Int32Array.from({ length: rows }, (_, i) => i);
    const targets = Int32Array.from(all, (i) => (i * 37) % vocab);
    const reference = createReferenceKernels();
    const wantLogits = await reference.runHead(h, rows, head, vocab, 1e-6);
    const wantNll = await reference.runHead(h, rows, head, vocab, 1e-6, targets);
    const uncapped = await reference.runHead(h, rows, { finalNorm: head.finalNorm, classifier: head.classifier }, vocab, 1e-6);
    const states = await backend.upload(h, rows, dim);
    const preparedHead = await backend.prepareHead(`${variant.name}/head`, () => head, vocab);
    const logits = await backend.runHead(states, all, preparedHead, 1e-6);
    const nll = await backend.runHead(states, all, preparedHead, 1e-6, targets);
    backend.release(states);
    assert.ok(logits.kind === "logits" && wantLogits.kind === "logits" && uncapped.kind === "logits" && nll.kind === "nll" && wantNll.kind === "nll");
    assert.ok(scaledError(logits.logits, wantLogits.logits) <= TOLERANCE[precision], "capped logits");
    assert.ok(scaledError(uncapped.logits, wantLogits.logits) > 2 * TOLERANCE[precision], "the cap moves these logits");
    const logp = (n: { logSumExp: Float32Array; targetLogit: Float32Array }): Float64Array => Float64Array.from(n.logSumExp, (l, i) => n.targetLogit[i]! - l);
    assert.ok(scaledError(logp(nll), logp(wantNll)) <= TOLERANCE[precision], "log p of the targets under the capped logits");
  });
}

test("fp32, kernels on the CPU: the tiny Gemma 2, Gemma 3 and Phi-3 checkpoints end to end (perplexity, Block Influence, greedy generation with the device's key/value cache) agree with the reference", async () => {
  const backend = await emulated(VARIANTS[0]);
  const reference = createReferenceBackend();
  const document = Array.from({ length: 40 }, (_, i) => 3 + ((i * 37 + 11) % 90));
  const windows = [0, 20].map((begin) => ({ document: 0, begin, tokens: document.slice(begin, begin + 20), firstTarget: 1 }));
  for (const family of ["gemma2", "gemma3", "phi3"]) {
    const path = join(repoRoot(), "test", "fixtures", "hf-attn", family);
    const opened = openModel(path);
    try {
      const want = await streamingPerplexity(opened, windows, { backend: reference });
      const got = await streamingPerplexity(opened, windows, { backend });
      assert.ok(Math.abs(got.nll - want.nll) / want.nll <= TOLERANCE.fp32, `${family} nll ${got.nll} vs ${want.nll}`);
      const wantBi = await streamingBlockInfluence(opened, windows, { backend: reference });
      const gotBi = await streamingBlockInfluence(opened, windows, { backend });
      gotBi.layers.forEach((l, i) => assert.ok(Math.abs(l.bi - wantBi.layers[i]!.bi) <= 1e-4 * Math.max(wantBi.layers[i]!.bi, 1e-3), `${family} BI of layer ${i}: ${l.bi} vs ${wantBi.layers[i]!.bi}`));
      const prompt = document.slice(0, 7);
      const tokens = await generateOnBackend(opened, backend as CudaBackend & { decode: DecodeSupport }, prompt, { maxTokens: 8, temperature: 0, seed: 0 });
      assert.deepEqual(tokens, generate(loadModel(path).model, prompt, { maxTokens: 8, temperature: 0, seed: 0 }), `${family}: greedy tokens past the window of 5`);
    } finally {
      opened.close();
    }
  }
});

// The recurrent kinds (Mamba, Mamba-2, RWKV-4, RWKV-6, RWKV-7): their GEMMs and scan kernels on the CPU against the
// float64 reference layers (each window from a zero state), on random weights scaled as in
// test/recurrentBatched.test.ts, several windows each.
function randomRecurrentLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const weights: Partial<LayerWeightsF32> = {};
  let s = seed;
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) {
    const n = dims.reduce((a, b) => a * b, 1);
    const norm = name === "attnNorm" || name === "ffnNorm";
    const spread = dims.length === 2 && name !== "mambaALog" ? 1 / Math.sqrt(dims[1]!) : 0.5;
    weights[name] = values(n, 7919 * s++, norm ? 0.1 : spread, norm ? 1 : 0);
  }
  return weights as LayerWeightsF32;
}

const RECURRENT_COMMON = { nHeads: 1, nKvHeads: 1, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };
const TINY_MAMBA: LayerShape = { ...RECURRENT_COMMON, kind: "mamba", mamba: { dInner: 48, dState: 16, dtRank: 4, convKernel: 4, convBias: true }, dim: 24, hiddenDim: 48 };
/** d_state 20: the scan kernel with room for 64, its unused registers masked. */
const TINY_MAMBA_WIDE_STATE: LayerShape = { ...TINY_MAMBA, mamba: { dInner: 32, dState: 20, dtRank: 3, convKernel: 3, convBias: false } };
/** Two groups of two heads; the gated norm over groups of 16 (llama.cpp's grouping); dt clamped from below. */
const TINY_MAMBA2: LayerShape = {
  ...RECURRENT_COMMON, kind: "mamba2", dim: 24, hiddenDim: 48,
  mamba2: { dInner: 32, dState: 24, nHeads: 4, headDim: 8, nGroups: 2, convKernel: 4, convBias: true, normGroupSize: 16, dtMin: 0.05, dtMax: Infinity },
};
const TINY_RWKV4: LayerShape = { ...RECURRENT_COMMON, kind: "rwkv4", rwkvAttDim: 40, dim: 32, hiddenDim: 64 };
const TINY_RWKV6: LayerShape = { ...RECURRENT_COMMON, kind: "rwkv6", rwkv6: { headSize: 16, mixExtraDim: 4, decayExtraDim: 8 }, dim: 48, nHeads: 3, hiddenDim: 96 };
/** llama.cpp's head size, the kernel's block of 64 threads. */
const TINY_RWKV6_64: LayerShape = { ...TINY_RWKV6, rwkv6: { headSize: 64, mixExtraDim: 4, decayExtraDim: 8 }, dim: 128, nHeads: 2 };
const TINY_RWKV7: LayerShape = { ...RECURRENT_COMMON, kind: "rwkv7", rwkv7: { headSize: 64, decayRank: 8, iclrRank: 8, valueRank: 4, gateRank: 8 }, dim: 128, nHeads: 2, hiddenDim: 96 };
const RECURRENT_CASES: [string, LayerShape, number][] = [
  ["mamba, d_state 16", TINY_MAMBA, 40],
  ["mamba, d_state 20, no conv bias", TINY_MAMBA_WIDE_STATE, 24],
  ["mamba2, 2 groups, d_state 24", TINY_MAMBA2, 40],
  ["rwkv4", TINY_RWKV4, 40],
  ["rwkv6, head size 16", TINY_RWKV6, 30],
  ["rwkv6, head size 64", TINY_RWKV6_64, 12],
];

for (const variant of VARIANTS.slice(0, 2)) {
  const { precision } = variant;
  test(`${precision}, kernels on the CPU: Mamba, Mamba-2, RWKV-4, RWKV-6 and RWKV-7 layers (RWKV-7 as the first block, starting v_first on the device, and as a later one reading it) within ${TOLERANCE[precision]} of the float64 reference`, async (t) => {
    const backend = await emulated(variant);
    const reference = createReferenceKernels();
    const nWindows = 3;
    for (const [name, shape, seqLen] of RECURRENT_CASES) {
      const weights = randomRecurrentLayer(shape, 5);
      const x = values(nWindows * seqLen * shape.dim, 6, 1);
      const want = await reference.runLayer(x, nWindows, seqLen, weights, shape);
      const states = await backend.upload(x, nWindows * seqLen, shape.dim);
      const out = await backend.runLayer(states, nWindows, seqLen, await backend.prepareLayer(`${precision}/${name}`, () => weights, shape), shape);
      const got = await backend.readRows(out);
      const err = scaledError(got, want);
      backend.release(states);
      backend.release(out);
      // Mamba's update is a small part of the stream: its error is bounded relative to the update too.
      const update = (y: ArrayLike<number>): Float64Array => Float64Array.from(x, (v, i) => y[i]! - v);
      const updateErr = scaledError(update(got), update(want));
      t.diagnostic(`${name}: scaled error ${err.toExponential(2)}, of the update ${updateErr.toExponential(2)}`);
      assert.ok(err <= TOLERANCE[precision] && err > 0 && updateErr <= TOLERANCE[precision], `${name}: scaled error ${err}, of the update ${updateErr}`);
    }
    // RWKV-7: block 0 starts v_first, block 1 mixes it into its values.
    const seqLen = 12;
    const shape = TINY_RWKV7;
    const [first, second] = [randomRecurrentLayer(shape, 7), randomRecurrentLayer(shape, 8)];
    const x = values(nWindows * seqLen * shape.dim, 9, 1);
    const side: SideStreams = {};
    const wantFirst = await reference.runLayer(x, nWindows, seqLen, first, shape, undefined, side);
    const wantSecond = await reference.runLayer(wantFirst, nWindows, seqLen, second, shape, undefined, side);
    const states = await backend.upload(x, nWindows * seqLen, shape.dim);
    const afterFirst = await backend.runLayer(states, nWindows, seqLen, await backend.prepareLayer(`${precision}/rwkv7 first`, () => first, shape), shape);
    const afterSecond = await backend.runLayer(afterFirst, nWindows, seqLen, await backend.prepareLayer(`${precision}/rwkv7 second`, () => second, shape), shape);
    const errFirst = scaledError(await backend.readRows(afterFirst), wantFirst);
    // Measured against the update of the second block alone: the stream it was given is the device's.
    const errSecond = scaledError(await backend.readRows(afterSecond), wantSecond);
    for (const s of [states, afterFirst, afterSecond]) backend.release(s);
    t.diagnostic(`rwkv7: first block ${errFirst.toExponential(2)}, second block ${errSecond.toExponential(2)}`);
    assert.ok(errFirst <= TOLERANCE[precision] && errFirst > 0, `rwkv7 first block: scaled error ${errFirst}`);
    assert.ok(errSecond <= TOLERANCE[precision] && errSecond > 0, `rwkv7 second block (v_first from the device): scaled error ${errSecond}`);
    // Without v_first the second block computes something else: the side stream is really read.
    const alone = await reference.runLayer(wantFirst, nWindows, seqLen, second, shape, undefined, {});
    assert.ok(scaledError(alone, wantSecond) > 2 * TOLERANCE[precision], "v_first moves the second block's output");
  });
}

/** The tiny RWKV-7 GGUF (test/oracle/rwkv7_gguf_fixture.py, written by gguf-py), made once. */
let rwkv7Path: string | undefined;
function tinyRwkv7(): string {
  if (rwkv7Path) return rwkv7Path;
  const path = join(dir, "rwkv7_tiny.gguf");
  const made = spawnSync(oraclePython(), [join(repoRoot(), "test", "oracle", "rwkv7_gguf_fixture.py"), "--shared", sharedDir(), "--out", path], { encoding: "utf8" });
  assert.equal(made.status, 0, `rwkv7_gguf_fixture.py: ${made.error?.message ?? made.stderr}`);
  return (rwkv7Path = path);
}

test("fp32, kernels on the CPU: the tiny Mamba, Mamba-2, RWKV-4, RWKV-6 and RWKV-7 checkpoints end to end (perplexity and Block Influence over several windows, RWKV-7 with and without its first block, and with one window a batch and streamed weights) agree with the CPU reference", async (t) => {
  const backend = await emulated(VARIANTS[0]);
  const reference = createReferenceBackend();
  const rwkv7 = tinyRwkv7();
  const document = Array.from({ length: 48 }, (_, i) => 3 + ((i * 37 + 11) % 60));
  const windows = [0, 16, 32].map((begin) => ({ document: 0, begin, tokens: document.slice(begin, begin + 16), firstTarget: 1 }));
  const cases: [string, string, Set<number> | undefined][] = [
    ["mamba", join(repoRoot(), "test", "fixtures", "mamba_tiny"), undefined],
    ["mamba2 (2 groups)", join(repoRoot(), "test", "fixtures", "mamba2_tiny"), undefined],
    ["mamba2 (1 group)", join(repoRoot(), "test", "fixtures", "mamba2_tiny_g1"), undefined],
    ["rwkv4", join(repoRoot(), "test", "fixtures", "rwkv4_tiny"), undefined],
    ["rwkv6", join(repoRoot(), "test", "fixtures", "rwkv6_tiny.gguf"), undefined],
    ["rwkv7", rwkv7, undefined],
    // Block 0 skipped: block 1 starts v_first on the device.
    ["rwkv7 without block 0", rwkv7, new Set([0])],
  ];
  for (const [name, path, skip] of cases) {
    const opened = openModel(path);
    try {
      const options = skip ? { skip } : {};
      const want = await streamingPerplexity(opened, windows, { backend: reference, ...options });
      const got = await streamingPerplexity(opened, windows, { backend, ...options });
      assert.ok(Math.abs(got.nll - want.nll) / want.nll <= TOLERANCE.fp32, `${name} nll ${got.nll} vs ${want.nll}`);
      const wantBi = await streamingBlockInfluence(opened, windows, { backend: reference, ...options });
      const gotBi = await streamingBlockInfluence(opened, windows, { backend, ...options });
      assert.equal(gotBi.layers.length, wantBi.layers.length);
      const worst = Math.max(...gotBi.layers.map((l, i) => Math.abs(l.bi - wantBi.layers[i]!.bi) / Math.max(wantBi.layers[i]!.bi, 1e-3)));
      t.diagnostic(`${name}: nll ${got.nll} vs ${want.nll}; BI worst relative difference ${worst.toExponential(2)}`);
      assert.ok(worst <= 1e-4, `${name} BI: ${gotBi.layers.map((l) => l.bi).join(", ")} vs ${wantBi.layers.map((l) => l.bi).join(", ")}`);
    } finally {
      opened.close();
    }
  }
  // RWKV-7 with one window a batch and every layer streamed (no weight stays resident): each batch's
  // v_first is its own, started by its first block and freed with its last states.
  const small = await createCudaBackend({ precision: "fp32", libraries: libraries.get("fp32")!, cacheDir: join(dir, "cache-streamed"), batchTokens: 16, reserveBytes: 2 ** 60 });
  const opened = openModel(rwkv7);
  try {
    const want = await streamingBlockInfluence(opened, windows, { backend: reference });
    const got = await streamingBlockInfluence(opened, windows, { backend: small });
    assert.equal(small.stats.residentLayers, 0);
    assert.ok(small.stats.streamedLayers >= opened.config.nLayers, `streamed ${small.stats.streamedLayers}`);
    got.layers.forEach((l, i) => assert.ok(Math.abs(l.bi - want.layers[i]!.bi) <= 1e-4 * Math.max(want.layers[i]!.bi, 1e-3), `rwkv7 streamed, BI of layer ${i}: ${l.bi} vs ${want.layers[i]!.bi}`));
  } finally {
    opened.close();
    await small.dispose();
  }
});

test("fp32, kernels on the CPU: the tiny RWKV-7 GGUF's next-token probabilities over 16 positions on the emulated device are within the CPU twin's bound of llama.cpp's (1e-4 of the largest probability)", async (t) => {
  const backend = await emulated(VARIANTS[0]);
  const path = tinyRwkv7();
  const ids = [1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19];
  const opened = openModel(path);
  const vocab = opened.config.vocabSize;
  let device: Float32Array;
  try {
    const [batch] = await runLayersStreaming(opened, [{ document: 0, begin: 0, tokens: ids }], { backend });
    const head = await prepareHead(opened, backend);
    const result = await backend.runHead(batch!.hidden!, Int32Array.from(ids, (_, i) => i), head, opened.config.normEps);
    releaseBatches([batch!], backend);
    assert.ok(result.kind === "logits");
    device = result.logits;
  } finally {
    opened.close();
  }
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
  let theirs: Map<number, number>[];
  try {
    const model = await llama.loadModel({ modelPath: path });
    const context = await model.createContext({ contextSize: 256, threads: 1, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
    const results = await context.getSequence().controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { token: true, probabilities: true, options: { temperature: 0 } } }]));
    theirs = results.map((r, pos) => {
      const probs = r?.next?.probabilities;
      if (!probs) throw new Error(`llama.cpp gave no probabilities at position ${pos}`);
      return probs;
    });
    await context.dispose();
    await model.dispose();
  } finally {
    await llama.dispose();
  }
  let diff = 0;
  let scale = 0;
  ids.forEach((_, pos) => {
    const row = Float64Array.from(device.subarray(pos * vocab, (pos + 1) * vocab));
    const max = Math.max(...row);
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += row[i] = Math.exp(row[i]! - max);
    for (let i = 0; i < vocab; i++) {
      scale = Math.max(scale, row[i]! / sum);
      diff = Math.max(diff, Math.abs(row[i]! / sum - (theirs[pos]!.get(i) ?? 0)));
    }
  });
  t.diagnostic(`rwkv7 on the emulated device: max |p_device - p_llama.cpp| = ${diff.toExponential(2)} (largest probability ${scale.toFixed(3)})`);
  assert.ok(diff < 1e-4 * scale, `rwkv7: ${diff}`);
});

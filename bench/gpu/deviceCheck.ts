// The cuda backend's check on a machine with an NVIDIA GPU (run by bench/gpu/device-check.sh from
// the gpu bundle): correctness of every kernel path against the reference backend, on random
// layers of every family the engine runs and on stories260K end to end; then speed of Block
// Influence scoring and perplexity on random-weight TinyLlama-1.1B, Llama-2-7B and Llama-3-8B
// shapes. Writes OUT/shortgpt.json (schema in combineResults.ts) and prints a line per check.
// The Gemma 2/3 and Phi-3 cases are familyChecks.ts's; the recurrent kinds' (Mamba, Mamba-2, RWKV-4, RWKV-6, RWKV-7) recurrentChecks.ts's.
//
//   node dist/bench/gpu/deviceCheck.js --out DIR [--skip-speed] [--skip-correctness] [--only-shapes a,b]
//     [--checks layers,decode,stories,families,recurrent]   (correctness groups to run; default all)

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { DecodeSupport, DecoderBackend, LayerShape, LayerWeightsF32, PackedLayout } from "../../src/backend/backend.js";
import { createCudaBackend, type CudaBackend } from "../../src/backend/cuda/cudaBackend.js";
import { createReferenceBackend, createReferenceKernels } from "../../src/backend/referenceBackend.js";
import { embedRows } from "../../src/backend/embedding.js";
import { rowCosine, rowRelativeMagnitude } from "../../src/backend/rowStats.js";
import type { Window } from "../../src/data/windows.js";
import { argmax, generate, generateOnBackend } from "../../src/eval/generate.js";
import { loadModel, openModel } from "../../src/load.js";
import { layerShape, loadLlamaLayer } from "../../src/models/llama.js";
import { prepareHead, releaseBatches, runLayersStreaming, type StreamingSource, streamingBlockInfluence, streamingPerplexity } from "../../src/models/streaming.js";
import { perplexityData, resolveWindows, scoreData, tokenizeFile } from "../../src/pipeline.js";
import { sharedPath } from "../../src/shared.js";
import { LLAMA2_70B, prng, randomSource, randomWindows, SHAPES, type ModelShape, uniform } from "./randomModel.js";
import { evaluateTask, type TaskResult } from "../../src/eval/evaluateTasks.js";
import { encodePair } from "../../src/eval/loglikelihood.js";
import { findTask } from "../../src/eval/tasks/tasks.js";
import { checkFamilyDecode, checkFamilyFixtures, checkFamilyHead, checkFamilyLayers, type FamilyCheckContext } from "./familyChecks.js";
import { checkRecurrentFixtures, checkRecurrentLayers } from "./recurrentChecks.js";
import { runLayerInSteps } from "./cachedDecode.js";

const { values: args } = parseArgs({ options: {
  out: { type: "string" }, "skip-speed": { type: "boolean" }, "skip-correctness": { type: "boolean" }, "only-shapes": { type: "string" }, "dry-run-on-reference": { type: "boolean" },
  // MMLU 0-shot on the Llama-2-7B shape with this many items per subject (0: skip); the 70B shape (resident weights, 8 x 512).
  "mmlu-limit": { type: "string" }, "mmlu-shape": { type: "string" }, "with-70b": { type: "boolean" },
  checks: { type: "string" },
} });
const CHECK_GROUPS = ["layers", "decode", "stories", "families", "recurrent"] as const;
const checkGroups = new Set(args.checks?.split(",") ?? CHECK_GROUPS);
for (const g of checkGroups) if (!(CHECK_GROUPS as readonly string[]).includes(g)) throw new Error(`--checks: unknown group ${g} (groups: ${CHECK_GROUPS.join(", ")})`);

/**
 * The backend under test. --dry-run-on-reference puts the reference backend in its place, to
 * check this script itself on a machine without a GPU (every comparison then passes trivially
 * except that "err > 0" fails: the fast path did not run).
 */
async function makeBackend(precision: "bf16" | "fp32"): Promise<CudaBackend> {
  if (!args["dry-run-on-reference"]) return createCudaBackend({ precision });
  const stats = { layersUploaded: 0, residentLayers: 0, streamedLayers: 0, kernelsCached: false, kernelLaunches: 0, gemms: 0 };
  return { ...createReferenceBackend(), deviceName: "reference (dry run)", precision, stats, synchronize() {} };
}
const outDir = args.out ?? "gpu-out";
mkdirSync(outDir, { recursive: true });

interface Check { check: string; ok: boolean; detail: string }
interface SpeedRow { shape: string; windows: number; seqLen: number; task: "score" | "ppl"; tokensPerSecond: number; seconds: number; coldSeconds: number; bi?: number[]; nll?: number; precision: string }
interface Extra { name: string; unit: string; better: "higher" | "lower"; value: number; detail: string }
const report: { device: string; correctness: Check[]; speed: SpeedRow[]; notes: string[]; extras: Extra[] } = { device: "", correctness: [], speed: [], notes: [], extras: [] };
const started = performance.now();
const log = (line: string): void => console.log(`[deviceCheck +${((performance.now() - started) / 1000).toFixed(1)}s] ${line}`);
const save = (): void => writeFileSync(join(outDir, "shortgpt.json"), JSON.stringify(report, null, 2));

function record(check: string, ok: boolean, detail: string): void {
  report.correctness.push({ check, ok, detail });
  log(`${ok ? "ok  " : "FAIL"} ${check}: ${detail}`);
  save();
}

/** Runs one check; an exception is a failed check, not the end of the run. */
async function guarded(name: string, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    record(name, false, `threw: ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  }
}

// --- random data -------------------------------------------------------------------------

function randomLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const r = prng(seed);
  const { dim, hiddenDim, nHeads, nKvHeads, headDim } = shape;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const lin = (out: number, inp: number): Float32Array => uniform(r, out * inp, 1 / Math.sqrt(inp));
  return {
    attnNorm: uniform(r, dim, 0.2, 1), wq: lin(qDim, dim), wk: lin(kvDim, dim), wv: lin(kvDim, dim), wo: lin(dim, qDim),
    ffnNorm: uniform(r, dim, 0.2, 1), ...(shape.plainMlp ? {} : { wGate: lin(hiddenDim, dim) }), wDown: lin(dim, hiddenDim), wUp: lin(hiddenDim, dim),
    ...(shape.qkvBias ? { bq: uniform(r, qDim, 0.1), bk: uniform(r, kvDim, 0.1), bv: uniform(r, kvDim, 0.1) } : {}),
    ...(shape.qkNorm ? { qNorm: uniform(r, headDim, 0.2, 1), kNorm: uniform(r, headDim, 0.2, 1) } : {}),
    ...(shape.layerNorm ? { attnNormBias: uniform(r, dim, 0.1), ffnNormBias: uniform(r, dim, 0.1) } : {}),
    ...(shape.outputBiases ? { bo: uniform(r, dim, 0.1), bUp: uniform(r, hiddenDim, 0.1), bDown: uniform(r, dim, 0.1) } : {}),
    ...(shape.postNorms ? { attnPostNorm: uniform(r, dim, 0.2, 1), ffnPostNorm: uniform(r, dim, 0.2, 1) } : {}),
  };
}

/** max |got - want| / max |want|: the error relative to the array's scale. */
function scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return got.length === want.length ? err / scale : Infinity;
}

// --- correctness ----------------------------------------------------------------------------

/**
 * Tolerances, as max |error| / max |value| of a layer's output against the float64 reference.
 * fp32: GEMMs in fp32 with fp32 accumulation, 1e-5 (the issue's bound). bf16: every GEMM input is
 * rounded to 8 significant bits (relative error up to 2^-9 = 0.2%); an output element sums k
 * such products whose errors are independent, so its error is ~2^-9 * |typical product| * sqrt(k),
 * a fraction of a percent of the output's scale, compounded through two GEMMs in each block:
 * 2e-2 leaves room for that, and a real bug (a wrong head, mask or RoPE angle) gives O(1).
 */
const TOLERANCE = { fp32: 1e-5, bf16: 2e-2 } as const;

const BASE: LayerShape = { dim: 256, hiddenDim: 688, nHeads: 8, nKvHeads: 2, headDim: 32, normEps: 1e-5, ropeTheta: 10000 };
const FAMILY_SHAPES: [string, LayerShape][] = [
  ["llama GQA 8/2", BASE],
  ["llama MHA 8/8", { ...BASE, nKvHeads: 8 }],
  ["llama head 128, 4/1", { ...BASE, dim: 512, nHeads: 4, nKvHeads: 1, headDim: 128 }],
  ["llama-3 scaled RoPE", { ...BASE, ropeTheta: 500000, ropeFreqFactors: Array.from({ length: 16 }, (_, i) => 1 + i / 4) }],
  ["qwen2 q/k/v biases", { ...BASE, qkvBias: true }],
  ["qwen3 q/k norms", { ...BASE, qkNorm: true }],
  ["gemma GELU", { ...BASE, activation: "gelu_tanh" }],
  ["gpt-2 LayerNorm, no RoPE, plain MLP, biases", { ...BASE, nKvHeads: 8, layerNorm: true, noRope: true, plainMlp: true, outputBiases: true, activation: "gelu_tanh" }],
];

const FLASH_64: LayerShape = { ...BASE, dim: 512, nHeads: 8, nKvHeads: 2, headDim: 64 };

/**
 * Decoding with the device's key/value cache: a prompt of 100 tokens in one step, then 20 single
 * tokens, then 30 at once, each step's rows against the same rows of one full causal pass (reference).
 */
async function checkDecode(backend: CudaBackend, label: string, tolerance: number): Promise<void> {
  const reference = createReferenceKernels();
  for (const [caseName, shape] of [["head 32 (GEMM path)", BASE], ["head 64 (flash in bf16)", FLASH_64], ["head 128 (flash in bf16)", { ...FLASH_64, nHeads: 4, nKvHeads: 4, headDim: 128 }]] as [string, LayerShape][]) {
    await guarded(`${label} decode with the key/value cache: ${caseName}`, async () => {
      const decode = backend.decode;
      if (!decode) throw new Error("the backend has no decode support");
      const total = 150;
      const weights = randomLayer(shape, 13);
      const x = uniform(prng(14), total * shape.dim, 1);
      const want = await reference.runLayer(x, 1, total, weights, shape);
      const prepared = await backend.prepareLayer(`decode/${label}/${caseName}`, () => weights, shape);
      const got = await runLayerInSteps(backend, decode, prepared, shape, x, [100, ...Array.from({ length: 20 }, () => 1), 30]);
      const err = scaledError(got, want);
      record(`${label} decode with the key/value cache: ${caseName}`, err <= tolerance && err > 0, `scaled error ${err.toExponential(2)} against one full causal pass (bound ${tolerance}; steps 100, 20 x 1, 30)`);
    });
  }
}

/** Two windows of a prefix and two branches each (the evaluation's packed layout). */
function treeLayout(nWindows: number, seqLen: number): PackedLayout {
  const positions = new Int32Array(nWindows * seqLen);
  const branches = new Int32Array(nWindows * seqLen);
  const prefix = Math.floor(seqLen / 4);
  const branch = Math.floor((seqLen - prefix) / 2);
  for (let w = 0; w < nWindows; w++) {
    for (let t = 0; t < seqLen; t++) {
      const i = w * seqLen + t;
      if (t < prefix) { positions[i] = t; branches[i] = 0; } else if (t < prefix + branch) { positions[i] = t; branches[i] = 1; } else { positions[i] = t - branch; branches[i] = 2; }
    }
  }
  return { positions, branches };
}

async function checkLayers(backend: CudaBackend, label: string, tolerance: number): Promise<void> {
  const reference = createReferenceKernels();
  const cases: [string, LayerShape, number, number, PackedLayout | undefined][] = [
    ...FAMILY_SHAPES.map(([n, s]): [string, LayerShape, number, number, undefined] => [n, s, 3, 67, undefined]),
    ["llama GQA, packed tree layout", BASE, 2, 48, treeLayout(2, 48)],
    ["llama MHA, 1 window of 1000 (two query blocks, softmax over several strides)", { ...BASE, nKvHeads: 8 }, 1, 1000, undefined],
    ["llama GQA 8/2, 2 windows of 700 (two query blocks)", BASE, 2, 700, undefined],
    ["llama GQA 8/2, packed tree layout over two query blocks", BASE, 2, 600, treeLayout(2, 600)],
    // Head sizes 64 and 128 take the fused (flash) attention kernel in bf16: one and several key tiles, GQA and MHA.
    ["head 64, GQA 8/2 (flash in bf16), 3 windows of 67", FLASH_64, 3, 67, undefined],
    ["head 64, GQA 8/2 (flash in bf16), 2 windows of 700", FLASH_64, 2, 700, undefined],
    ["head 128, MHA 4/4 (flash in bf16), 1 window of 1000", { ...FLASH_64, nHeads: 4, nKvHeads: 4, headDim: 128 }, 1, 1000, undefined],
    ["head 64, GQA 8/2, packed tree layout (GEMM path)", FLASH_64, 2, 200, treeLayout(2, 200)],
  ];
  for (const [caseName, shape, nWindows, seqLen, layout] of cases) {
    await guarded(`${label} layer: ${caseName}`, async () => {
      const weights = randomLayer(shape, 11);
      const x = uniform(prng(12), nWindows * seqLen * shape.dim, 1);
      const want = await reference.runLayer(x, nWindows, seqLen, weights, shape, layout);
      const states = await backend.upload(x, nWindows * seqLen, shape.dim);
      const prepared = await backend.prepareLayer(`check/${label}/${caseName}`, () => weights, shape);
      const out = await backend.runLayer(states, nWindows, seqLen, prepared, shape, layout);
      const got = await backend.readRows(out);
      backend.release(states);
      backend.release(out);
      const err = scaledError(got, want);
      record(`${label} layer: ${caseName}`, err <= tolerance && err > 0, `scaled error ${err.toExponential(2)} (bound ${tolerance}; B=${nWindows}, T=${seqLen})`);
    });
  }
  await guarded(`${label} embedding`, async () => {
    const r = prng(41);
    const dim = 96;
    const vocab = 50;
    const weights = { table: uniform(r, vocab * dim, 1), scale: Math.fround(9.797959), positions: uniform(r, 40 * dim, 0.5) };
    const ids = Int32Array.from({ length: 60 }, (_, i) => (i * 17) % vocab);
    const positions = Int32Array.from({ length: 60 }, (_, i) => (i * 7) % 40);
    let err = 0;
    for (const [w, pos] of [[weights, positions], [{ table: weights.table }, undefined], [{ table: weights.table, positions: weights.positions }, undefined]] as const) {
      const want = embedRows(w, ids, dim, 30, pos);
      const prepared = await backend.prepareEmbedding(`check/${label}/embedding/${err}/${pos ? 1 : 0}/${"positions" in w ? 1 : 0}`, () => w, vocab, dim);
      const states = await backend.embed(prepared, ids, 30, pos);
      const got = await backend.readRows(states);
      backend.release(states);
      err = Math.max(err, ...got.map((v, i) => Math.abs(v - want[i]!)));
    }
    record(`${label} embedding`, err === 0, `max |difference| from the host rows ${err} (scale, learned positions, plain; bit-identical expected)`);
  });
  await guarded(`${label} head`, async () => {
    const r = prng(21);
    const dim = 256;
    const vocab = 1000;
    const rows = 70;
    const x = uniform(r, rows * dim, 1);
    const head = { finalNorm: uniform(r, dim, 0.2, 1), classifier: uniform(r, vocab * dim, 0.5) };
    const pick = Int32Array.from({ length: 33 }, (_, i) => (i * 7) % rows);
    const targets = Int32Array.from(pick, (_, i) => (i * 131) % vocab);
    const picked = new Float32Array(pick.length * dim);
    pick.forEach((row, i) => picked.set(x.subarray(row * dim, (row + 1) * dim), i * dim));
    const wantLogits = await reference.runHead(picked, pick.length, head, vocab, 1e-5);
    const wantNll = await reference.runHead(picked, pick.length, head, vocab, 1e-5, targets);
    const states = await backend.upload(x, rows, dim);
    const prepared = await backend.prepareHead(`check/${label}/head`, () => head, vocab);
    const logits = await backend.runHead(states, pick, prepared, 1e-5);
    const nll = await backend.runHead(states, pick, prepared, 1e-5, targets);
    backend.release(states);
    if (logits.kind !== "logits" || wantLogits.kind !== "logits" || nll.kind !== "nll" || wantNll.kind !== "nll") throw new Error("wrong head result kinds");
    const errLogits = scaledError(logits.logits, wantLogits.logits);
    const logp = (n: { logSumExp: Float32Array; targetLogit: Float32Array }): Float64Array => Float64Array.from(n.logSumExp, (l, i) => n.targetLogit[i]! - l);
    const errNll = scaledError(logp(nll), logp(wantNll));
    record(`${label} head`, errLogits <= tolerance && errNll <= tolerance, `logits scaled error ${errLogits.toExponential(2)}, log p ${errNll.toExponential(2)} (bound ${tolerance})`);
  });
  await guarded(`${label} rowStats and readRows`, async () => {
    const r = prng(31);
    const dim = 300;
    const rows = 50;
    const a = uniform(r, rows * dim, 1);
    const b = Float32Array.from(a, (v) => v + (r() * 2 - 1) * 0.3);
    b.fill(0, 0, dim); // a zero output row: cosine 0, magnitude 1
    const sa = await backend.upload(a, rows, dim);
    const sb = await backend.upload(b, rows, dim);
    const stats = await backend.rowStats(sa, sb, { cosine: true, magnitude: true });
    const subset = Int32Array.of(49, 3, 0, 17);
    const some = await backend.rowStats(sa, sb, { cosine: true, magnitude: false }, subset);
    const readBack = await backend.readRows(sb, subset);
    backend.release(sa);
    backend.release(sb);
    let err = 0;
    for (let i = 0; i < rows; i++) {
      err = Math.max(err, Math.abs(stats.cosine![i]! - rowCosine(a, b, i * dim, dim)), Math.abs(stats.magnitude![i]! - rowRelativeMagnitude(a, b, i * dim, dim)));
    }
    subset.forEach((row, i) => { err = Math.max(err, Math.abs(some.cosine![i]! - rowCosine(a, b, row * dim, dim))); });
    const rowsOk = [...subset].every((row, i) => readBack.subarray(i * dim, (i + 1) * dim).every((v, j) => v === b[row * dim + j]));
    record(`${label} rowStats and readRows`, err < 1e-9 && rowsOk && some.magnitude === undefined, `max |difference| from the float64 host statistics ${err.toExponential(2)}; gathered rows exact: ${rowsOk}`);
  });
}

/** stories260K end to end: BI, perplexity and the greedy sample against the reference backend. */
async function checkStories(backend: CudaBackend, label: string, tolerance: number): Promise<void> {
  const modelPath = sharedPath("models", "stories260K", "stories260K.bin");
  const textPath = sharedPath("data", "tinystories", "tinystories_val.txt");
  const opened = openModel(modelPath);
  const data = tokenizeFile(opened, textPath);
  const windows = resolveWindows(opened.config.contextLength, { seqLen: 256, maxTokens: 4096 });
  const reference = createReferenceBackend();
  await guarded(`${label} stories260K BI`, async () => {
    const want = await scoreData(opened, data, windows, { backend: reference });
    const got = await scoreData(opened, data, windows, { backend });
    const err = Math.max(...got.layers.map((l, i) => Math.abs(l.bi - want.layers[i]!.bi) / Math.max(want.layers[i]!.bi, 1e-3)));
    const sameRanking = got.ranking.join() === want.ranking.join();
    record(`${label} stories260K BI`, err <= tolerance * 10 && sameRanking, `max relative BI difference ${err.toExponential(2)} over ${got.tokens} tokens; ranking ${sameRanking ? "identical" : `differs: ${got.ranking} vs ${want.ranking}`}; BI ${got.layers.map((l) => l.bi.toFixed(5)).join(" ")}`);
  });
  await guarded(`${label} stories260K perplexity`, async () => {
    const want = await perplexityData(opened, data, windows, { backend: reference });
    const got = await perplexityData(opened, data, windows, { backend });
    const err = Math.abs(got.nll - want.nll) / want.nll;
    record(`${label} stories260K perplexity`, err <= tolerance, `ppl ${got.perplexity.toFixed(5)} vs reference ${want.perplexity.toFixed(5)} (nll relative difference ${err.toExponential(2)}, ${got.tokens} tokens)`);
  });
  await guarded(`${label} stories260K greedy sample`, async () => {
    const loaded = loadModel(modelPath);
    const bos = 1;
    const want = generate(loaded.model, [bos], { maxTokens: 60, temperature: 0, seed: 0 });
    const got = await greedyOnBackend(opened, backend, [bos], 60);
    const same = got.join() === want.join();
    record(`${label} stories260K greedy sample`, same, `${same ? "identical" : "differs"}: "${loaded.tokenizer.decode(got).slice(0, 120)}"`);
    // generate as the CLI runs it on this backend: the key/value cache on the device.
    if (!backend.decode) throw new Error("the backend has no decode support");
    const cached = await generateOnBackend(opened, backend as CudaBackend & { decode: DecodeSupport }, [bos], { maxTokens: 60, temperature: 0, seed: 0 });
    const sameCached = cached.join() === want.join();
    record(`${label} stories260K greedy sample, generate with the device's key/value cache`, sameCached, `${sameCached ? "identical" : "differs"}: "${loaded.tokenizer.decode(cached).slice(0, 120)}"`);
  });
}

/** Greedy decoding by re-running the whole window each step (no cache: it checks the layers, not generation). */
async function greedyOnBackend(source: StreamingSource, backend: DecoderBackend, prompt: number[], n: number): Promise<number[]> {
  const tokens = [...prompt];
  const head = await prepareHead(source, backend);
  for (let i = 0; i < n; i++) {
    const window: Window = { document: 0, begin: 0, tokens: [...tokens] };
    const batches = await runLayersStreaming(source, [window], { backend });
    try {
      const result = await backend.runHead(batches[0]!.hidden!, Int32Array.of(tokens.length - 1), head, source.config.normEps);
      if (result.kind !== "logits") throw new Error("expected logits");
      tokens.push(argmax(Float64Array.from(result.logits), 0, source.config.vocabSize));
    } finally {
      releaseBatches(batches, backend);
    }
  }
  return tokens.slice(prompt.length);
}

// --- speed -----------------------------------------------------------------------------------

async function timed<T>(backend: CudaBackend, run: () => Promise<T>): Promise<{ seconds: number; result: T }> {
  backend.synchronize();
  const t0 = performance.now();
  const result = await run();
  backend.synchronize();
  return { seconds: (performance.now() - t0) / 1000, result };
}

async function measureShape(shape: ModelShape, runs: [number, number][], options: { batchTokens?: number; sharedTensors?: boolean } = {}): Promise<void> {
  const backend = options.batchTokens ? await createCudaBackend({ precision: "bf16", batchTokens: options.batchTokens }) : await makeBackend("bf16");
  try {
    const source = randomSource(shape, options.sharedTensors ? { sharedTensors: true } : {});
    for (const [nWindows, seqLen] of runs) {
      const windows = randomWindows(shape, nWindows, seqLen, 7);
      const tokens = nWindows * seqLen;
      for (const task of ["score", "ppl"] as const) {
        await guarded(`speed ${shape.name} ${nWindows}x${seqLen} ${task}`, async () => {
          const run = (): Promise<unknown> => (task === "score" ? streamingBlockInfluence(source, windows, { backend }) : streamingPerplexity(source, windows, { backend }));
          const cold = await timed(backend, run);
          const warm: { seconds: number; result: unknown }[] = [];
          for (let i = 0; i < 3; i++) warm.push(await timed(backend, run));
          const median = [...warm].sort((a, b) => a.seconds - b.seconds)[1]!;
          const row: SpeedRow = { shape: shape.name, windows: nWindows, seqLen, task, tokensPerSecond: tokens / median.seconds, seconds: median.seconds, coldSeconds: cold.seconds, precision: "bf16" };
          if (task === "score") row.bi = (median.result as { layers: { bi: number }[] }).layers.map((l) => l.bi);
          else row.nll = (median.result as { nll: number }).nll;
          report.speed.push(row);
          log(`speed ${shape.name} ${nWindows}x${seqLen} ${task}: ${row.tokensPerSecond.toFixed(0)} tokens/s (warm ${median.seconds.toFixed(3)} s, first ${cold.seconds.toFixed(2)} s incl. weight upload); resident layers ${backend.stats.residentLayers}, streamed ${backend.stats.streamedLayers}`);
          save();
        });
      }
    }
    // Generation on the device (key/value cache, weights resident): a 512-token prompt, then 64 tokens one at a time.
    if (backend.decode || !args["dry-run-on-reference"]) await guarded(`speed ${shape.name} generate`, async () => {
      if (!backend.decode) throw new Error("no decode support");
      const prompt = randomWindows(shape, 1, 512, 3)[0]!.tokens;
      const gen = (): Promise<number[]> => generateOnBackend(source, backend as CudaBackend & { decode: DecodeSupport }, prompt, { maxTokens: 64, temperature: 0, seed: 0 });
      await gen();
      const { seconds, result } = await timed(backend, gen);
      report.notes.push(`${shape.name} generate: 512-token prompt + ${result.length} new tokens in ${seconds.toFixed(3)} s (${(result.length / seconds).toFixed(1)} tokens/s with the prompt step included)`);
      log(report.notes[report.notes.length - 1]!);
      save();
    });
    // Where the time goes: one layer alone, repeated on the device (weights resident, no host work between).
    for (const [nWindows, seqLen] of runs) {
      await guarded(`profile ${shape.name} ${nWindows}x${seqLen}`, async () => {
        const config = source.config;
        const layerShapeOf = layerShape(config);
        const layer = await backend.prepareLayer(`profile/${shape.name}`, () => loadLayer0(source), layerShapeOf);
        const rows = nWindows * seqLen;
        const x = await backend.upload(new Float32Array(rows * config.dim).fill(0.01), rows, config.dim);
        const runOnce = async (): Promise<void> => backend.release(await backend.runLayer(x, nWindows, seqLen, layer, layerShapeOf));
        await runOnce();
        const { seconds } = await timed(backend, async () => {
          for (let i = 0; i < 10; i++) await runOnce();
        });
        backend.release(x);
        const ms = (seconds / 10) * 1000;
        const params = 2 * config.dim * config.dim + 2 * config.dim * config.nKvHeads * config.headDim + 3 * config.dim * config.hiddenDim;
        const tflops = (2 * rows * params) / (seconds / 10) / 1e12;
        report.notes.push(`${shape.name} ${nWindows}x${seqLen}: one layer ${ms.toFixed(3)} ms on the device (${tflops.toFixed(0)} TFLOP/s of its GEMM work); x ${config.nLayers} layers = ${(ms * config.nLayers).toFixed(1)} ms`);
        log(report.notes[report.notes.length - 1]!);
        save();
      });
    }
  } finally {
    await backend.dispose();
  }
}

/**
 * MMLU 0-shot on a random-weight model of the shape with stories260K's tokenizer (ids < 512 are
 * valid in any vocabulary): the rate is the point. Writes the token requests it scored to
 * OUT/mmlu-requests.json for the peer (peer_extra.py mmlu), which scores the same ids.
 */
async function measureMmlu(shape: ModelShape, limit: number): Promise<void> {
  await guarded(`speed ${shape.name} mmlu 0-shot`, async () => {
    const backend = await makeBackend("bf16");
    try {
      const source = randomSource(shape);
      const tokenizer = openModel(sharedPath("models", "stories260K", "stories260K.bin")).tokenizer;
      const task = findTask("mmlu")!;
      const dataDir = sharedPath("data");
      const items = task.load(dataDir, { shots: 0, limit });
      const requests = items.flatMap((item) => item.requests.map((r) => encodePair(tokenizer, r, tokenizer.addsBos)));
      writeFileSync(join(outDir, "mmlu-requests.json"), JSON.stringify({ items: items.length, requests: requests.map((r) => [r.context, r.continuation]) }));
      const run = (): Promise<TaskResult> => evaluateTask(source, tokenizer, task, { dataDir, shots: 0, limit, backend });
      const cold = await timed(backend, run);
      const warm = await timed(backend, run);
      const tokens = requests.reduce((n, r) => n + r.context.length + r.continuation.length, 0);
      const value = items.length / warm.seconds;
      report.extras.push({ name: `${shape.name} mmlu 0-shot`, unit: "items/s", better: "higher", value, detail: `${items.length} items (${limit} per subject), ${requests.length} requests, ${tokens} request tokens; warm ${warm.seconds.toFixed(2)} s, first ${cold.seconds.toFixed(2)} s; acc ${warm.result.metrics["acc"]?.value.toFixed(4)}` });
      log(`speed ${shape.name} mmlu 0-shot: ${value.toFixed(1)} items/s (${report.extras[report.extras.length - 1]!.detail})`);
      save();
    } finally {
      await backend.dispose();
    }
  });
}

function loadLayer0(source: StreamingSource): LayerWeightsF32 {
  return loadLlamaLayer(source.provider, source.config, source.names, 0);
}

/** Llama-2-7B shape, one window of 1,024 tokens: BI with bf16 GEMM inputs against fp32 GEMMs (the fp32 path is checked against the reference above). */
async function checkBf16AgainstFp32(): Promise<void> {
  await guarded("llama2-7b shape BI: bf16 against fp32, 1 x 1024 tokens", async () => {
    const shape = SHAPES[1]!;
    const source = randomSource(shape);
    const windows = randomWindows(shape, 1, 1024, 9);
    const bi: Record<string, { bi: number; layer: number }[]> = {};
    for (const precision of ["fp32", "bf16"] as const) {
      const backend = await makeBackend(precision);
      try {
        bi[precision] = (await streamingBlockInfluence(source, windows, { backend })).layers;
      } finally {
        await backend.dispose();
      }
    }
    const diffs = bi["fp32"]!.map((l, i) => Math.abs(l.bi - bi["bf16"]![i]!.bi));
    const bound = Math.max(...diffs);
    // Ranking identical except between layers whose fp32 BI differ by less than the bound.
    const order = (ls: { bi: number; layer: number }[]): number[] => [...ls].sort((a, b) => a.bi - b.bi || a.layer - b.layer).map((l) => l.layer);
    const a = order(bi["fp32"]!);
    const b = order(bi["bf16"]!);
    let swapsBeyondBound = 0;
    for (let i = 0; i < a.length; i++) for (let j = i + 1; j < a.length; j++) {
      const bi32 = bi["fp32"]!;
      const li = a[i]!;
      const lj = a[j]!;
      if (b.indexOf(li) > b.indexOf(lj) && Math.abs(bi32[li]!.bi - bi32[lj]!.bi) > 2 * bound) swapsBeyondBound++;
    }
    const relative = Math.max(...diffs.map((d, i) => d / bi["fp32"]![i]!.bi));
    record("llama2-7b shape BI: bf16 against fp32, 1 x 1024 tokens", swapsBeyondBound === 0, `max |BI difference| ${bound.toExponential(2)} (relative ${relative.toExponential(2)}); ranking ${a.join() === b.join() ? "identical" : `differs only between layers closer than 2x that: ${swapsBeyondBound === 0}`}; fp32 BI ${bi["fp32"]!.map((l) => l.bi.toFixed(5)).join(" ")}`);
  });
}

// --- main ------------------------------------------------------------------------------------

const probe = await makeBackend("bf16");
report.device = probe.deviceName;
log(`device ${probe.deviceName}; kernels ${probe.stats.kernelsCached ? "from the disk cache" : "compiled"}`);
await probe.dispose();
if (!args["skip-correctness"]) {
  for (const precision of ["fp32", "bf16"] as const) {
    const backend = await makeBackend(precision);
    try {
      if (checkGroups.has("layers")) await checkLayers(backend, precision, TOLERANCE[precision]);
      if (checkGroups.has("decode")) await checkDecode(backend, precision, TOLERANCE[precision]);
      if (checkGroups.has("stories")) await checkStories(backend, precision, TOLERANCE[precision]);
      if (checkGroups.has("families")) {
        const ctx: FamilyCheckContext = { backend, label: precision, tolerance: TOLERANCE[precision], record, guarded, randomLayer, scaledError };
        await checkFamilyLayers(ctx);
        await checkFamilyDecode(ctx);
        await checkFamilyHead(ctx);
        await checkFamilyFixtures(ctx);
      }
      if (checkGroups.has("recurrent")) {
        const ctx: FamilyCheckContext = { backend, label: precision, tolerance: TOLERANCE[precision], record, guarded, randomLayer, scaledError };
        await checkRecurrentLayers(ctx);
        await checkRecurrentFixtures(ctx);
      }
    } finally {
      await backend.dispose();
    }
  }
}
if (!args["skip-speed"]) {
  const only = args["only-shapes"]?.split(",");
  // "tiny" only when named: it checks this script's speed path in a dry run.
  const tiny: ModelShape = { name: "tiny", dim: 128, hiddenDim: 256, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 1000, ropeTheta: 10000 };
  for (const shape of [...SHAPES, tiny].filter((s) => (only ? only.includes(s.name) : s !== tiny))) {
    await measureShape(shape, shape.name === "llama2-7b" ? [[8, 512], [8, 2048]] : [[8, 512]]);
  }
  const mmluLimit = Number(args["mmlu-limit"] ?? "0");
  const mmluShape = [...SHAPES, tiny].find((s) => s.name === (args["mmlu-shape"] ?? "llama2-7b"));
  if (mmluLimit > 0 && mmluShape) await measureMmlu(mmluShape, mmluLimit);
  // 70B: 129 GiB of bf16 weights resident on a 141 GB card (batches of 4,096 tokens keep the reserve small);
  // every layer reads the same host arrays, so the first pass costs uploads, not random numbers.
  if (args["with-70b"]) await measureShape(LLAMA2_70B, [[8, 512]], { batchTokens: 4096, sharedTensors: true });
  if (!args["skip-correctness"]) await checkBf16AgainstFp32();
}
save();
const failed = report.correctness.filter((c) => !c.ok).length;
log(`done: ${report.correctness.length - failed} of ${report.correctness.length} checks passed; ${report.speed.length} speed rows`);
process.exitCode = failed > 0 ? 1 : 0;

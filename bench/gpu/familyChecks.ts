// The device check's Gemma 2/3 and Phi-3 cases (issue #15), run by deviceCheck.ts on a GPU: layers
// with each family's features on the fused (flash) and GEMM attention paths, over windows longer
// than the sliding window and with the soft cap active; decoding through a sliding window against
// one full pass; the soft-capped head; and the tiny transformers checkpoints of test/fixtures/hf-attn
// end to end (the gpu bundle carries them). Every comparison is against the float64 reference with
// deviceCheck's bounds, and a layer case also says how far each feature moves the reference output,
// so that a kernel ignoring a feature could not pass.

import { join } from "node:path";
import type { DecodeSupport, DecoderBackend, LayerShape, LayerWeightsF32, PackedLayout } from "../../src/backend/backend.js";
import type { PerplexityWindow } from "../../src/data/windows.js";
import type { CudaBackend } from "../../src/backend/cuda/cudaBackend.js";
import { createReferenceBackend, createReferenceKernels } from "../../src/backend/referenceBackend.js";
import { generate, generateOnBackend } from "../../src/eval/generate.js";
import { loadModel, type OpenedModel, openModel } from "../../src/load.js";
import { streamingBlockInfluence, streamingPerplexity } from "../../src/models/streaming.js";
import { repoRoot } from "../../src/shared.js";
import { prng, uniform } from "./randomModel.js";
import { runLayerInSteps } from "./cachedDecode.js";

/** What the checks need of deviceCheck.ts: the backend under test, its bound, and the recording helpers. */
export interface FamilyCheckContext {
  backend: CudaBackend;
  /** "fp32" or "bf16": prefixes every check's name. */
  label: string;
  /** max |error| / max |value| allowed (deviceCheck's TOLERANCE for the precision). */
  tolerance: number;
  record(check: string, ok: boolean, detail: string): void;
  guarded(name: string, body: () => Promise<void>): Promise<void>;
  /** A random layer of the shape; it must hold the shape's q/k norms and post norms. */
  randomLayer(shape: LayerShape, seed: number): LayerWeightsF32;
  scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number;
}

const GEMMA: Pick<LayerShape, "normEps" | "ropeTheta" | "activation" | "postNorms"> = { normEps: 1e-6, ropeTheta: 10000, activation: "gelu_tanh", postNorms: true };
/** Gemma 2: scale apart from 1/sqrt(headDim), scores capped at 1 (random scores are small; Gemma 2's 50 would not bind), a local window. */
const GEMMA2_32: LayerShape = { ...GEMMA, dim: 256, hiddenDim: 688, nHeads: 8, nKvHeads: 4, headDim: 32, attnScale: 0.3, attnSoftcap: 1, slidingWindow: 48 };
const GEMMA2_64: LayerShape = { ...GEMMA, dim: 512, hiddenDim: 1376, nHeads: 8, nKvHeads: 2, headDim: 64, attnScale: 0.2, attnSoftcap: 1, slidingWindow: 70 };
const GEMMA2_128: LayerShape = { ...GEMMA, dim: 512, hiddenDim: 1376, nHeads: 4, nKvHeads: 2, headDim: 128, attnScale: 0.15, attnSoftcap: 1, slidingWindow: 64 };
/** Gemma-2-2B's head size: the GEMM path in both precisions. */
const GEMMA2_256: LayerShape = { ...GEMMA2_128, headDim: 256, attnScale: 0.1 };
/** Gemma 3: per-head q/k norms, no soft cap; local layers windowed (27B: head 128; 1B-12B: head 256). */
const GEMMA3_128: LayerShape = { ...GEMMA, dim: 512, hiddenDim: 1376, nHeads: 4, nKvHeads: 2, headDim: 128, qkNorm: true, attnScale: 0.15, slidingWindow: 64 };
const GEMMA3_256: LayerShape = { ...GEMMA3_128, headDim: 256, attnScale: 0.1 };
/** Phi-3: LongRoPE's per-frequency factors and attention factor (1.5 rather than mini's 1.19, so that its effect stands well above the bf16 bound). */
const longRope = (headDim: number): number[] => Array.from({ length: headDim / 2 }, (_, i) => 1 + i / 8);
const PHI3_96: LayerShape = { dim: 384, hiddenDim: 1024, nHeads: 4, nKvHeads: 4, headDim: 96, normEps: 1e-5, ropeTheta: 10000, ropeFreqFactors: longRope(96), ropeAttentionFactor: 1.5 };
const PHI3_128: LayerShape = { ...PHI3_96, dim: 512, hiddenDim: 1376, headDim: 128, ropeFreqFactors: longRope(128) };

/** Two windows of a prefix and two branches each; positions restart in the second branch, so the window measures by position, not packed index. */
function treeLayout(nWindows: number, seqLen: number): PackedLayout {
  const positions = new Int32Array(nWindows * seqLen);
  const branches = new Int32Array(nWindows * seqLen);
  const prefix = Math.floor(seqLen / 4);
  const branch = Math.floor((seqLen - prefix) / 2);
  for (let i = 0; i < nWindows * seqLen; i++) {
    const t = i % seqLen;
    branches[i] = t < prefix ? 0 : t < prefix + branch ? 1 : 2;
    positions[i] = t < prefix + branch ? t : t - branch;
  }
  return { positions, branches };
}

/** The features whose effect a case reports: each one a kernel could ignore and still produce plausible numbers. */
type MeasuredFeature = "slidingWindow" | "attnSoftcap" | "attnScale" | "ropeAttentionFactor";
const MEASURED: readonly MeasuredFeature[] = ["slidingWindow", "attnSoftcap", "attnScale", "ropeAttentionFactor"];

/** A shape without one feature (exactOptionalPropertyTypes: absent, not undefined). */
function without(shape: LayerShape, field: MeasuredFeature): LayerShape {
  const copy = { ...shape };
  delete copy[field];
  return copy;
}

interface LayerCase { name: string; shape: LayerShape; nWindows: number; seqLen: number; layout?: PackedLayout }

const LAYER_CASES: LayerCase[] = [
  { name: "gemma-2 local, head 32 (GEMM path): post norms, scale 0.3, soft cap 1, window 48", shape: GEMMA2_32, nWindows: 2, seqLen: 200 },
  { name: "gemma-2 global, head 32 (GEMM path): post norms, scale 0.3, soft cap 1", shape: without(GEMMA2_32, "slidingWindow"), nWindows: 2, seqLen: 200 },
  { name: "gemma-2 local, head 64 (flash in bf16; key tiles before the window skipped): window 70", shape: GEMMA2_64, nWindows: 2, seqLen: 200 },
  { name: "gemma-2 local, head 128 (flash in bf16): window 64", shape: GEMMA2_128, nWindows: 1, seqLen: 260 },
  { name: "gemma-2 local, head 256 as Gemma-2-2B (GEMM path): window 64", shape: GEMMA2_256, nWindows: 1, seqLen: 150 },
  { name: "gemma-2 local, head 32, packed tree layout (GEMM path; window by position)", shape: GEMMA2_32, nWindows: 2, seqLen: 200, layout: treeLayout(2, 200) },
  { name: "gemma-3 local, head 128 (flash in bf16): q/k norms, scale 0.15, window 64", shape: GEMMA3_128, nWindows: 1, seqLen: 260 },
  { name: "gemma-3 local, head 256 (GEMM path): q/k norms, window 64", shape: GEMMA3_256, nWindows: 1, seqLen: 150 },
  { name: "phi-3, head 96 as Phi-3-mini (GEMM path): LongRoPE factors, attention factor 1.5", shape: PHI3_96, nWindows: 2, seqLen: 150 },
  { name: "phi-3, head 128 as Phi-3-medium (flash in bf16): LongRoPE factors, attention factor 1.5", shape: PHI3_128, nWindows: 1, seqLen: 200 },
];

/** The reference outputs of a case (with and without each measured feature), computed once for both precisions. */
const referenceOutputs = new Map<string, { x: Float32Array; weights: LayerWeightsF32; want: Float32Array; effects: [string, number][] }>();

async function referenceFor(c: LayerCase, ctx: FamilyCheckContext): Promise<{ x: Float32Array; weights: LayerWeightsF32; want: Float32Array; effects: [string, number][] }> {
  const have = referenceOutputs.get(c.name);
  if (have) return have;
  const reference = createReferenceKernels();
  const { shape } = c;
  const weights = ctx.randomLayer(shape, 51);
  const x = uniform(prng(52), c.nWindows * c.seqLen * shape.dim, 1);
  const want = await reference.runLayer(x, c.nWindows, c.seqLen, weights, shape, c.layout);
  const effects: [string, number][] = [];
  for (const field of MEASURED) {
    if (shape[field] === undefined) continue;
    const plain = await reference.runLayer(x, c.nWindows, c.seqLen, weights, without(shape, field), c.layout);
    effects.push([field, ctx.scaledError(plain, want)]);
  }
  const outputs = { x, weights, want, effects };
  referenceOutputs.set(c.name, outputs);
  return outputs;
}

/** Each layer case on the backend against the float64 reference; each measured feature must move the reference by more than twice the bound. */
export async function checkFamilyLayers(ctx: FamilyCheckContext): Promise<void> {
  const { backend, label, tolerance } = ctx;
  for (const c of LAYER_CASES) {
    const name = `${label} family layer: ${c.name}`;
    await ctx.guarded(name, async () => {
      const { shape } = c;
      const { x, weights, want, effects } = await referenceFor(c, ctx);
      const states = await backend.upload(x, c.nWindows * c.seqLen, shape.dim);
      const prepared = await backend.prepareLayer(`families/${label}/${c.name}`, () => weights, shape);
      const out = await backend.runLayer(states, c.nWindows, c.seqLen, prepared, shape, c.layout);
      const got = await backend.readRows(out);
      backend.release(states);
      backend.release(out);
      const err = ctx.scaledError(got, want);
      const weak = effects.filter(([, e]) => !(e > 2 * tolerance)).map(([f]) => f);
      ctx.record(name, err <= tolerance && err > 0 && weak.length === 0,
        `scaled error ${err.toExponential(2)} (bound ${tolerance}; B=${c.nWindows}, T=${c.seqLen}); each feature moves the reference by ${effects.map(([f, e]) => `${f} ${e.toExponential(2)}`).join(", ")}${weak.length ? ` (too little to detect: ${weak.join(", ")})` : ""}`);
    });
  }
}

/**
 * Decoding through a sliding window with the device's key/value cache: a prompt of 100 tokens,
 * 20 single tokens, then 30 at once, against one full causal pass of the 150 (reference). The
 * window (40) is shorter than every step's keys, so each step must hide the oldest.
 */
export async function checkFamilyDecode(ctx: FamilyCheckContext): Promise<void> {
  const { backend, label, tolerance } = ctx;
  const cases: [string, LayerShape][] = [
    ["gemma-2 head 32 (GEMM path)", { ...GEMMA2_32, slidingWindow: 40 }],
    ["gemma-2 head 64 (flash in bf16)", { ...GEMMA2_64, slidingWindow: 40 }],
    ["gemma-2 head 256 (GEMM path)", { ...GEMMA2_256, slidingWindow: 40 }],
  ];
  for (const [caseName, shape] of cases) {
    const name = `${label} family decode, window 40 of 150 positions: ${caseName}`;
    await ctx.guarded(name, async () => {
      const decode: DecodeSupport | undefined = backend.decode;
      if (!decode) throw new Error("the backend has no decode support");
      const total = 150;
      const weights = ctx.randomLayer(shape, 53);
      const x = uniform(prng(54), total * shape.dim, 1);
      const want = await createReferenceKernels().runLayer(x, 1, total, weights, shape);
      const prepared = await backend.prepareLayer(`families/decode/${label}/${caseName}`, () => weights, shape);
      const got = await runLayerInSteps(backend, decode, prepared, shape, x, [100, ...Array.from({ length: 20 }, () => 1), 30]);
      const err = ctx.scaledError(got, want);
      ctx.record(name, err <= tolerance && err > 0, `scaled error ${err.toExponential(2)} against one full causal pass (bound ${tolerance}; steps 100, 20 x 1, 30)`);
    });
  }
}

/** The head with Gemma 2's logit soft cap (3, where these logits reach about 10): logits and log p against the reference. */
export async function checkFamilyHead(ctx: FamilyCheckContext): Promise<void> {
  const { backend, label, tolerance } = ctx;
  const name = `${label} family head: logits soft-capped at 3`;
  await ctx.guarded(name, async () => {
    const reference = createReferenceKernels();
    const r = prng(55);
    const [dim, vocab, rows] = [256, 1000, 40];
    const x = uniform(r, rows * dim, 1);
    const head = { finalNorm: uniform(r, dim, 0.2, 1), classifier: uniform(r, vocab * dim, 0.5), logitSoftcap: 3 };
    const all = Int32Array.from({ length: rows }, (_, i) => i);
    const targets = Int32Array.from(all, (i) => (i * 131) % vocab);
    const wantLogits = await reference.runHead(x, rows, head, vocab, 1e-6);
    const uncapped = await reference.runHead(x, rows, { finalNorm: head.finalNorm, classifier: head.classifier }, vocab, 1e-6);
    const wantNll = await reference.runHead(x, rows, head, vocab, 1e-6, targets);
    const states = await backend.upload(x, rows, dim);
    const prepared = await backend.prepareHead(`families/${label}/head`, () => head, vocab);
    const logits = await backend.runHead(states, all, prepared, 1e-6);
    const nll = await backend.runHead(states, all, prepared, 1e-6, targets);
    backend.release(states);
    if (logits.kind !== "logits" || wantLogits.kind !== "logits" || uncapped.kind !== "logits" || nll.kind !== "nll" || wantNll.kind !== "nll") throw new Error("wrong head result kinds");
    const errLogits = ctx.scaledError(logits.logits, wantLogits.logits);
    const logp = (n: { logSumExp: Float32Array; targetLogit: Float32Array }): Float64Array => Float64Array.from(n.logSumExp, (l, i) => n.targetLogit[i]! - l);
    const errNll = ctx.scaledError(logp(nll), logp(wantNll));
    const effect = ctx.scaledError(uncapped.logits, wantLogits.logits);
    ctx.record(name, errLogits <= tolerance && errNll <= tolerance && effect > 2 * tolerance,
      `logits scaled error ${errLogits.toExponential(2)}, log p ${errNll.toExponential(2)} (bound ${tolerance}); the cap moves the logits by ${effect.toExponential(2)}`);
  });
}

/**
 * The tiny transformers checkpoints (test/fixtures/hf-attn: Gemma 2 with both caps and window 5,
 * Gemma 3 with q/k norms and per-type RoPE, Phi-3 with LongRoPE) end to end: perplexity and Block
 * Influence over windows of 30 tokens against the reference backend; with fp32, also greedy
 * generation through the device's key/value cache against the in-memory reference model, token
 * for token (bf16 may flip a near-tie of these random weights, so its decoding is bounded by
 * checkFamilyDecode instead).
 */
/** A checkpoint's perplexity and Block Influence on `backend` against the reference backend: relative NLL and largest relative BI differences. */
export async function compareOnModel(opened: OpenedModel, windows: readonly PerplexityWindow[], reference: DecoderBackend, backend: DecoderBackend) {
  const wantPpl = await streamingPerplexity(opened, windows, { backend: reference });
  const gotPpl = await streamingPerplexity(opened, windows, { backend });
  const errPpl = Math.abs(gotPpl.nll - wantPpl.nll) / wantPpl.nll;
  const wantBi = await streamingBlockInfluence(opened, windows, { backend: reference });
  const gotBi = await streamingBlockInfluence(opened, windows, { backend });
  const errBi = Math.max(...gotBi.layers.map((l, i) => Math.abs(l.bi - wantBi.layers[i]!.bi) / Math.max(wantBi.layers[i]!.bi, 1e-3)));
  return { errPpl, errBi, gotPpl, wantPpl };
}

export async function checkFamilyFixtures(ctx: FamilyCheckContext): Promise<void> {
  const { backend, label, tolerance } = ctx;
  const reference = createReferenceBackend();
  const documents = [Array.from({ length: 130 }, (_, i) => 3 + ((i * 37 + 11) % 90))];
  const windows = [0, 30, 60, 90].map((begin) => ({ document: 0, begin, tokens: documents[0]!.slice(begin, begin + 30), firstTarget: 1 }));
  for (const family of ["gemma2", "gemma3", "phi3"]) {
    const path = join(repoRoot(), "test", "fixtures", "hf-attn", family);
    const name = `${label} family checkpoint ${family}`;
    await ctx.guarded(name, async () => {
      const opened = openModel(path);
      try {
        const { errPpl, errBi, gotPpl, wantPpl } = await compareOnModel(opened, windows, reference, backend);
        ctx.record(`${name}: perplexity and BI`, errPpl <= tolerance && errBi <= tolerance * 10,
          `nll relative difference ${errPpl.toExponential(2)} (bound ${tolerance}; ppl ${gotPpl.perplexity.toFixed(5)} vs ${wantPpl.perplexity.toFixed(5)}, ${gotPpl.tokens} tokens); max relative BI difference ${errBi.toExponential(2)} (bound ${tolerance * 10})`);
        if (label !== "fp32") return;
        if (!backend.decode) throw new Error("the backend has no decode support");
        const prompt = documents[0]!.slice(0, 9);
        const want = generate(loadModel(path).model, prompt, { maxTokens: 16, temperature: 0, seed: 0 });
        const got = await generateOnBackend(opened, backend as CudaBackend & { decode: DecodeSupport }, prompt, { maxTokens: 16, temperature: 0, seed: 0 });
        ctx.record(`${name}: greedy generation with the device's key/value cache`, got.join() === want.join(), `${got.join() === want.join() ? "identical" : `differs: ${got.join(" ")} vs ${want.join(" ")}`} (9-token prompt, 16 new tokens, past the window of 5)`);
      } finally {
        opened.close();
      }
    });
  }
}

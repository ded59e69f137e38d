// The device check's recurrent cases (issue #15: every family on every backend), run by
// deviceCheck.ts on a GPU: Mamba, Mamba-2, RWKV-4, RWKV-6 and RWKV-7 layers of random weights over several windows
// against the float64 reference layers (RWKV-7 as a first block, starting v_first on the device,
// and as a later one reading it), and the tiny Mamba, Mamba-2, RWKV-4 (transformers) and RWKV-6 (GGUF) checkpoints of
// test/fixtures end to end (the gpu bundle carries them). The bounds are deviceCheck's, on the
// stream and on the layer's update alone (a Mamba block changes the stream little).

import { join } from "node:path";
import type { DecoderBackend, HiddenStates, LayerShape, LayerWeightName, LayerWeightsF32, SideStreams } from "../../src/backend/backend.js";
import { layerWeightDims } from "../../src/backend/backend.js";
import { createReferenceBackend, createReferenceKernels } from "../../src/backend/referenceBackend.js";
import { openModel } from "../../src/load.js";
import { repoRoot } from "../../src/shared.js";
import { compareOnModel, type FamilyCheckContext } from "./familyChecks.js";
import { prng, uniform } from "./randomModel.js";

const COMMON = { nHeads: 1, nKvHeads: 1, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };
/** Mamba-130m's mixer proportions at a quarter of its width (d_state 16, conv 4). */
const MAMBA: LayerShape = { ...COMMON, kind: "mamba", mamba: { dInner: 384, dState: 16, dtRank: 12, convKernel: 4, convBias: true }, dim: 192, hiddenDim: 384 };
/** Mamba-2's released proportions (head 64, d_state 128) at a small width: 2 groups, the gated norm per group. */
const MAMBA2: LayerShape = {
  ...COMMON, kind: "mamba2", dim: 192, hiddenDim: 384,
  mamba2: { dInner: 384, dState: 128, nHeads: 6, headDim: 64, nGroups: 2, convKernel: 4, convBias: true, normGroupSize: 192, dtMin: 0, dtMax: Infinity },
};
const RWKV4: LayerShape = { ...COMMON, kind: "rwkv4", rwkvAttDim: 256, dim: 256, hiddenDim: 1024 };
/** Four heads of llama.cpp's 64; RWKV-6 1.6B's LoRA widths (32 and 64). */
const RWKV6: LayerShape = { ...COMMON, kind: "rwkv6", rwkv6: { headSize: 64, mixExtraDim: 32, decayExtraDim: 64 }, dim: 256, nHeads: 4, hiddenDim: 896 };
/** Four heads of llama.cpp's 64, RWKV-7 0.1B's LoRA ranks. */
const RWKV7: LayerShape = { ...COMMON, kind: "rwkv7", rwkv7: { headSize: 64, decayRank: 64, iclrRank: 64, valueRank: 32, gateRank: 128 }, dim: 256, nHeads: 4, hiddenDim: 1024 };

/** Random weights: matrices uniform within 1/sqrt(fan-in), norms near 1, the rest within 0.5 (as test/recurrentBatched.test.ts). */
function randomRecurrentLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const rand = prng(seed);
  const weights: Partial<LayerWeightsF32> = {};
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) {
    const n = dims.reduce((a, b) => a * b, 1);
    const norm = name === "attnNorm" || name === "ffnNorm";
    weights[name] = uniform(rand, n, norm ? 0.1 : dims.length === 2 && name !== "mambaALog" ? 1 / Math.sqrt(dims[1]!) : 0.5, norm ? 1 : 0);
  }
  return weights as LayerWeightsF32;
}

/** Scaled errors of the stream after the layer and of the layer's update (out - x). */
function errors(ctx: FamilyCheckContext, x: Float32Array, got: ArrayLike<number>, want: ArrayLike<number>): { stream: number; update: number } {
  const update = (y: ArrayLike<number>): Float64Array => Float64Array.from(x, (v, i) => y[i]! - v);
  return { stream: ctx.scaledError(got, want), update: ctx.scaledError(update(got), update(want)) };
}

/** Reference outputs by case, computed once for both precisions. */
const referenceOutputs = new Map<string, Float32Array[]>();
async function referenceFor(key: string, compute: () => Promise<Float32Array[]>): Promise<Float32Array[]> {
  const have = referenceOutputs.get(key);
  if (have) return have;
  const outputs = await compute();
  referenceOutputs.set(key, outputs);
  return outputs;
}

async function runOn(backend: DecoderBackend, states: HiddenStates, key: string, weights: LayerWeightsF32, shape: LayerShape, nWindows: number, seqLen: number): Promise<HiddenStates> {
  return backend.runLayer(states, nWindows, seqLen, await backend.prepareLayer(key, () => weights, shape), shape);
}

/** Each kind's layer against the float64 reference; RWKV-7 through two blocks (v_first started, then read). */
export async function checkRecurrentLayers(ctx: FamilyCheckContext): Promise<void> {
  const { backend, label, tolerance } = ctx;
  const reference = createReferenceKernels();
  const [nWindows, seqLen] = [3, 160];
  for (const [kind, shape] of [["mamba", MAMBA], ["mamba2", MAMBA2], ["rwkv4", RWKV4], ["rwkv6", RWKV6]] as const) {
    const name = `${label} recurrent layer: ${kind} (dim ${shape.dim}, ${nWindows} windows of ${seqLen})`;
    await ctx.guarded(name, async () => {
      const weights = randomRecurrentLayer(shape, 61);
      const x = uniform(prng(62), nWindows * seqLen * shape.dim, 1);
      const [want] = await referenceFor(kind, async () => [await reference.runLayer(x, nWindows, seqLen, weights, shape)]);
      const states = await backend.upload(x, nWindows * seqLen, shape.dim);
      const out = await runOn(backend, states, `recurrent/${label}/${kind}`, weights, shape, nWindows, seqLen);
      const err = errors(ctx, x, await backend.readRows(out), want!);
      backend.release(states);
      backend.release(out);
      ctx.record(name, err.stream <= tolerance && err.stream > 0 && err.update <= tolerance, `scaled error ${err.stream.toExponential(2)}, of the update ${err.update.toExponential(2)} (bound ${tolerance})`);
    });
  }
  const name = `${label} recurrent layers: rwkv7 first block (v_first started on the device) and a later one (v_first read), dim ${RWKV7.dim}, ${nWindows} windows of ${seqLen}`;
  await ctx.guarded(name, async () => {
    const [first, second] = [randomRecurrentLayer(RWKV7, 63), randomRecurrentLayer(RWKV7, 64)];
    const x = uniform(prng(65), nWindows * seqLen * RWKV7.dim, 1);
    const [wantFirst, wantSecond, withoutVFirst] = await referenceFor("rwkv7", async () => {
      const side: SideStreams = {};
      const afterFirst = await reference.runLayer(x, nWindows, seqLen, first, RWKV7, undefined, side);
      return [afterFirst, await reference.runLayer(afterFirst, nWindows, seqLen, second, RWKV7, undefined, side), await reference.runLayer(afterFirst, nWindows, seqLen, second, RWKV7, undefined, {})];
    });
    const states = await backend.upload(x, nWindows * seqLen, RWKV7.dim);
    const afterFirst = await runOn(backend, states, `recurrent/${label}/rwkv7 first`, first, RWKV7, nWindows, seqLen);
    const afterSecond = await runOn(backend, afterFirst, `recurrent/${label}/rwkv7 second`, second, RWKV7, nWindows, seqLen);
    const errFirst = errors(ctx, x, await backend.readRows(afterFirst), wantFirst!);
    const errSecond = ctx.scaledError(await backend.readRows(afterSecond), wantSecond!);
    for (const s of [states, afterFirst, afterSecond]) backend.release(s);
    const effect = ctx.scaledError(withoutVFirst!, wantSecond!);
    ctx.record(name, errFirst.stream <= tolerance && errFirst.stream > 0 && errFirst.update <= tolerance && errSecond <= tolerance && effect > 2 * tolerance,
      `first block scaled error ${errFirst.stream.toExponential(2)} (update ${errFirst.update.toExponential(2)}), second ${errSecond.toExponential(2)} (bound ${tolerance}); v_first moves the second block's output by ${effect.toExponential(2)}`);
  });
}

/** The tiny Mamba, Mamba-2, RWKV-4 and RWKV-6 checkpoints: perplexity and Block Influence against the reference backend. */
export async function checkRecurrentFixtures(ctx: FamilyCheckContext): Promise<void> {
  const { backend, label, tolerance } = ctx;
  const reference = createReferenceBackend();
  const document = Array.from({ length: 130 }, (_, i) => 3 + ((i * 37 + 11) % 60));
  const windows = [0, 30, 60, 90].map((begin) => ({ document: 0, begin, tokens: document.slice(begin, begin + 30), firstTarget: 1 }));
  for (const fixture of ["mamba_tiny", "mamba2_tiny", "rwkv4_tiny", "rwkv6_tiny.gguf"]) {
    const name = `${label} recurrent checkpoint ${fixture}: perplexity and BI`;
    await ctx.guarded(name, async () => {
      const opened = openModel(join(repoRoot(), "test", "fixtures", fixture));
      try {
        const { errPpl, errBi, gotPpl, wantPpl } = await compareOnModel(opened, windows, reference, backend);
        ctx.record(name, errPpl <= tolerance && errBi <= tolerance * 10,
          `nll relative difference ${errPpl.toExponential(2)} (bound ${tolerance}; ppl ${gotPpl.perplexity.toFixed(5)} vs ${wantPpl.perplexity.toFixed(5)}); max relative BI difference ${errBi.toExponential(2)} (bound ${tolerance * 10})`);
      } finally {
        opened.close();
      }
    });
  }
}

// RWKV-6 ("Finch") as llama.cpp's GGUF architecture "rwkv6": a tiny random-weight file written by
// gguf-py (test/oracle/rwkv6_gguf_fixture.py, committed as test/fixtures/rwkv6_tiny.gguf) and
// llama.cpp itself (node-llama-cpp, CPU, F32 cache) as the oracle for what it means: next-token
// probabilities, greedy decoding with the state carried token by token, the rescale_every_n_layers
// halving, and files pruned by the CLI (block 0 too: token_embd_norm stays). Block Influence
// streams through every CPU backend and equals the in-memory model's hooked residual stream.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { getLlama, type Llama, type Token } from "node-llama-cpp";
import { assertAttentionLayer, type DecoderBackend } from "../src/backend/backend.js";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { CheckpointError, UnsupportedError } from "../src/errors.js";
import { generate } from "../src/eval/generate.js";
import { perplexity } from "../src/eval/perplexity.js";
import { GGML_TYPE_BY_NAME, GgufValueType, readGguf, readGgufTensorBytes } from "../src/formats/gguf.js";
import { loadModel, openModel } from "../src/load.js";
import { layerShape, streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { encodeF32, type WritableDtype } from "../src/tensor/encode.js";
import { MODEL_BIN, rewriteGguf, runCli, scaledError, tempDir, TINYSTORIES } from "./helpers.js";

const FIXTURE = join(repoRoot(), "test", "fixtures", "rwkv6_tiny.gguf");
const IDS = [1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19, 6];
let llama: Llama;

before(async () => {
  llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
});

after(async () => {
  await llama.dispose();
});

/** Runs `use` on a fresh llama.cpp context of the file (CPU, F32 cache, no flash attention). */
async function withLlamaCpp<T>(path: string, use: (evaluate: (items: (number | [number, boolean])[]) => Promise<(Map<number, number> | number | undefined)[]>) => Promise<T>): Promise<T> {
  const model = await llama.loadModel({ modelPath: path });
  // One thread: llama.cpp's spinning worker threads crawl on a busy shared machine (seconds per token).
  const context = await model.createContext({ contextSize: 256, threads: 1, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
  const sequence = context.getSequence();
  try {
    // [id, true] asks for the next-token probabilities after id, [id, false] for the greedy token.
    return await use(async (items) => {
      const results = await sequence.controlledEvaluate(items.map((item) => typeof item === "number" ? item as Token
        : [item[0] as Token, { generateNext: item[1] ? { probabilities: true } : { token: true, options: { temperature: 0 } } }]));
      return results.map((r) => r?.next?.probabilities ?? r?.next?.token ?? undefined);
    });
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** llama.cpp's next-token distribution after every position, as (positions, vocab) rows. */
async function llamaCppProbabilities(path: string, ids: number[], vocab: number): Promise<Float64Array> {
  const rows = await withLlamaCpp(path, (evaluate) => evaluate(ids.map((id) => [id, true])));
  const out = new Float64Array(ids.length * vocab);
  rows.forEach((row, pos) => {
    if (!(row instanceof Map)) throw new Error(`llama.cpp gave no probabilities at position ${pos}`);
    for (const [id, p] of row) out[pos * vocab + id] = p;
  });
  return out;
}

/** Softmax of every logits row, in float64. */
function probabilities(logits: Float64Array, vocab: number): Float64Array {
  const out = new Float64Array(logits.length);
  for (let off = 0; off < logits.length; off += vocab) {
    let max = -Infinity;
    for (let i = 0; i < vocab; i++) max = Math.max(max, logits[off + i]!);
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += out[off + i] = Math.exp(logits[off + i]! - max);
    for (let i = 0; i < vocab; i++) out[off + i]! /= sum;
  }
  return out;
}

/** Our next-token distribution for the file (the in-memory float64 reference model). */
function ourProbabilities(path: string, ids: number[], skip?: ReadonlySet<number>): Float64Array {
  const { model } = loadModel(path);
  return probabilities(model.forward(ids, skip ? { skip } : {}).logits, model.config.vocabSize);
}

/** The fixture with rwkv6.rescale_every_n_layers set to `every`. */
function withRescale(every: number): string {
  return rewriteGguf(FIXTURE, join(tempDir(), `rwkv6-rescale${every}.gguf`), (metadata) => {
    metadata.set("rwkv6.rescale_every_n_layers", { type: GgufValueType.UINT32, value: every });
  });
}

test("rwkv6 GGUF: the config comes from llama.cpp's metadata, the layers are of kind rwkv6, inspect shows them", () => {
  const opened = openModel(FIXTURE);
  try {
    assert.equal(opened.architecture, "rwkv6");
    const { config } = opened;
    assert.deepEqual([config.nLayers, config.dim, config.hiddenDim, config.vocabSize, config.nHeads, config.headDim], [3, 32, 64, 320, 2, 16]);
    assert.deepEqual(config.rwkv6, { headSize: 16, mixExtraDim: 8, decayExtraDim: 16 });
    assert.equal(config.normEps, Math.fround(1e-5));
    assert.equal(layerShape(config, 0).kind, "rwkv6");
    assert.equal(config.rwkvRescaleEvery, undefined);
  } finally {
    opened.close();
  }
  const json = join(tempDir(), "inspect.json");
  const run = runCli(["inspect", withRescale(3), "--json", json]);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /RWKV-6 +head size 16, token-shift LoRA 8, decay LoRA 16, stream halved every 3 layers/);
  const inspected = JSON.parse(readFileSync(json, "utf8")) as Record<string, unknown>;
  assert.deepEqual([inspected["architecture"], inspected["positions"], inspected["rescaleEveryNLayers"], inspected["parameters"]], ["rwkv6", "none", 3, 63552]);
});

test("rwkv6 GGUF: next-token probabilities over 17 positions match llama.cpp's within 1e-4 of their scale", async (t) => {
  const V = 320;
  const theirs = await llamaCppProbabilities(FIXTURE, IDS, V);
  const diff = scaledError(ourProbabilities(FIXTURE, IDS), theirs);
  t.diagnostic(`rwkv6: max |p_ours - p_llama.cpp| / max p = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `rwkv6: ${diff}`);
});

test("rwkv6 GGUF: rescale_every_n_layers halves the stream where llama.cpp does", async (t) => {
  const rescaled = withRescale(2);
  assert.equal(openModel(rescaled).config.rwkvRescaleEvery, 2);
  const theirs = await llamaCppProbabilities(rescaled, IDS, 320);
  const diff = scaledError(ourProbabilities(rescaled, IDS), theirs);
  t.diagnostic(`rwkv6 rescale_every 2: max |p_ours - p_llama.cpp| / max p = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `rescaled: ${diff}`);
  // The halving matters on this model: ignoring it would miss llama.cpp by far more.
  const unscaled = scaledError(ourProbabilities(FIXTURE, IDS), theirs);
  assert.ok(unscaled > 100 * diff && unscaled > 1e-3, `the halving changes the output: ${unscaled} vs ${diff}`);
});

test("rwkv6 GGUF: separate time_mix_lerp_{w,k,v,r,g} (older converters) mean the fused tensor, as in llama.cpp", async (t) => {
  const split = rewriteGguf(FIXTURE, join(tempDir(), "rwkv6-split.gguf"), (_metadata, tensors) => tensors.flatMap((tensor) => {
    const match = /^blk\.(\d+)\.time_mix_lerp_fused\.weight$/.exec(tensor.name);
    if (!match) return [tensor];
    const dim = tensor.dims[0]!;
    const bytes = tensor.bytes() as Uint8Array;
    return ["w", "k", "v", "r", "g"].map((branch, i) => ({
      name: `blk.${match[1]}.time_mix_lerp_${branch}.weight`, dims: [dim], type: tensor.type, byteLength: dim * 4, bytes: () => bytes.subarray(i * dim * 4, (i + 1) * dim * 4),
    }));
  }));
  const header = readGguf(split);
  assert.ok(header.tensors.some((tensor) => tensor.name === "blk.2.time_mix_lerp_g.weight") && !header.tensors.some((tensor) => tensor.name.includes("lerp_fused")));
  header.file.close();
  const ours = ourProbabilities(split, IDS);
  assert.equal(scaledError(ours, ourProbabilities(FIXTURE, IDS)), 0);
  const diff = scaledError(ours, await llamaCppProbabilities(split, IDS, 320));
  t.diagnostic(`rwkv6 separate lerps: max |p_ours - p_llama.cpp| / max p = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `separate lerps: ${diff}`);
});

test("rwkv6 GGUF: greedy generation carries the state token by token and equals llama.cpp's 20 tokens", async () => {
  const prompt = IDS.slice(0, 6);
  const n = 20;
  const theirs = await withLlamaCpp(FIXTURE, async (evaluate) => {
    const out: number[] = [];
    let next = (await evaluate(prompt.map((id, i) => (i === prompt.length - 1 ? [id, false] : id)))).at(-1);
    while (out.length < n) {
      if (typeof next !== "number") throw new Error("llama.cpp gave no token");
      out.push(next);
      if (out.length < n) next = (await evaluate([[next, false]]))[0];
    }
    return out;
  });
  const { model } = loadModel(FIXTURE);
  const ours = generate(model, prompt, { maxTokens: n, temperature: 0, seed: 0 });
  assert.deepEqual(ours, theirs);
  assert.ok(new Set(ours).size > 3, `a non-degenerate continuation: ${ours.join(" ")}`);
});

test("rwkv6 GGUF: Block Influence streams through every CPU backend and equals the in-memory model's hooked stream", async (t) => {
  // BI from the in-memory float64 model's hooks, computed here: 1 - mean over tokens of cos(x_in, x_out).
  const { model } = loadModel(FIXTURE);
  const want: number[] = [];
  model.forward(IDS, {
    logits: "none",
    hooks: {
      onLayer: (_layer, input, output, nTokens, dim) => {
        let sum = 0;
        for (let t = 0; t < nTokens; t++) {
          let dot = 0, a = 0, b = 0;
          for (let i = 0; i < dim; i++) {
            const x = input[t * dim + i]!, y = output[t * dim + i]!;
            dot += x * y; a += x * x; b += y * y;
          }
          sum += dot / Math.sqrt(a * b);
        }
        want.push(1 - sum / nTokens);
      },
    },
  });
  assert.equal(want.length, 3);
  for (const bi of want) assert.ok(bi > 0 && bi < 2, `BI ${bi}`);
  const opened = openModel(FIXTURE);
  const backends: DecoderBackend[] = [createReferenceBackend(), await createOrtBackend({ threads: 1, flavor: "node" }), await createOrtBackend({ threads: 1, flavor: "web" })];
  try {
    for (const backend of backends) {
      // Two copies of the window in one batch: each must start from a zero state.
      const window = scoringWindows([IDS], { seqLen: IDS.length, stride: IDS.length })[0]!;
      const result = await streamingBlockInfluence(opened, [window, { ...window, document: 1 }], { backend });
      result.layers.forEach((l, i) => assert.ok(Math.abs(l.bi - want[i]!) < 1e-6, `${backend.name} layer ${i}: BI ${l.bi}, in-memory ${want[i]}`));
      t.diagnostic(`${backend.name}: BI ${result.layers.map((l) => l.bi.toFixed(6)).join(", ")}; max |diff| ${Math.max(...result.layers.map((l, i) => Math.abs(l.bi - want[i]!))).toExponential(2)}`);
    }
  } finally {
    for (const b of backends) await b.dispose();
    opened.close();
  }
});

test("rwkv6 GGUF: streaming perplexity on the onnx backend equals the in-memory model's; the cuda backend refuses the kind", async () => {
  const opened = openModel(FIXTURE);
  const backend = await createOrtBackend({ threads: 1, flavor: "node" });
  try {
    const doc = [...IDS, ...IDS.slice(1).reverse()];
    const windows = perplexityWindows([doc], { seqLen: 12, stride: 6 });
    const streamed = await streamingPerplexity(opened, windows, { backend });
    const inMemory = perplexity(loadModel(FIXTURE).model, windows);
    assert.ok(Math.abs(streamed.perplexity - inMemory.perplexity) < 1e-4 * inMemory.perplexity, `${streamed.perplexity} vs ${inMemory.perplexity}`);
    assert.throws(() => assertAttentionLayer(layerShape(opened.config), "cuda"), (err: unknown) => err instanceof UnsupportedError && err.message.includes("rwkv6"));
  } finally {
    await backend.dispose();
    opened.close();
  }
});

for (const removed of [1, 0]) {
  test(`rwkv6 GGUF: prune --layers ${removed} writes a file llama.cpp loads and that equals the model without block ${removed}`, async (t) => {
    const pruned = join(tempDir(), `rwkv6-pruned${removed}.gguf`);
    const run = runCli(["prune", FIXTURE, "--out", pruned, "--layers", String(removed)]);
    assert.equal(run.status, 0, run.stderr);
    const header = readGguf(pruned);
    const names = header.tensors.map((tensor) => tensor.name);
    assert.equal(header.metadata.get("rwkv6.block_count")?.value, 2);
    header.file.close();
    // token_embd_norm is the embedding's, not block 0's: it stays when block 0 goes.
    assert.ok(names.includes("token_embd_norm.weight") && names.includes("token_embd_norm.bias"));
    assert.ok(!names.some((n) => n.startsWith("blk.2.")));
    const ours = ourProbabilities(pruned, IDS);
    assert.ok(scaledError(ours, ourProbabilities(FIXTURE, IDS, new Set([removed]))) < 1e-6, "the pruned file is the model without that block");
    const diff = scaledError(ours, await llamaCppProbabilities(pruned, IDS, 320));
    t.diagnostic(`rwkv6 without block ${removed}: max |p_ours - p_llama.cpp| / max p = ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-4, `pruned ${removed}: ${diff}`);
  });
}

/**
 * The fixture as llama.cpp's converter would write it with rescale_every `every`: the metadata set,
 * and each block's time_mix_output and channel_mix_value divided by 2^floor(block / every).
 */
function asConvertedWithRescale(every: number, quantize?: string): string {
  return rewriteGguf(FIXTURE, join(tempDir(), `rwkv6-converted-rescale${every}.gguf`), (metadata, tensors) => {
    metadata.set("rwkv6.rescale_every_n_layers", { type: GgufValueType.UINT32, value: every });
    return tensors.map((tensor) => {
      const match = /^blk\.(\d+)\.(time_mix_output|channel_mix_value)\.weight$/.exec(tensor.name);
      if (!match) return tensor;
      const values = new Float32Array((tensor.bytes() as Uint8Array).slice().buffer).map((v) => v / 2 ** Math.floor(Number(match[1]) / every));
      const bytes = quantize === undefined ? new Uint8Array(values.buffer) : encodeF32(values, quantize as WritableDtype);
      return { ...tensor, type: quantize === undefined ? tensor.type : GGML_TYPE_BY_NAME.get(quantize)!, byteLength: bytes.byteLength, bytes: () => bytes };
    });
  });
}

for (const removed of [0, 1]) {
  test(`rwkv6 GGUF with rescale_every_n_layers 2: prune --layers ${removed} rescales the kept output weights; llama.cpp agrees, and so does the unscaled model pruned`, async (t) => {
    const rescaled = asConvertedWithRescale(2);
    // The converter's scaling is a change of the stream's scale only (LayerNorm's eps aside).
    const unscaledClose = scaledError(ourProbabilities(rescaled, IDS), ourProbabilities(FIXTURE, IDS));
    assert.ok(unscaledClose < 1e-4, `the rescaled file means the fixture's model: ${unscaledClose}`);
    const dir = tempDir();
    const pruned = join(dir, "pruned.gguf");
    const run = runCli(["prune", rescaled, "--out", pruned, "--layers", String(removed)]);
    assert.equal(run.status, 0, run.stderr);
    // Old block 2 becomes block 1: from 2^-1 to 2^0 of the unscaled weights, so doubled exactly in
    // the file, and read (unscaled) as the same weights.
    const before = openModel(rescaled);
    const after = openModel(pruned);
    const stored = (path: string, name: string): Float32Array => {
      const gguf = readGguf(path);
      const bytes = readGgufTensorBytes(gguf, gguf.tensors.find((t) => t.name === name)!);
      return new Float32Array(bytes.slice().buffer);
    };
    for (const name of ["time_mix_output", "channel_mix_value"]) {
      assert.deepEqual(stored(pruned, `blk.1.${name}.weight`), stored(rescaled, `blk.2.${name}.weight`).map((v) => v * 2));
      assert.deepEqual(after.provider.readF32(`blk.1.${name}.weight`), before.provider.readF32(`blk.2.${name}.weight`));
    }
    // Skipping the block in memory is the model of the pruned file (the unscaled weights either way).
    const skipped = loadModel(rescaled).model.forward(IDS, { skip: new Set([removed]) }).logits;
    const skipVsPruned = scaledError(skipped, loadModel(pruned).model.forward(IDS).logits);
    t.diagnostic(`rescale 2, block ${removed} skipped vs pruned file: ${skipVsPruned.toExponential(2)}`);
    assert.ok(skipVsPruned < 1e-5, `skip vs prune: ${skipVsPruned}`);
    before.close();
    after.close();
    const plain = join(dir, "plain-pruned.gguf");
    assert.equal(runCli(["prune", FIXTURE, "--out", plain, "--layers", String(removed)]).status, 0);
    const ours = ourProbabilities(pruned, IDS);
    const vsUnscaled = scaledError(ours, ourProbabilities(plain, IDS));
    const vsLlamaCpp = scaledError(ours, await llamaCppProbabilities(pruned, IDS, 320));
    t.diagnostic(`rescale 2, without block ${removed}: vs the unscaled model pruned ${vsUnscaled.toExponential(2)}, vs llama.cpp ${vsLlamaCpp.toExponential(2)} (the unpruned files differ by ${unscaledClose.toExponential(2)})`);
    assert.ok(vsUnscaled < 1e-4, `pruned rescaled vs pruned unscaled: ${vsUnscaled}`);
    assert.ok(vsLlamaCpp < 1e-4, `pruned rescaled vs llama.cpp: ${vsLlamaCpp}`);
  });
}

test("rwkv6 GGUF with rescale_every_n_layers: a quantized output weight that would need rescaling is refused, naming the tensor", () => {
  const run = runCli(["prune", asConvertedWithRescale(2, "Q8_0"), "--out", join(tempDir(), "out.gguf"), "--layers", "0"]);
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /tensor blk\.2\.time_mix_output\.weight is Q8_0; renumbering its block under rwkv6\.rescale_every_n_layers needs it multiplied by 2\^1/);
});

test("rwkv6 GGUF: bad files are refused with typed errors naming the metadata key or tensor", () => {
  const dir = tempDir();
  const noHeadSize = rewriteGguf(FIXTURE, join(dir, "no-head-size.gguf"), (metadata) => { metadata.delete("rwkv6.wkv.head_size"); });
  assert.throws(() => openModel(noHeadSize), (err: unknown) => err instanceof CheckpointError && err.message.includes("rwkv6.wkv.head_size is missing"));
  const oddHead = rewriteGguf(FIXTURE, join(dir, "odd-head.gguf"), (metadata) => { metadata.set("rwkv6.wkv.head_size", { type: GgufValueType.UINT32, value: 12 }); });
  assert.throws(() => openModel(oddHead), (err: unknown) => err instanceof CheckpointError && err.message.includes("does not divide the embedding length 32"));
  const noNorm = rewriteGguf(FIXTURE, join(dir, "no-norm.gguf"), (_metadata, tensors) => tensors.filter((tensor) => tensor.name !== "token_embd_norm.bias"));
  assert.throws(() => loadModel(noNorm), (err: unknown) => err instanceof CheckpointError && err.message.includes("token_embd_norm.bias is missing"));
  const convert = runCli(["convert", FIXTURE, "--to", "gguf", join(dir, "converted.gguf")]);
  assert.notEqual(convert.status, 0);
  assert.match(convert.stderr, /converting an RWKV-6 model is not supported yet/);
  // Channel mixing's value projection is gated before the residual add: no linear map folds into it.
  const heal = runCli(["prune", FIXTURE, "--out", join(dir, "healed.gguf"), "--layers", "1", "--heal", "linear", "--data", TINYSTORIES, "--seq-len", "16", "--max-tokens", "64"]);
  assert.notEqual(heal.status, 0);
  assert.match(heal.stderr, /--heal linear folds the map into an MLP down projection, which a recurrent block/);
});

test("rwkv6 GGUF: the CLI scores its Block Influence on text and the side-by-side report shows it beside a Transformer", () => {
  const dir = tempDir();
  const files = [[MODEL_BIN, "llama.json"], [FIXTURE, "rwkv6.json"]].map(([model, name]) => {
    const file = join(dir, name!);
    const run = runCli(["score", model!, "--data", TINYSTORIES, "--metric", "bi", "--seq-len", "32", "--max-tokens", "128", "--backend", "reference", "--json", file]);
    assert.equal(run.status, 0, run.stderr);
    return file;
  });
  const rwkv6 = JSON.parse(readFileSync(files[1]!, "utf8")) as { layers: { layer: number; bi: number }[] };
  assert.equal(rwkv6.layers.length, 3);
  const report = join(dir, "report");
  const run = runCli(["side-by-side", ...files, "--report", report, "--json", join(dir, "out.json")]);
  assert.equal(run.status, 0, run.stderr);
  const html = readFileSync(join(report, "index.html"), "utf8");
  for (const l of rwkv6.layers) assert.ok(html.includes(l.bi.toFixed(5)), `rwkv6 layer ${l.layer}: ${l.bi.toFixed(5)} on the page`);
});

// RWKV-7 as llama.cpp's GGUF architecture rwkv7: a tiny random-weight file written by gguf-py
// (test/oracle/rwkv7_gguf_fixture.py, run here: at llama.cpp's head size of 64 the file is 1.7 MB,
// too large to commit); llama.cpp
// (node-llama-cpp, CPU, F32 cache) is the oracle for its meaning: next-token probabilities, a
// greedy continuation, and the files prune writes without block 1 and without block 0 (where the
// value residual then starts at the new first block, as the engine's side stream does).

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import { join } from "node:path";
import { getLlama, type Llama, type LlamaModel as NodeLlamaModel, type Token } from "node-llama-cpp";
import type { DecoderBackend, LayerWeightsF32, SideStreams } from "../src/backend/backend.js";
import { plainLinear } from "../src/backend/linearKernel.js";
import { createOrtBackend, createOrtKernels } from "../src/backend/ortBackend.js";
import { batchedRecurrentLayer, referenceRecurrentLayer, zeroRecurrentState } from "../src/backend/recurrentLayer.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { CheckpointError } from "../src/errors.js";
import { generate } from "../src/eval/generate.js";
import { perplexity } from "../src/eval/perplexity.js";
import { readGguf } from "../src/formats/gguf.js";
import { loadModel, openModel, type LoadedModel } from "../src/load.js";
import { loadLlamaLayer } from "../src/models/llama.js";
import { layerShape, streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { repoRoot, sharedDir } from "../src/shared.js";
import { gatherTensorRows, readTensorRows } from "../src/tensor/provider.js";
import { xorshiftFill } from "../src/util/random.js";
import { rewriteGguf, runCli, scaledError, tempDir, TOKENIZER } from "./helpers.js";
import { oraclePython } from "./oraclePython.js";

const FIXTURE = join(tempDir(), "rwkv7_tiny.gguf");
const IDS = [1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19];
let llama: Llama;

before(async () => {
  const script = join(repoRoot(), "test", "oracle", "rwkv7_gguf_fixture.py");
  const python = oraclePython();
  const run = spawnSync(python, [script, "--shared", sharedDir(), "--out", FIXTURE], { encoding: "utf8" });
  assert.equal(run.status, 0, `${python} ${script} failed: ${run.error?.message ?? run.stderr}`);
  llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
});

after(async () => {
  await llama.dispose();
});

async function withLlamaCpp<T>(path: string, use: (model: NodeLlamaModel, context: Awaited<ReturnType<NodeLlamaModel["createContext"]>>) => Promise<T>): Promise<T> {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({ contextSize: 256, threads: 1, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
  try {
    return await use(model, context);
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** llama.cpp's next-token probabilities after each position. */
function llamaCppProbabilities(path: string, ids: number[]): Promise<Map<number, number>[]> {
  return withLlamaCpp(path, async (_model, context) => {
    const results = await context.getSequence().controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { token: true, probabilities: true, options: { temperature: 0 } } }]));
    return results.map((r, pos) => {
      const probs = r?.next?.probabilities;
      if (!probs) throw new Error(`no probabilities at position ${pos}`);
      return probs;
    });
  });
}

/** llama.cpp's greedy continuation of the prompt: its argmax token after each step, fed back one at a time. */
function llamaCppGreedy(path: string, prompt: number[], n: number): Promise<number[]> {
  return withLlamaCpp(path, async (_model, context) => {
    const sequence = context.getSequence();
    const step = async (ids: number[]): Promise<number> => {
      const results = await sequence.controlledEvaluate(ids.map((id, i) => (i === ids.length - 1 ? [id as Token, { generateNext: { token: true, options: { temperature: 0 } } }] : (id as Token))));
      const token = results[ids.length - 1]?.next?.token;
      if (token === undefined || token === null) throw new Error("llama.cpp returned no next token");
      return token;
    };
    const out = [await step(prompt)];
    while (out.length < n) out.push(await step([out[out.length - 1]!]));
    return out;
  });
}

/** max over positions and tokens of |p_ours - p_llama.cpp|, and the largest probability (the scale). */
function probabilityDifference(loaded: LoadedModel, ids: number[], theirs: Map<number, number>[], skip?: ReadonlySet<number>): { diff: number; scale: number } {
  const { logits } = loaded.model.forward(ids, skip ? { skip } : {});
  const V = loaded.model.config.vocabSize;
  let diff = 0;
  let scale = 0;
  ids.forEach((_, pos) => {
    const row = logits.slice(pos * V, (pos + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += row[i] = Math.exp(row[i]! - max);
    for (let i = 0; i < V; i++) {
      const p = row[i]! / sum;
      scale = Math.max(scale, p);
      diff = Math.max(diff, Math.abs(p - (theirs[pos]!.get(i) ?? 0)));
    }
  });
  return { diff, scale };
}

test("rwkv7 GGUF: the config, layer kind and value-residual LoRA ranks come from llama.cpp's metadata", () => {
  const opened = openModel(FIXTURE);
  try {
    assert.equal(opened.architecture, "rwkv7");
    const shape = layerShape(opened.config);
    assert.equal(shape.kind, "rwkv7");
    assert.deepEqual(shape.rwkv7, { headSize: 64, decayRank: 16, iclrRank: 16, valueRank: 8, gateRank: 16 });
    assert.equal(opened.config.nLayers, 3);
    // Block 0's LoRA is stored with the iclr rank; the engine reads it (unused) with the value rank.
    assert.deepEqual(opened.provider.entries().find((e) => e.name === "blk.0.time_mix_v1.weight")?.shape, [8, 128]);
  } finally {
    opened.close();
  }
});

test("rwkv7 GGUF: embedding rows read alone are the rows of the whole normalized table", () => {
  const opened = openModel(FIXTURE);
  try {
    const provider = opened.provider;
    assert.ok(provider.readRowsF32, "the view reads rows alone");
    const name = opened.names.embedding;
    const whole = provider.readF32(name);
    const rows = Int32Array.from([5, 0, 5, opened.config.vocabSize - 1]);
    assert.deepEqual(readTensorRows(provider, name, rows), gatherTensorRows(whole, opened.config.vocabSize, rows, name, "memory"));
  } finally {
    opened.close();
  }
});

test("rwkv7 GGUF: next-token probabilities match llama.cpp's over 16 positions", async (t) => {
  const loaded = loadModel(FIXTURE);
  const { diff, scale } = probabilityDifference(loaded, IDS, await llamaCppProbabilities(FIXTURE, IDS));
  t.diagnostic(`rwkv7: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)} (largest probability ${scale.toFixed(3)})`);
  assert.ok(scale > 0.2, "the random model is peaked enough for the comparison to mean something");
  assert.ok(diff < 1e-4 * scale, `rwkv7: ${diff}`);
});

test("rwkv7 GGUF with BF16 matrices (as llama.cpp's converter writes them): the engine computes what llama.cpp computes from the same numbers in F32", async (t) => {
  // llama.cpp's BF16 kernels round their activations to bf16 too, so its exact twin is the F32 copy of the bf16 values.
  const script = join(repoRoot(), "test", "oracle", "rwkv7_gguf_fixture.py");
  const [bf16, asF32] = [join(tempDir(), "rwkv7_bf16.gguf"), join(tempDir(), "rwkv7_bf16_values_f32.gguf")];
  for (const [out, matrices] of [[bf16, "bf16"], [asF32, "bf16-values-as-f32"]]) {
    const run = spawnSync(oraclePython(), [script, "--shared", sharedDir(), "--out", out!, "--matrices", matrices!], { encoding: "utf8" });
    assert.equal(run.status, 0, run.stderr);
  }
  const header = readGguf(bf16);
  const typeOf = (name: string): string | undefined => header.tensors.find((x) => x.name === name)?.type.name;
  assert.deepEqual([typeOf("blk.1.time_mix_key.weight"), typeOf("blk.1.time_mix_g1.weight"), typeOf("blk.1.time_mix_w1.weight"), typeOf("blk.1.time_mix_lerp_fused.weight")], ["BF16", "BF16", "F32", "F32"]);
  header.file.close();
  const { diff, scale } = probabilityDifference(loadModel(bf16), IDS, await llamaCppProbabilities(asF32, IDS));
  t.diagnostic(`rwkv7 BF16: max |p_ours - p_llama.cpp on the F32 copy| = ${diff.toExponential(2)} (largest probability ${scale.toFixed(3)})`);
  assert.ok(scale > 0.2 && diff < 1e-4 * scale, `rwkv7 BF16: ${diff}`);
});

test("rwkv7 GGUF: greedy generation carries the state and equals llama.cpp's 20 tokens", async () => {
  const prompt = IDS.slice(0, 6);
  const ours = generate(loadModel(FIXTURE).model, prompt, { maxTokens: 20, temperature: 0, seed: 0 });
  assert.deepEqual(ours, await llamaCppGreedy(FIXTURE, prompt, 20));
});

test("rwkv7 GGUF: Block Influence streams through every CPU backend, equal to the in-memory model's hooked blocks, with and without block 0", async () => {
  const { model } = loadModel(FIXTURE);
  const opened = openModel(FIXTURE);
  const backends: DecoderBackend[] = [createReferenceBackend(), await createOrtBackend({ threads: 1, flavor: "node" }), await createOrtBackend({ threads: 1, flavor: "web" })];
  const other = [...IDS].reverse();
  try {
    for (const skip of [new Set<number>(), new Set([0])]) {
      // The in-memory model, window by window: 1 - mean cosine of each block's input and output.
      const cosines = new Map<number, number[]>();
      for (const ids of [IDS, other]) {
        model.forward(ids, {
          skip, logits: "none",
          hooks: {
            onLayer: (layer, input, output, nTokens, dim) => {
              for (let t = 0; t < nTokens; t++) {
                let dot = 0, na = 0, nb = 0;
                for (let i = 0; i < dim; i++) {
                  const a = input[t * dim + i]!, b = output[t * dim + i]!;
                  dot += a * b; na += a * a; nb += b * b;
                }
                (cosines.get(layer) ?? cosines.set(layer, []).get(layer)!).push(dot / Math.sqrt(na * nb));
              }
            },
          },
        });
      }
      const want = [...cosines].map(([layer, c]) => [layer, 1 - c.reduce((a, b) => a + b, 0) / c.length] as const);
      for (const backend of backends) {
        // Two different windows in one batch: each starts from a zero state and its own value residual.
        const windows = [...scoringWindows([IDS], { seqLen: IDS.length, stride: IDS.length }), ...scoringWindows([other], { seqLen: other.length, stride: other.length }).map((w) => ({ ...w, document: 1 }))];
        const result = await streamingBlockInfluence(opened, windows, { backend, skip });
        for (const [layer, bi] of want) {
          const got = result.layers.find((l) => l.layer === layer)!.bi;
          assert.ok(bi > 0 && Math.abs(got - bi) < 1e-6, `${backend.name} skip ${[...skip]} layer ${layer}: BI ${got}, in-memory ${bi}`);
        }
      }
    }
  } finally {
    for (const b of backends) await b.dispose();
    opened.close();
  }
});

test("rwkv7 GGUF: the batched layer (plain GEMM twin, onnxruntime's Gemm) equals the reference run one token at a time, as the first block and as later ones reading v_first", async (t) => {
  const opened = openModel(FIXTURE);
  // Runs of 8 rows split the GEMMs across the windows' boundary.
  const onnx = await createOrtKernels({ threads: 1, flavor: "node", maxRowsPerRun: 8 });
  const [nWindows, seqLen] = [2, 12];
  try {
    for (let layer = 0; layer < opened.config.nLayers; layer++) {
      const shape = layerShape(opened.config, layer);
      const weights = loadLlamaLayer(opened.provider, opened.config, opened.names, layer) as LayerWeightsF32;
      const x = xorshiftFill(nWindows * seqLen * shape.dim, 1, 40 + layer);
      // Block 0 starts the value residual; the later ones read one (random: what an earlier block left).
      const vFirst = layer === 0 ? undefined : Float64Array.from(xorshiftFill(x.length, 1, 60 + layer));
      // The per-token reference: each window from a zero state, one token per call, the state carried.
      const want = new Float64Array(x.length);
      const startedVFirst = new Float64Array(x.length);
      for (let b = 0; b < nWindows; b++) {
        const state = zeroRecurrentState(shape);
        for (let pos = 0; pos < seqLen; pos++) {
          const [from, to] = [(b * seqLen + pos) * shape.dim, (b * seqLen + pos + 1) * shape.dim];
          const row = Float64Array.from(x.subarray(from, to));
          const side: SideStreams = vFirst ? { rwkv7VFirst: vFirst.subarray(from, to) } : {};
          referenceRecurrentLayer(row, 1, weights, shape, state, side);
          for (let i = 0; i < row.length; i++) want[from + i] = row[i]! - x[from + i]!;
          if (!vFirst) startedVFirst.set(side.rwkv7VFirst!, from);
        }
      }
      for (const engine of ["plain", "onnx"] as const) {
        const side: SideStreams = vFirst ? { rwkv7VFirst: vFirst } : {};
        const runsBefore = onnx.stats.sessionRuns;
        const out = engine === "plain" ? await batchedRecurrentLayer(x, nWindows, seqLen, weights, shape, plainLinear, side) : await onnx.runLayer(x, nWindows, seqLen, weights, shape, undefined, side);
        if (engine === "onnx") assert.equal(onnx.stats.sessionRuns - runsBefore, (vFirst ? 14 : 12) * Math.ceil((nWindows * seqLen) / 8), `layer ${layer}: every projection ran in onnxruntime`);
        const err = scaledError(Float64Array.from(out, (v, i) => v - x[i]!), want);
        t.diagnostic(`rwkv7 layer ${layer} batched (${engine}) vs per-token reference: ${err.toExponential(2)} of the update's scale`);
        assert.ok(err < 5e-6, `layer ${layer} ${engine}: update off by ${err} of its scale`);
        if (vFirst) assert.equal(side.rwkv7VFirst, vFirst, "a later block reads v_first and leaves it");
        else assert.ok(scaledError(side.rwkv7VFirst!, startedVFirst) < 1e-6, `layer 0 ${engine}: the v_first it starts`);
      }
    }
  } finally {
    await onnx.dispose();
    opened.close();
  }
});

test("rwkv7 GGUF: streaming perplexity on the onnx backend equals the in-memory model's", async () => {
  const opened = openModel(FIXTURE);
  const backend = await createOrtBackend({ threads: 1, flavor: "node" });
  try {
    const doc = [...IDS, ...IDS.slice(1).reverse()];
    const windows = perplexityWindows([doc], { seqLen: 12, stride: 6 });
    const streamed = await streamingPerplexity(opened, windows, { backend, skip: new Set([0]) });
    const inMemory = perplexity(loadModel(FIXTURE).model, windows, { skip: new Set([0]) });
    assert.ok(Math.abs(streamed.perplexity - inMemory.perplexity) < 1e-5 * inMemory.perplexity, `${streamed.perplexity} vs ${inMemory.perplexity}`);
  } finally {
    await backend.dispose();
    opened.close();
  }
});

for (const removed of [1, 0]) {
  test(`rwkv7 GGUF: prune --layers ${removed} writes a file llama.cpp loads, equal to ours on it and to the original with block ${removed} skipped`, async (t) => {
    const pruned = join(tempDir(), `rwkv7-no${removed}.gguf`);
    const run = runCli(["prune", FIXTURE, "--out", pruned, "--layers", String(removed)]);
    assert.equal(run.status, 0, run.stderr);
    const header = readGguf(pruned);
    assert.equal(header.metadata.get("rwkv7.block_count")?.value, 2);
    // The new block 0 holds llama.cpp's iclr-rank placeholder LoRA.
    assert.deepEqual(header.tensors.find((x) => x.name === "blk.0.time_mix_v1.weight")?.dims, [128, 16]);
    assert.deepEqual(header.tensors.find((x) => x.name === "blk.1.time_mix_v1.weight")?.dims, [128, 8]);
    header.file.close();
    const prunedModel = loadModel(pruned);
    assert.equal(prunedModel.model.config.nLayers, 2);
    const skipped = loadModel(FIXTURE).model.forward(IDS, { skip: new Set([removed]) }).logits;
    assert.ok(scaledError(prunedModel.model.forward(IDS).logits, skipped) < 1e-7, "the pruned file means the original with the block skipped");
    const { diff, scale } = probabilityDifference(prunedModel, IDS, await llamaCppProbabilities(pruned, IDS));
    t.diagnostic(`rwkv7 without block ${removed}: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)} (largest probability ${scale.toFixed(3)})`);
    assert.ok(diff < 1e-4 * scale, `pruned: ${diff}`);
  });
}

test("rwkv7 GGUF: bad input is refused with typed errors naming the key or tensor", () => {
  const dir = tempDir();
  const noHeadSize = rewriteGguf(FIXTURE, join(dir, "no-head-size.gguf"), (metadata) => { metadata.delete("rwkv7.wkv.head_size"); });
  assert.throws(() => openModel(noHeadSize), (err: unknown) => err instanceof CheckpointError && err.message.includes("rwkv7.wkv.head_size"));
  const noNorm = rewriteGguf(FIXTURE, join(dir, "no-norm.gguf"), (_metadata, tensors) => tensors.filter((x) => x.name !== "token_embd_norm.bias"));
  assert.throws(() => loadModel(noNorm), (err: unknown) => err instanceof CheckpointError && err.message.includes("token_embd_norm.bias"));
  const run = runCli(["convert", FIXTURE, "--to", "gguf", join(dir, "again.gguf"), "--tokenizer", TOKENIZER]);
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /converting an rwkv7 model is not supported yet/);
});

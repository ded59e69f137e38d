// Gemma 2, Gemma 3 (text) and Phi-3 as llama.cpp's gemma2, gemma3 and phi3 GGUF architectures.
// The tiny transformers checkpoints of test/fixtures/gguf-attn (test/oracle/gguf_attention_fixtures.py:
// shapes llama.cpp's graphs hold, a 512-token vocabulary) are converted by `shortgpt convert`;
// transformers' logits check the Hugging Face directory, the directory checks the GGUF file, and
// llama.cpp (node-llama-cpp, CPU, F32 KV cache, no flash attention) checks what the file means,
// before and after `shortgpt prune` removes a block.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Llama } from "node-llama-cpp";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { readGguf } from "../src/formats/gguf.js";
import { loadModel, openModel } from "../src/load.js";
import { LlamaModel } from "../src/models/llama.js";
import { streamingBlockInfluence } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { CheckpointError } from "../src/errors.js";
import { decodeGoldenFloats, rewriteGguf, runCli, scaledError, tempDir, TOKENIZER } from "./helpers.js";
import { cpuLlama, llamaCppProbabilities } from "./llamaCppOracle.js";

interface Golden {
  ids: number[];
  cases: { name: "gemma2" | "gemma3" | "phi3"; folder: string; config: Record<string, unknown>; logits: number[] }[];
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test/oracle/golden/gguf_attention_families.json"), "utf8"), decodeGoldenFloats) as Golden;
const fixture = (folder: string): string => join(repoRoot(), "test/fixtures/gguf-attn", folder);
const IDS = golden.ids;
let llama: Llama;

before(async () => {
  llama = await cpuLlama();
});

after(async () => {
  await llama.dispose();
});


/** max over positions and tokens of |softmax(logits) - llama.cpp's probability|. */
function maxProbabilityDifference(logits: Float64Array, vocab: number, theirs: Map<number, number>[]): number {
  let worst = 0;
  theirs.forEach((probs, pos) => {
    const row = logits.slice(pos * vocab, (pos + 1) * vocab);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (let i = 0; i < vocab; i++) sum += row[i] = Math.exp(row[i]! - max);
    for (let i = 0; i < vocab; i++) worst = Math.max(worst, Math.abs(row[i]! / sum - (probs.get(i) ?? 0)));
  });
  return worst;
}

/** The model with llama.cpp's CPU GELU (a float16 lookup table) in the reference kernels, for Gemma. */
function asLlamaCpp(model: LlamaModel): LlamaModel {
  return model.config.activation === "gelu_tanh" ? new LlamaModel({ ...model.config, activation: "gelu_tanh_f16" }, model.weights) : model;
}

async function blockInfluence(path: string): Promise<number[]> {
  const opened = openModel(path);
  try {
    const bi = await streamingBlockInfluence(opened, [{ document: 0, begin: 0, tokens: IDS }], { backend: createReferenceBackend() });
    return bi.layers.map((l) => l.bi);
  } finally {
    opened.close();
  }
}

for (const c of golden.cases) {
  test(`${c.name}: convert writes llama.cpp's ${c.name} GGUF; shortgpt and llama.cpp agree on it, before and after pruning a block`, async (t) => {
    const hfDir = fixture(c.folder);
    const fromHf = loadModel(hfDir).model;
    const hfLogits = fromHf.forward(IDS).logits;
    const vsTransformers = scaledError(hfLogits, c.logits);
    assert.ok(vsTransformers < 1e-4, `${c.name}: the Hugging Face directory differs from transformers by ${vsTransformers}`);

    const dir = tempDir();
    const gguf = join(dir, `${c.name}.gguf`);
    // The fixture has no tokenizer.json; stories260K's 512-token vocabulary stands in.
    const run = runCli(["convert", hfDir, "--to", "gguf", gguf, "--tokenizer", TOKENIZER]);
    assert.equal(run.status, 0, run.stderr);
    const header = readGguf(gguf);
    const meta = (key: string): unknown => header.metadata.get(key)?.value;
    const names = new Set(header.tensors.map((t) => t.name));
    assert.equal(meta("general.architecture"), c.name);
    if (c.name === "phi3") {
      assert.equal(meta("phi3.rope.scaling.original_context_length"), 512);
      assert.equal(meta("phi3.context_length"), 2048);
      assert.ok(names.has("rope_factors_long.weight") && names.has("rope_factors_short.weight") && names.has("blk.0.attn_qkv.weight"));
      // ffn_up holds gate then up: 2 * intermediate rows.
      assert.deepEqual(header.tensors.find((x) => x.name === "blk.0.ffn_up.weight")?.dims, [32, 96]);
    } else {
      assert.equal(meta(`${c.name}.attention.sliding_window`), 5);
      assert.ok(names.has("blk.0.post_attention_norm.weight") && names.has("blk.0.post_ffw_norm.weight"));
      assert.equal(names.has("blk.0.attn_q_norm.weight"), c.name === "gemma3");
      assert.ok(!names.has("output.weight"), "Gemma's classifier is the embedding");
    }
    header.file.close();

    const fromGguf = loadModel(gguf);
    assert.equal(fromGguf.architecture, c.name);
    const ggufLogits = fromGguf.model.forward(IDS).logits;
    // (Phi-3: the LongRoPE attention factor is stored as float32.)
    const sameModel = scaledError(ggufLogits, hfLogits);
    t.diagnostic(`${c.name}: GGUF vs Hugging Face logits, max diff / scale = ${sameModel.toExponential(2)}`);
    assert.ok(sameModel < 1e-6, `${c.name}: the GGUF means the same model (${sameModel})`);

    const [biHf, biGguf] = [await blockInfluence(hfDir), await blockInfluence(gguf)];
    const biDiff = Math.max(...biHf.map((b, i) => Math.abs(b - biGguf[i]!)));
    t.diagnostic(`${c.name}: BI ${biGguf.map((b) => b.toFixed(4)).join(" ")}; max |BI_gguf - BI_hf| = ${biDiff.toExponential(2)}`);
    assert.equal(biGguf.length, fromHf.config.nLayers);
    assert.ok(biDiff < 1e-6, `${c.name}: BI differs by ${biDiff}`);

    const theirs = await llamaCppProbabilities(llama, gguf, IDS);
    const diff = maxProbabilityDifference(ggufLogits, 512, theirs);
    const exact = maxProbabilityDifference(asLlamaCpp(fromGguf.model).forward(IDS).logits, 512, theirs);
    t.diagnostic(`${c.name}: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}; with llama.cpp's float16 GELU table ${exact.toExponential(2)}`);
    // llama.cpp's GELU table moves Gemma's probabilities by up to ~1e-3; with it in shortgpt's kernels the rest agrees.
    assert.ok(diff < (c.name === "phi3" ? 1e-4 : 2e-3), `${c.name}: ${diff}`);
    assert.ok(exact < 1e-4, `${c.name} with llama.cpp's GELU: ${exact}`);

    const pruned = join(dir, `${c.name}-pruned.gguf`);
    const prune = runCli(["prune", gguf, "--out", pruned, "--layers", "1"]);
    assert.equal(prune.status, 0, prune.stderr);
    const prunedModel = loadModel(pruned).model;
    assert.equal(prunedModel.config.nLayers, fromHf.config.nLayers - 1);
    const prunedLogits = prunedModel.forward(IDS).logits;
    const prunedTheirs = await llamaCppProbabilities(llama, pruned, IDS);
    const prunedDiff = maxProbabilityDifference(asLlamaCpp(prunedModel).forward(IDS).logits, 512, prunedTheirs);
    t.diagnostic(`${c.name} pruned of layer 1: max |p_ours - p_llama.cpp| = ${prunedDiff.toExponential(2)} (llama.cpp's GELU for Gemma)`);
    assert.ok(prunedDiff < 1e-4, `${c.name} pruned: ${prunedDiff}`);
    // The Hugging Face model with layer 1 skipped: each kept layer keeps its attention type.
    const skipped = fromHf.forward(IDS, { skip: new Set([1]) }).logits;
    if (c.name === "phi3") {
      assert.ok(scaledError(prunedLogits, skipped) < 1e-6, "phi3: the pruned file is the model without layer 1");
      assert.equal(prune.stdout.includes("cannot keep"), false);
    } else {
      // llama.cpp assigns sliding layers by position: the pruned file moves some kept layers to the
      // other type. shortgpt reads the file as llama.cpp runs it, not as the skipped model, and says so.
      assert.match(prune.stdout, /cannot keep every kept layer/);
      assert.match(prune.stdout, c.name === "gemma2" ? /layer 2 \(now 1\) was sliding_attention and becomes full_attention/ : /layer 5 \(now 4\) was full_attention and becomes sliding_attention/);
      const skippedDiff = maxProbabilityDifference(asLlamaCpp(fromHf).forward(IDS, { skip: new Set([1]) }).logits, 512, prunedTheirs);
      t.diagnostic(`${c.name}: llama.cpp on the pruned file vs the skipped Hugging Face model: ${skippedDiff.toExponential(2)}`);
      assert.ok(skippedDiff > 100 * prunedDiff, `${c.name}: the type change is visible (${skippedDiff} vs ${prunedDiff})`);
      const record = JSON.parse(readFileSync(`${pruned}.json`, "utf8")) as { changes: string[] };
      assert.equal(record.changes.length, c.name === "gemma2" ? 2 : 1);
    }
  });
}

test("convert refuses Gemma checkpoints that llama.cpp's GGUF architectures would run differently", () => {
  const hfAttn = (name: string): string => join(repoRoot(), "test/fixtures/hf-attn", name);
  // gemma2: query_pre_attn_scalar 6 with head_dim 8 (llama.cpp scales by 1/sqrt(head_dim)).
  const gemma2 = runCli(["convert", hfAttn("gemma2"), "--to", "gguf", join(tempDir(), "g2.gguf")]);
  assert.notEqual(gemma2.status, 0);
  assert.match(gemma2.stderr, /attention scale is .* but llama\.cpp uses 0\.35355/);
  // gemma3: layers 1 and 3 global, where llama.cpp's pattern makes every 6th layer global.
  const gemma3 = runCli(["convert", hfAttn("gemma3"), "--to", "gguf", join(tempDir(), "g3.gguf")]);
  assert.notEqual(gemma3.status, 0);
  assert.match(gemma3.stderr, /layer 1 is full_attention but llama\.cpp makes it sliding_attention/);
});

test("a phi3 GGUF with one LongRoPE factor tensor missing, or a fused tensor of the wrong height, is refused naming the tensor", () => {
  const dir = tempDir();
  const gguf = join(dir, "phi3.gguf");
  assert.equal(runCli(["convert", fixture("phi_3"), "--to", "gguf", gguf, "--tokenizer", TOKENIZER]).status, 0);
  const noLong = rewriteGguf(gguf, join(dir, "no-long.gguf"), (_meta, tensors) => tensors.filter((t) => t.name !== "rope_factors_long.weight"));
  assert.throws(() => openModel(noLong), (e: unknown) => e instanceof CheckpointError && /tensor rope_factors_long\.weight is missing/.test(e.message));
  // A file that says 4 KV heads where attn_qkv holds rows for 2.
  const wrongKv = rewriteGguf(gguf, join(dir, "wrong-kv.gguf"), (meta) => {
    meta.set("phi3.attention.head_count_kv", { ...meta.get("phi3.attention.head_count_kv")!, value: 4 } as never);
  });
  assert.throws(() => openModel(wrongKv), (e: unknown) => e instanceof CheckpointError && /tensor blk\.0\.attn_qkv\.weight has shape \[64, 32\], expected \[96, 32\]/.test(e.message));
});

// shortgpt against llama.cpp (node-llama-cpp's prebuilt CPU binaries) on GGUF files:
// next-token probabilities on the original and on a GGUF pruned by `shortgpt prune`,
// and tokenization.

import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { getLlama, type Llama, type LlamaModel as NodeLlamaModel, type Token } from "node-llama-cpp";
import { readGguf } from "../src/formats/gguf.js";
import { loadModel, type LoadedModel } from "../src/load.js";
import { LlamaModel } from "../src/models/llama.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { writeWideLlamaFixture } from "./fixtures/wideLlama.js";
import { MODEL_BIN, MODEL_GGUF, runCli, scaledError, tempDir, TOKENIZER } from "./helpers.js";

let llama: Llama;
const opened: NodeLlamaModel[] = [];

before(async () => {
  llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
});

after(async () => {
  for (const m of opened) await m.dispose();
  await llama.dispose();
});

/** llama.cpp's softmax over the vocabulary after each position, with an exact (F32, no flash) setup. */
async function llamaCppProbabilities(path: string, ids: number[]): Promise<Map<number, number>[]> {
  const model = await llama.loadModel({ modelPath: path });
  opened.push(model);
  const context = await model.createContext({
    contextSize: 256, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
  } as Parameters<NodeLlamaModel["createContext"]>[0]);
  try {
    const sequence = context.getSequence();
    const results = await sequence.controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { token: true, probabilities: true, options: { temperature: 0 } } }]));
    return results.map((r, pos) => {
      const probs = r?.next?.probabilities;
      if (!probs) throw new Error(`no probabilities at position ${pos}`);
      return probs;
    });
  } finally {
    await context.dispose();
  }
}

function ourProbabilities(loaded: LoadedModel, ids: number[]): Float64Array[] {
  const { logits } = loaded.model.forward(ids);
  const V = loaded.model.config.vocabSize;
  return ids.map((_, pos) => {
    const row = logits.slice(pos * V, (pos + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += row[i] = Math.exp(row[i]! - max);
    for (let i = 0; i < V; i++) row[i]! /= sum;
    return row;
  });
}

function maxProbabilityDifference(ours: Float64Array[], theirs: Map<number, number>[]): number {
  let worst = 0;
  ours.forEach((row, pos) => {
    const map = theirs[pos]!;
    for (let id = 0; id < row.length; id++) worst = Math.max(worst, Math.abs(row[id]! - (map.get(id) ?? 0)));
  });
  return worst;
}

const PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play";

test("next-token probabilities equal llama.cpp's within 1e-4 on stories260K.gguf", async (t) => {
  const loaded = loadModel(MODEL_GGUF);
  const ids = loaded.tokenizer.encode(PROMPT);
  const theirs = await llamaCppProbabilities(MODEL_GGUF, ids);
  assert.equal(theirs.length, ids.length);
  assert.ok(theirs[0]!.size >= 400, "llama.cpp reports (nearly) the whole vocabulary");
  const diff = maxProbabilityDifference(ourProbabilities(loaded, ids), theirs);
  t.diagnostic(`max |p_ours - p_llama.cpp| over ${ids.length} positions x 512 tokens: ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `max |p_ours - p_llama.cpp| = ${diff}`);
});

test("a GGUF pruned by `shortgpt prune` loads in llama.cpp and matches shortgpt on that file within 1e-4", async (t) => {
  const dir = tempDir();
  const out = join(dir, "pruned.gguf");
  const run = runCli(["prune", MODEL_GGUF, "--out", out, "--layers", "1,3"]);
  assert.equal(run.status, 0, run.stderr);
  const header = readGguf(out);
  assert.equal(Number(header.metadata.get("llama.block_count")!.value), 3);
  assert.deepEqual(header.tensors.filter((t) => t.name.startsWith("blk.")).map((t) => Number(t.name.split(".")[1])).filter((v, i, a) => a.indexOf(v) === i), [0, 1, 2]);
  header.file.close();
  const pruned = loadModel(out);
  const ids = pruned.tokenizer.encode(PROMPT);
  const theirs = await llamaCppProbabilities(out, ids);
  const ours = ourProbabilities(pruned, ids);
  const diff = maxProbabilityDifference(ours, theirs);
  t.diagnostic(`pruned: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `max |p_ours - p_llama.cpp| = ${diff}`);
  // The pruned model really differs from the original (the comparison is not vacuous).
  const original = ourProbabilities(loadModel(MODEL_GGUF), ids);
  assert.ok(maxProbabilityDifference(original, theirs) > 1e-2);
});

test("tokenization equals llama.cpp's, including non-ASCII text", async () => {
  const loaded = loadModel(MODEL_GGUF);
  const model = await llama.loadModel({ modelPath: MODEL_GGUF });
  opened.push(model);
  for (const text of ["Once upon a time", "Hello world!", "The café costs 5€ — naïve 日本", "  two  spaces\nnewline", "Lily's mom said, \"No!\"", "ünïcödé ✓ 🙂"]) {
    const theirs = [model.tokens.bos!, ...model.tokenize(text)].map(Number);
    assert.deepEqual(loaded.tokenizer.encode(text), theirs, JSON.stringify(text));
  }
});

/** The largest probability difference between llama.cpp and shortgpt on one file. */
async function compareOnFile(path: string, ids: number[]): Promise<{ diff: number; argmaxAgree: boolean; ours: Float64Array[]; theirs: Map<number, number>[] }> {
  const loaded = loadModel(path);
  const theirs = await llamaCppProbabilities(path, ids);
  const ours = ourProbabilities(loaded, ids);
  const argmax = (row: ArrayLike<number>): number => {
    let best = 0;
    for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
    return best;
  };
  const argmaxAgree = ours.every((row, pos) => {
    const map = theirs[pos]!;
    let best = -1;
    let bestP = -1;
    for (const [id, p] of map) if (p > bestP) [best, bestP] = [id, p];
    return argmax(row) === best;
  });
  return { diff: maxProbabilityDifference(ours, theirs), argmaxAgree, ours, theirs };
}

test("GGUF files written by `shortgpt convert` (F32, F16, Q8_0, Q4_0) load in llama.cpp and agree with shortgpt", async (t) => {
  const dir = tempDir();
  const ids = loadModel(MODEL_GGUF).tokenizer.encode(PROMPT);
  const unquantized = ourProbabilities(loadModel(MODEL_GGUF), ids);
  // F32 must agree to the foundation's 1e-4. For the other dtypes llama.cpp rounds the
  // activations too (to F16 for F16 weights, to 8-bit blocks for Q8_0/Q4_0 dot products), while
  // shortgpt computes with dequantized weights and float activations; the bounds allow that.
  const bounds: Record<string, number> = { F32: 1e-4, F16: 2e-3, Q8_0: 0.03, Q4_0: 0.05 };
  for (const [dtype, bound] of Object.entries(bounds)) {
    const path = join(dir, `${dtype}.gguf`);
    const run = runCli(["convert", MODEL_BIN, "--to", "gguf", "--dtype", dtype, path]);
    assert.equal(run.status, 0, run.stderr);
    const { diff, argmaxAgree, theirs } = await compareOnFile(path, ids);
    const vsUnquantized = maxProbabilityDifference(unquantized, theirs);
    t.diagnostic(`${dtype}: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)} (llama.cpp vs shortgpt on the F32 model: ${vsUnquantized.toExponential(2)})`);
    assert.ok(diff < bound, `${dtype}: max |p_ours - p_llama.cpp| = ${diff}`);
    assert.ok(argmaxAgree, `${dtype}: the most likely next token agrees at every position`);
    // Both read the same quantized weights: llama.cpp is far closer to shortgpt on this file
    // than to the unquantized model.
    if (dtype === "Q4_0") assert.ok(diff * 5 < vsUnquantized, `Q4_0: ${diff} vs ${vsUnquantized}`);
  }
});

test("a quantized GGUF pruned by `shortgpt prune` keeps its bytes and loads in llama.cpp", async (t) => {
  const dir = tempDir();
  const quantized = join(dir, "q4.gguf");
  assert.equal(runCli(["convert", MODEL_BIN, "--to", "gguf", "--dtype", "Q4_0", quantized]).status, 0);
  const pruned = join(dir, "q4-pruned.gguf");
  const run = runCli(["prune", quantized, "--out", pruned, "--layers", "2"]);
  assert.equal(run.status, 0, run.stderr);
  const before = readGguf(quantized);
  const after = readGguf(pruned);
  try {
    // blk.3 of the input is blk.2 of the output, byte for byte.
    const from = before.tensors.find((x) => x.name === "blk.3.attn_q.weight")!;
    const to = after.tensors.find((x) => x.name === "blk.2.attn_q.weight")!;
    assert.equal(to.type.name, "Q4_0");
    assert.ok(before.file.read(before.dataOffset + from.offset, from.byteLength, "in").equals(after.file.read(after.dataOffset + to.offset, to.byteLength, "out")));
  } finally {
    before.file.close();
    after.file.close();
  }
  const ids = loadModel(pruned).tokenizer.encode(PROMPT);
  const { diff, argmaxAgree } = await compareOnFile(pruned, ids);
  t.diagnostic(`pruned Q4_0: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
  assert.ok(diff < 0.05 && argmaxAgree);
});

test("every family (llama with and without RoPE scaling, qwen2, qwen3, gemma, gpt2): HF fixture -> shortgpt convert -> GGUF that llama.cpp runs like shortgpt; pruned too", async (t) => {
  const dir = tempDir();
  const ids = [1, 37, 402, 11, 250, 99, 500, 3, 77, 128, 256, 311];
  // llama.cpp computes GELU through a float16 lookup table, which moves Gemma's and GPT-2's
  // probabilities by up to ~1e-3; the SiLU families agree to ~1e-8.
  const bounds: Record<string, number> = { llama: 1e-4, qwen2: 1e-4, qwen3: 1e-4, gemma: 2e-3, gpt2: 2e-3, llama3: 1e-4, "llama-linear": 1e-4 };
  // llama3: Llama 3's RoPE scaling, written as llama.cpp's rope_freqs tensor; llama-linear: linear scaling, the same way.
  for (const family of ["llama", "qwen2", "qwen3", "gemma", "gpt2", "llama3", "llama-linear"] as const) {
    const hf = writeHfLlamaFixture(join(dir, family), { family });
    const gguf = join(dir, `${family}.gguf`);
    // The fixture has no tokenizer.json; stories260K's 512-token vocabulary stands in (vocab 512).
    const run = runCli(["convert", hf.dir, "--to", "gguf", gguf, "--tokenizer", TOKENIZER]);
    assert.equal(run.status, 0, run.stderr);
    const header = readGguf(gguf);
    assert.equal(header.metadata.get("general.architecture")?.value, family.startsWith("llama") ? "llama" : family);
    assert.equal(header.tensors.some((t) => t.name === "rope_freqs.weight"), family === "llama3" || family === "llama-linear");
    header.file.close();
    const fromHf = loadModel(hf.dir).model.forward(ids).logits;
    const fromGguf = loadModel(gguf);
    // (rope_freqs holds float32 divisors: Llama 3's blended one moves by ~1e-8.)
    const sameModel = scaledError(fromGguf.model.forward(ids).logits, fromHf);
    assert.ok(sameModel < (family === "llama3" ? 1e-6 : 1e-9), `${family}: the GGUF means the same model (${sameModel})`);
    const theirs = await llamaCppProbabilities(gguf, ids);
    const diff = maxProbabilityDifference(ourProbabilities(fromGguf, ids), theirs);
    t.diagnostic(`${family}: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
    assert.ok(diff < bounds[family]!, `${family}: ${diff}`);
    if (fromGguf.model.config.activation === "gelu_tanh") {
      // With llama.cpp's float16 GELU table in shortgpt's reference kernels, the rest of the gap closes.
      const asLlamaCpp = new LlamaModel({ ...fromGguf.model.config, activation: "gelu_tanh_f16" }, fromGguf.model.weights);
      const tableDiff = maxProbabilityDifference(ourProbabilities({ ...fromGguf, model: asLlamaCpp }, ids), theirs);
      t.diagnostic(`${family} with llama.cpp's GELU table: max |p_ours - p_llama.cpp| = ${tableDiff.toExponential(2)}`);
      assert.ok(tableDiff < 1e-4 && tableDiff < diff / 10, `${family} with the GELU table: ${tableDiff}`);
    }

    const pruned = join(dir, `${family}-pruned.gguf`);
    assert.equal(runCli(["prune", gguf, "--out", pruned, "--layers", "1"]).status, 0);
    const prunedModel = loadModel(pruned);
    assert.ok(scaledError(prunedModel.model.forward(ids).logits, loadModel(hf.dir).model.forward(ids, { skip: new Set([1]) }).logits) < (family === "llama3" ? 1e-6 : 1e-9));
    const prunedDiff = maxProbabilityDifference(ourProbabilities(prunedModel, ids), await llamaCppProbabilities(pruned, ids));
    t.diagnostic(`${family} pruned: max |p_ours - p_llama.cpp| = ${prunedDiff.toExponential(2)}`);
    assert.ok(prunedDiff < bounds[family]!, `${family} pruned: ${prunedDiff}`);
  }
});

test("K-quant GGUF files (Q4_K, Q5_K, Q6_K) written by `shortgpt convert` load in llama.cpp and agree with shortgpt; stories260K falls back as llama.cpp does", async (t) => {
  const dir = tempDir();
  // Every matrix of the wide fixture has rows of 256 or 512: all are K-quantized.
  const hf = writeWideLlamaFixture(join(dir, "wide"));
  const ids = [1, 37, 402, 11, 250, 99, 500, 3, 77, 128, 256, 311];
  const f32 = join(dir, "wide-f32.gguf");
  assert.equal(runCli(["convert", hf, "--to", "gguf", f32, "--tokenizer", TOKENIZER]).status, 0);
  const unquantized = ourProbabilities(loadModel(f32), ids);
  // llama.cpp multiplies K-quant weights with activations rounded to 8-bit blocks (Q8_K); shortgpt
  // uses the dequantized weights with float activations. The bound allows that rounding. (The random
  // model's next-token distributions are flat, with near ties: the argmax is not compared here.)
  const bounds: Record<string, number> = { Q4_K: 5e-3, Q5_K: 5e-3, Q6_K: 5e-3 };
  for (const [dtype, bound] of Object.entries(bounds)) {
    const path = join(dir, `wide-${dtype}.gguf`);
    const run = runCli(["convert", hf, "--to", "gguf", "--dtype", dtype, path, "--tokenizer", TOKENIZER, "--json", join(dir, `${dtype}.json`)]);
    assert.equal(run.status, 0, run.stderr);
    const header = readGguf(path);
    const types = new Set(header.tensors.filter((x) => x.dims.length === 2).map((x) => x.type.name));
    header.file.close();
    assert.deepEqual([...types], [dtype], `${dtype}: every matrix is stored as ${dtype}`);
    const { diff, theirs } = await compareOnFile(path, ids);
    const vsUnquantized = maxProbabilityDifference(unquantized, theirs);
    t.diagnostic(`${dtype}: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)} (llama.cpp vs shortgpt on the F32 model: ${vsUnquantized.toExponential(2)})`);
    assert.ok(diff < bound, `${dtype}: max |p_ours - p_llama.cpp| = ${diff}`);
    // Both read the same quantized weights: llama.cpp is far closer to shortgpt on this file than to the unquantized model.
    if (dtype === "Q4_K") assert.ok(diff * 5 < vsUnquantized, `Q4_K: ${diff} vs ${vsUnquantized}`);
  }
  // A K-quant file pruned by `shortgpt prune` (as `study` does) loads and agrees too.
  const pruned = join(dir, "wide-Q4_K-pruned.gguf");
  const pruneRun = runCli(["prune", join(dir, "wide-Q4_K.gguf"), "--out", pruned, "--layers", "0"]);
  assert.equal(pruneRun.status, 0, pruneRun.stderr);
  const prunedDiff = (await compareOnFile(pruned, ids)).diff;
  t.diagnostic(`pruned Q4_K: max |p_ours - p_llama.cpp| = ${prunedDiff.toExponential(2)}`);
  assert.ok(prunedDiff < 5e-3, `pruned Q4_K: ${prunedDiff}`);
  // stories260K (rows of 64 and 172): Q4_K becomes Q5_0 where rows are whole blocks of 32, F16 where not.
  const q4k = join(dir, "stories-Q4_K.gguf");
  const run = runCli(["convert", MODEL_BIN, "--to", "gguf", "--dtype", "Q4_K", q4k, "--json", join(dir, "stories.json")]);
  assert.equal(run.status, 0, run.stderr);
  const header = readGguf(q4k);
  const typeOf = new Map(header.tensors.map((x) => [x.name, x.type.name]));
  header.file.close();
  assert.equal(typeOf.get("blk.0.attn_q.weight"), "Q5_0");
  assert.equal(typeOf.get("blk.0.ffn_down.weight"), "F16");
  const ours = loadModel(q4k);
  const { diff, argmaxAgree } = await compareOnFile(q4k, ours.tokenizer.encode(PROMPT));
  t.diagnostic(`stories260K as Q4_K (Q5_0/F16 fallbacks): max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
  assert.ok(diff < 0.05 && argmaxAgree);
});

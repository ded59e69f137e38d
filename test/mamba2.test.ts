// Mamba-2 through the shared engine, against transformers' Mamba2ForCausalLM (slow torch path) and
// llama.cpp's mamba2: two tiny random-weight checkpoints saved by transformers' save_pretrained
// (test/fixtures/mamba2_tiny: n_groups 2, a dt clamp that bites, chunked scan over three chunks;
// mamba2_tiny_g1: n_groups 1, tied head, what llama.cpp computes alike) and the goldens that
// test/oracle/hf_mamba2_oracle.py wrote: logits, the residual stream around every block (forward
// hooks), Block Influence on every CPU backend, 20 greedy tokens, pruned directories (loaded back
// in transformers by test/oracle/check_pruned_hf.py); then convert to GGUF and prune there, with
// llama.cpp (node-llama-cpp, CPU) as the oracle for the files.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { Llama } from "node-llama-cpp";
import { assertAttentionLayer, type DecoderBackend } from "../src/backend/backend.js";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { CheckpointError, UnsupportedError } from "../src/errors.js";
import { generate } from "../src/eval/generate.js";
import { perplexity } from "../src/eval/perplexity.js";
import { type GgufTensorToWrite, GgufValueType, readGguf } from "../src/formats/gguf.js";
import { floatSpelledKeys, stringifyKeepingFloats } from "../src/formats/jsonFloats.js";
import { loadModel, openModel } from "../src/load.js";
import { GGUF_MAMBA2_NAMES, resolveHfMamba2Config, toGgufMamba2Layout } from "../src/models/mamba2.js";
import { layerShape, streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { removeHfLayers } from "../src/prune/removeLayersHf.js";
import { repoRoot } from "../src/shared.js";
import { decodeOracleFloats, rewriteGguf, runCli, scaledError, tempDir, TOKENIZER } from "./helpers.js";
import { cpuLlama, llamaCppProbabilities, maxProbabilityDifference } from "./llamaCppOracle.js";
import { oraclePython } from "./oraclePython.js";

interface Mamba2Golden {
  ids: number[];
  prompt: number[];
  greedy: number[];
  logits: number[];
  residual: number[][];
  block_influence: number[];
  /** By removed block: transformers' logits with that block deleted. */
  pruned_logits: Record<string, number[]>;
}

const fixtureDir = (name: string): string => join(repoRoot(), "test", "fixtures", name);
const goldenOf = (name: string): Mamba2Golden =>
  JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", `${name}.json`), "utf8"), decodeOracleFloats) as Mamba2Golden;

for (const name of ["mamba2_tiny", "mamba2_tiny_g1"] as const) {
  const fixture = fixtureDir(name);
  const golden = goldenOf(name);

  test(`${name}: logits and every block's residual stream match transformers`, (t) => {
    const { model, architecture } = loadModel(fixture);
    assert.equal(architecture, "mamba2");
    assert.equal(layerShape(model.config).kind, "mamba2");
    const streams: number[][] = [];
    const { logits } = model.forward(golden.ids, {
      hooks: { onLayer: (layer, input, output) => { if (layer === 0) streams.push(Array.from(input)); streams.push(Array.from(output)); } },
    });
    const err = scaledError(logits, golden.logits);
    t.diagnostic(`${name}: logits off by ${err.toExponential(2)} of their scale`);
    assert.ok(err < 1e-5, `logits off by ${err} of their scale`);
    assert.equal(streams.length, golden.residual.length);
    streams.forEach((s, i) => assert.ok(scaledError(s, golden.residual[i]!) < 1e-5, `residual stream ${i} off by ${scaledError(s, golden.residual[i]!)}`));
  });

  test(`${name}: greedy generation carries the recurrent state and gives transformers' 20 tokens`, () => {
    const { model } = loadModel(fixture);
    assert.deepEqual(generate(model, golden.prompt, { maxTokens: 20, temperature: 0, seed: 0 }), golden.greedy);
  });

  test(`${name}: Block Influence streams through every CPU backend and equals the hooked transformers blocks'`, async (t) => {
    const opened = openModel(fixture);
    const backends: DecoderBackend[] = [createReferenceBackend(), await createOrtBackend({ threads: 1, flavor: "node" })];
    try {
      for (const backend of backends) {
        // Two copies of the window in one batch: each must start from a zero state.
        const window = scoringWindows([golden.ids], { seqLen: golden.ids.length, stride: golden.ids.length })[0]!;
        const result = await streamingBlockInfluence(opened, [window, { ...window, document: 1 }], { backend });
        const worst = Math.max(...result.layers.map((l, i) => Math.abs(l.bi - golden.block_influence[i]!)));
        t.diagnostic(`${name} ${backend.name}: max |BI - BI_transformers| = ${worst.toExponential(2)}`);
        result.layers.forEach((l, i) => assert.ok(Math.abs(l.bi - golden.block_influence[i]!) < 1e-6, `${backend.name} layer ${i}: BI ${l.bi}, transformers ${golden.block_influence[i]}`));
      }
    } finally {
      for (const b of backends) await b.dispose();
      opened.close();
    }
  });

  test(`${name}: pruned directories give transformers' logits with the block deleted, and load in transformers with no missing or unexpected keys`, () => {
    const pairs: string[] = [];
    for (const removed of [1, 0]) {
      const out = join(tempDir(), `pruned${removed}`);
      const result = removeHfLayers(fixture, out, [removed]);
      assert.equal(result.layersAfter, 2);
      const text = readFileSync(join(out, "config.json"), "utf8");
      assert.equal((JSON.parse(text) as Record<string, unknown>)["num_hidden_layers"], 2);
      const { logits } = loadModel(out).model.forward(golden.ids);
      const want = golden.pruned_logits[String(removed)]!;
      assert.ok(scaledError(logits, want) < 1e-5, `removing ${removed}: logits off by ${scaledError(logits, want)}`);
      pairs.push(out, String(removed));
    }
    // transformers itself (one process for both directories): strict keys, and the original model with that block deleted.
    const python = oraclePython();
    const check = spawnSync(python, [join(repoRoot(), "test", "oracle", "check_pruned_hf.py"), fixture, ...pairs], { encoding: "utf8", timeout: 300_000 });
    assert.equal(check.status, 0, `check_pruned_hf.py (${python}): ${check.stdout}${check.stderr}`);
    assert.equal(check.stdout.match(/'missing': \[\], 'unexpected': \[\]/g)?.length, 2, check.stdout);
  });
}

test("mamba2_tiny: streaming perplexity over overlapping windows on the onnx backend equals the in-memory model's", async () => {
  const golden = goldenOf("mamba2_tiny");
  const opened = openModel(fixtureDir("mamba2_tiny"));
  const backend = await createOrtBackend({ threads: 1, flavor: "node" });
  try {
    const doc = [...golden.ids, ...golden.ids.slice(1).reverse()];
    const windows = perplexityWindows([doc], { seqLen: 12, stride: 6 });
    const streamed = await streamingPerplexity(opened, windows, { backend });
    const inMemory = perplexity(loadModel(fixtureDir("mamba2_tiny")).model, windows);
    assert.ok(Math.abs(streamed.perplexity - inMemory.perplexity) < 1e-4 * inMemory.perplexity, `${streamed.perplexity} vs ${inMemory.perplexity}`);
  } finally {
    await backend.dispose();
    opened.close();
  }
});

test("mamba2_tiny: the dt clamp (time_step_limit) is applied: without it the logits differ from transformers'", () => {
  const golden = goldenOf("mamba2_tiny");
  const dir = join(tempDir(), "unclamped");
  cpSync(fixtureDir("mamba2_tiny"), dir, { recursive: true });
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  assert.deepEqual(config["time_step_limit"], [0, 1]);
  delete config["time_step_limit"];
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const { logits } = loadModel(dir).model.forward(golden.ids);
  assert.ok(scaledError(logits, golden.logits) > 1e-3, `the clamp changed nothing (${scaledError(logits, golden.logits)})`);
});

test("a rewritten config.json keeps time_step_limit's 0.0 beside transformers' spelling of infinity (transformers 5 refuses an int there)", () => {
  const text = '{"time_step_limit": [0.0, {"__float__": "Infinity"}], "n": 4}';
  const keys = floatSpelledKeys(text);
  assert.deepEqual([...keys], ["time_step_limit"]);
  assert.equal(stringifyKeepingFloats(JSON.parse(text), keys, 0), '{"time_step_limit":[0.0,{"__float__":"Infinity"}],"n":4}');
});

test("mamba2 config: heads that do not make the inner size, or groups that do not divide the heads, are refused naming the fields", () => {
  const base = JSON.parse(readFileSync(join(fixtureDir("mamba2_tiny"), "config.json"), "utf8")) as Record<string, unknown>;
  assert.throws(() => resolveHfMamba2Config({ ...base, num_heads: 3 }, "config.json"), (err: unknown) => err instanceof CheckpointError && /num_heads \* head_dim/.test(err.details.hint ?? ""));
  assert.throws(() => resolveHfMamba2Config({ ...base, n_groups: 3 }, "config.json"), (err: unknown) => err instanceof CheckpointError && /n_groups must divide num_heads/.test(err.details.hint ?? ""));
  assert.throws(() => resolveHfMamba2Config({ ...base, time_step_limit: [1, 0] }, "config.json"), (err: unknown) => err instanceof CheckpointError && /time_step_limit/.test(err.message));
});

let llama: Llama;
before(async () => {
  llama = await cpuLlama();
});
after(async () => {
  await llama.dispose();
});

test("mamba2 GGUF: convert writes llama.cpp's mamba2; llama.cpp agrees with the engine and the HF directory, before and after pruning", async (t) => {
  const fixture = fixtureDir("mamba2_tiny_g1");
  const golden = goldenOf("mamba2_tiny_g1");
  const dir = tempDir();
  const gguf = join(dir, "mamba2.gguf");
  // The fixture has no tokenizer.json; stories260K's 512-token vocabulary stands in.
  const run = runCli(["convert", fixture, "--to", "gguf", gguf, "--tokenizer", TOKENIZER]);
  assert.equal(run.status, 0, run.stderr);
  const header = readGguf(gguf);
  const meta = (key: string): unknown => header.metadata.get(key)?.value;
  assert.equal(meta("general.architecture"), "mamba2");
  assert.equal(meta("mamba2.ssm.time_step_rank"), 4); // the head count
  assert.equal(meta("mamba2.ssm.group_count"), 1);
  assert.equal(meta("mamba2.ssm.inner_size"), 32);
  const dims = (n: string): number[] | undefined => header.tensors.find((x) => x.name === n)?.dims;
  // llama.cpp's layouts (ggml order, innermost first): conv 2-D, A and D per head with a unit axis, the norm per group.
  assert.deepEqual(dims("blk.0.ssm_conv1d.weight"), [4, 40]);
  assert.deepEqual(dims("blk.0.ssm_a"), [1, 4]);
  assert.deepEqual(dims("blk.0.ssm_d"), [1, 4]);
  assert.deepEqual(dims("blk.0.ssm_norm.weight"), [32, 1]);
  assert.deepEqual(dims("blk.0.ssm_dt.bias"), [4]);
  header.file.close();
  const fromGguf = loadModel(gguf);
  assert.equal(fromGguf.architecture, "mamba2");
  const ggufLogits = fromGguf.model.forward(golden.ids).logits;
  assert.ok(scaledError(ggufLogits, golden.logits) < 1e-5, `the GGUF's logits off transformers' by ${scaledError(ggufLogits, golden.logits)}`);
  assert.ok(scaledError(ggufLogits, loadModel(fixture).model.forward(golden.ids).logits) < 1e-6, "the GGUF means the same model as the directory");
  const diff = maxProbabilityDifference(fromGguf, golden.ids, await llamaCppProbabilities(llama, gguf, golden.ids));
  t.diagnostic(`mamba2: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-5, `mamba2: ${diff}`);

  const pruned = join(dir, "mamba2-pruned.gguf");
  const prune = runCli(["prune", gguf, "--out", pruned, "--layers", "1"]);
  assert.equal(prune.status, 0, prune.stderr);
  const prunedModel = loadModel(pruned);
  assert.equal(prunedModel.model.config.nLayers, 2);
  const prunedLogits = prunedModel.model.forward(golden.ids).logits;
  assert.ok(scaledError(prunedLogits, golden.pruned_logits["1"]!) < 1e-5, `pruned GGUF off transformers' pruned logits by ${scaledError(prunedLogits, golden.pruned_logits["1"]!)}`);
  const prunedDiff = maxProbabilityDifference(prunedModel, golden.ids, await llamaCppProbabilities(llama, pruned, golden.ids));
  t.diagnostic(`mamba2 pruned: max |p_ours - p_llama.cpp| = ${prunedDiff.toExponential(2)}`);
  assert.ok(prunedDiff < 1e-5, `mamba2 pruned: ${prunedDiff}`);
});

test("mamba2 GGUF with n_groups 2 (llama.cpp's meaning: the gated norm per group, no dt clamp): the engine agrees with llama.cpp", async (t) => {
  // convert refuses mamba2_tiny (transformers would mean another model), so the file is put
  // together here as llama.cpp's converter lays it out: the converted g1 file's vocabulary and
  // metadata, mamba2_tiny's tensors in GGUF layout, group_count 2. llama.cpp is the oracle of
  // B and C shared by pairs of heads and of the norm per group of 16 channels.
  const golden = goldenOf("mamba2_tiny");
  const dir = tempDir();
  const g1 = join(dir, "g1.gguf");
  assert.equal(runCli(["convert", fixtureDir("mamba2_tiny_g1"), "--to", "gguf", g1, "--tokenizer", TOKENIZER]).status, 0);
  const source = openModel(fixtureDir("mamba2_tiny"));
  const m2 = source.config.mamba2!;
  assert.equal(m2.nGroups, 2);
  const grouped = rewriteGguf(g1, join(dir, "grouped.gguf"), (meta, tensors) => {
    meta.set("mamba2.ssm.group_count", { type: GgufValueType.UINT32, value: 2 });
    const f32 = tensors.find((x) => x.name === "token_embd.weight")!.type;
    assert.equal(f32.name, "F32");
    const hfNames = source.names;
    const pairs: [string, string][] = [[hfNames.embedding, GGUF_MAMBA2_NAMES.embedding], [hfNames.finalNorm, GGUF_MAMBA2_NAMES.finalNorm], [hfNames.classifier, GGUF_MAMBA2_NAMES.classifier]];
    for (let layer = 0; layer < source.config.nLayers; layer++) {
      const from = hfNames.layer(layer);
      const to = GGUF_MAMBA2_NAMES.layer(layer);
      for (const [key, name] of Object.entries(from)) pairs.push([name, to[key as keyof typeof to]!]);
    }
    const shapes = new Map(source.provider.entries().map((e) => [e.name, e.shape]));
    return pairs.map(([hf, gguf]): GgufTensorToWrite => {
      const laid = toGgufMamba2Layout(gguf, shapes.get(hf)!, source.provider.readF32(hf), m2);
      return { name: gguf, dims: [...laid.shape].reverse(), type: f32, byteLength: laid.values.length * 4, bytes: () => new Uint8Array(laid.values.buffer, laid.values.byteOffset, laid.values.byteLength) };
    });
  });
  source.close();
  const loaded = loadModel(grouped);
  assert.equal(loaded.model.config.mamba2?.normGroupSize, 16);
  // Not transformers' model (norm over all 32 channels, dt clamped at 1): the difference is real.
  assert.ok(scaledError(loaded.model.forward(golden.ids).logits, golden.logits) > 1e-3);
  const diff = maxProbabilityDifference(loaded, golden.ids, await llamaCppProbabilities(llama, grouped, golden.ids));
  t.diagnostic(`mamba2 n_groups 2: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-5, `mamba2 n_groups 2: ${diff}`);
});

test("mamba2 GGUF: a model whose gated norm or dt clamp llama.cpp would compute differently is refused by convert, naming why", () => {
  const run = runCli(["convert", fixtureDir("mamba2_tiny"), "--to", "gguf", join(tempDir(), "grouped.gguf"), "--tokenizer", TOKENIZER]);
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /n_groups 2/);
  assert.match(run.stderr, /keep this one as a Hugging Face directory/);
});

test("mamba2 GGUF: missing or inconsistent ssm metadata and a non-negative A are refused, naming the key or tensor", () => {
  const dir = tempDir();
  const gguf = join(dir, "mamba2.gguf");
  assert.equal(runCli(["convert", fixtureDir("mamba2_tiny_g1"), "--to", "gguf", gguf, "--tokenizer", TOKENIZER]).status, 0);
  const noGroups = rewriteGguf(gguf, join(dir, "no-groups.gguf"), (meta) => { meta.delete("mamba2.ssm.group_count"); });
  assert.throws(() => loadModel(noGroups), (err: unknown) => err instanceof CheckpointError && err.message.includes("mamba2.ssm.group_count is missing"));
  const badHeads = rewriteGguf(gguf, join(dir, "bad-heads.gguf"), (meta) => { meta.set("mamba2.ssm.time_step_rank", { type: GgufValueType.UINT32, value: 3 }); });
  assert.throws(() => loadModel(badHeads), (err: unknown) => err instanceof CheckpointError && err.message.includes("mamba2.ssm.time_step_rank is 3, which does not divide mamba2.ssm.inner_size 32"));
  const positiveA = rewriteGguf(gguf, join(dir, "positive-a.gguf"), (_meta, tensors) => {
    const a = tensors.find((x) => x.name === "blk.1.ssm_a")!;
    a.bytes = () => new Uint8Array(new Float32Array([1, -1, -1, -1]).buffer);
  });
  assert.throws(() => loadModel(positiveA).model.forward([1, 2]), (err: unknown) => err instanceof CheckpointError && err.message.includes("blk.1.ssm_a") && err.message.includes("negative"));
});

test("mamba2: a backend without recurrent kernels (cuda) refuses the layer kind with a typed error naming it", () => {
  const opened = openModel(fixtureDir("mamba2_tiny"));
  const shape = layerShape(opened.config);
  opened.close();
  assert.equal(shape.kind, "mamba2");
  assert.throws(() => assertAttentionLayer(shape, "cuda"), (err: unknown) => err instanceof UnsupportedError && err.message.includes("mamba2"));
});

// Mamba as llama.cpp's "mamba" GGUF architecture: the project's convert writes the tiny
// transformers-saved fixture (test/fixtures/mamba_tiny) as GGUF; llama.cpp (node-llama-cpp, CPU)
// is the oracle for the file's meaning, before and after pruning a block.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { join } from "node:path";
import type { Llama } from "node-llama-cpp";
import { readGguf } from "../src/formats/gguf.js";
import { loadModel } from "../src/load.js";
import { repoRoot } from "../src/shared.js";
import { runCli, scaledError, tempDir, TOKENIZER } from "./helpers.js";
import { cpuLlama, llamaCppProbabilities, maxProbabilityDifference } from "./llamaCppOracle.js";

const IDS = [1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19, 6];
const FIXTURE = join(repoRoot(), "test", "fixtures", "mamba_tiny");
let llama: Llama;

before(async () => {
  llama = await cpuLlama();
});

after(async () => {
  await llama.dispose();
});

test("mamba GGUF: convert writes llama.cpp's mamba architecture; llama.cpp agrees with the engine, before and after pruning", async (t) => {
  const dir = tempDir();
  const gguf = join(dir, "mamba.gguf");
  // The fixture has no tokenizer.json; stories260K's 512-token vocabulary stands in.
  const run = runCli(["convert", FIXTURE, "--to", "gguf", gguf, "--tokenizer", TOKENIZER]);
  assert.equal(run.status, 0, run.stderr);
  const header = readGguf(gguf);
  assert.equal(header.metadata.get("general.architecture")?.value, "mamba");
  // llama.cpp stores A = -exp(A_log) and the conv 2-D.
  assert.deepEqual(header.tensors.find((t) => t.name === "blk.0.ssm_conv1d.weight")?.dims, [4, 32]);
  header.file.close();
  const fromHf = loadModel(FIXTURE).model.forward(IDS).logits;
  const fromGguf = loadModel(gguf);
  assert.equal(fromGguf.architecture, "mamba");
  assert.ok(scaledError(fromGguf.model.forward(IDS).logits, fromHf) < 1e-6, "the GGUF means the same model");
  const diff = maxProbabilityDifference(fromGguf, IDS, await llamaCppProbabilities(llama, gguf, IDS));
  t.diagnostic(`mamba: max |p_ours - p_llama.cpp| = ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-5, `mamba: ${diff}`);

  const pruned = join(dir, "mamba-pruned.gguf");
  const prune = runCli(["prune", gguf, "--out", pruned, "--layers", "1"]);
  assert.equal(prune.status, 0, prune.stderr);
  const prunedModel = loadModel(pruned);
  assert.equal(prunedModel.model.config.nLayers, 2);
  assert.ok(scaledError(prunedModel.model.forward(IDS).logits, loadModel(FIXTURE).model.forward(IDS, { skip: new Set([1]) }).logits) < 1e-6);
  const prunedDiff = maxProbabilityDifference(prunedModel, IDS, await llamaCppProbabilities(llama, pruned, IDS));
  t.diagnostic(`mamba pruned: max |p_ours - p_llama.cpp| = ${prunedDiff.toExponential(2)}`);
  assert.ok(prunedDiff < 1e-5, `mamba pruned: ${prunedDiff}`);
});

test("RWKV-4 has no GGUF architecture: convert refuses it with a typed error", () => {
  const run = runCli(["convert", join(repoRoot(), "test", "fixtures", "rwkv4_tiny"), "--to", "gguf", join(tempDir(), "rwkv.gguf"), "--tokenizer", TOKENIZER]);
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /RWKV-4 has no GGUF architecture/);
});

// The side-by-side report (the paper's cross-architecture figure): a Transformer scored by the CLI
// (stories260K, real weights and data) beside the Mamba and RWKV-4 fixtures scored through the same
// streaming engine; the page holds one panel per model and each model's numbers as given.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { scoringWindows } from "../src/data/windows.js";
import { openModel } from "../src/load.js";
import { streamingBlockInfluence } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { MODEL_BIN, runCli, tempDir, TINYSTORIES } from "./helpers.js";

const IDS = [1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19, 6];

test("side-by-side: BI of a Transformer and two recurrent models on one page, one panel each", async () => {
  const dir = tempDir();
  const llama = join(dir, "llama.json");
  const score = runCli(["score", MODEL_BIN, "--data", TINYSTORIES, "--metric", "bi", "--seq-len", "64", "--max-tokens", "256", "--backend", "reference", "--json", llama]);
  assert.equal(score.status, 0, score.stderr);
  const files = [llama];
  for (const family of ["mamba", "rwkv4"]) {
    const opened = openModel(join(repoRoot(), "test", "fixtures", `${family}_tiny`));
    const bi = await streamingBlockInfluence(opened, scoringWindows([IDS], { seqLen: IDS.length, stride: IDS.length }), { backend: createReferenceBackend() });
    opened.close();
    const file = join(dir, `${family}.json`);
    writeFileSync(file, JSON.stringify({ model: `${family}_tiny`, metric: "bi", layers: bi.layers }));
    files.push(file);
  }
  const report = join(dir, "report");
  const run = runCli(["side-by-side", ...files, "--report", report, "--json", join(dir, "out.json")]);
  assert.equal(run.status, 0, run.stderr);
  const html = readFileSync(join(report, "index.html"), "utf8");
  assert.match(html, /data-chart="bi-side-by-side"/);
  assert.ok((html.match(/<svg/g) ?? []).length >= 1);
  const out = JSON.parse(readFileSync(join(dir, "out.json"), "utf8")) as { models: { model: string; layers: { layer: number; bi: number }[] }[] };
  assert.deepEqual(out.models.map((m) => m.layers.length), [5, 3, 3]);
  for (const [i, file] of files.entries()) {
    const given = JSON.parse(readFileSync(file, "utf8")) as { model: string; layers: { layer: number; bi: number }[] };
    assert.equal(out.models[i]!.model, given.model);
    assert.deepEqual(out.models[i]!.layers.map((l) => l.bi), given.layers.map((l) => l.bi));
    assert.ok(html.includes(given.model), `the page names ${given.model}`);
    for (const l of given.layers) assert.ok(html.includes(l.bi.toFixed(5)), `${given.model} layer ${l.layer}: ${l.bi.toFixed(5)} on the page`);
  }
});

test("side-by-side: a file that is not a BI score result is refused with a message naming it", () => {
  const dir = tempDir();
  const bad = join(dir, "bad.json");
  writeFileSync(bad, JSON.stringify({ model: "x", metric: "angular", layers: [] }));
  const run = runCli(["side-by-side", bad, bad, "--report", join(dir, "r")]);
  assert.notEqual(run.status, 0);
  assert.match(run.stderr, /bad\.json is not a score result with Block Influence/);
});

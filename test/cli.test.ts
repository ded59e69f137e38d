// The commands end to end on stories260K: generate, score, prune, eval, tokenize, inspect, demo.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { readGguf, readGgufTensorBytes } from "../src/formats/gguf.js";
import { loadModel } from "../src/load.js";
import { DOCUMENTED_SAMPLE, MODEL_BIN, MODEL_GGUF, TINYSTORIES, TOKENIZER, runCli, sha256, tempDir } from "./helpers.js";

function runJson(args: string[]): Record<string, unknown> {
  const dir = tempDir();
  const out = join(dir, "out.json");
  const run = runCli([...args, "--json", out]);
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(readFileSync(out, "utf8")) as Record<string, unknown>;
}

test("generate: the greedy sample from BOS equals the documented text, from both formats", () => {
  for (const model of [MODEL_BIN, MODEL_GGUF]) {
    const run = runCli(["generate", model, "--max-tokens", "60"]);
    assert.equal(run.status, 0, run.stderr);
    assert.ok(run.stdout.startsWith(DOCUMENTED_SAMPLE.slice(0, -1)), run.stdout);
    const long = runJson(["generate", model, "--max-tokens", "200"]);
    assert.ok((long["text"] as string).startsWith(DOCUMENTED_SAMPLE), long["text"] as string);
  }
  // sampling is seeded: same seed, same text; another seed, another text
  const a = runCli(["generate", MODEL_BIN, "--temperature", "1", "--seed", "7", "--max-tokens", "40"]).stdout;
  const b = runCli(["generate", MODEL_BIN, "--temperature", "1", "--seed", "7", "--max-tokens", "40"]).stdout;
  const c = runCli(["generate", MODEL_BIN, "--temperature", "1", "--seed", "8", "--max-tokens", "40"]).stdout;
  assert.equal(a, b);
  assert.notEqual(a, c);
});

test("score: JSON has the metric, token count, per-layer BI and cosine, and a ranking", () => {
  const r = runJson(["score", MODEL_BIN, "--data", TINYSTORIES, "--seq-len", "128", "--max-tokens", "1024"]);
  assert.equal(r["metric"], "bi");
  assert.equal(r["tokens"], 1024);
  const layers = r["layers"] as { layer: number; bi: number; cosine: number }[];
  assert.deepEqual(layers.map((l) => l.layer), [0, 1, 2, 3, 4]);
  for (const l of layers) {
    assert.ok(l.bi > 0 && l.bi < 1);
    assert.ok(Math.abs(l.bi + l.cosine - 1) < 1e-12);
  }
  const ranking = r["ranking"] as number[];
  assert.deepEqual([...ranking].sort(), [0, 1, 2, 3, 4]);
  for (let i = 1; i < ranking.length; i++) assert.ok(layers[ranking[i - 1]!]!.bi <= layers[ranking[i]!]!.bi);
  // both formats score the same
  const g = runJson(["score", MODEL_GGUF, "--data", TINYSTORIES, "--seq-len", "128", "--max-tokens", "1024"]);
  assert.deepEqual(g["ranking"], ranking);
});

test("prune --remove K: writes the same format and PATH.json; the file evaluates exactly like skipping those layers", () => {
  for (const model of [MODEL_BIN, MODEL_GGUF]) {
    const dir = tempDir();
    const ext = model.endsWith(".gguf") ? "gguf" : "bin";
    const out = join(dir, `pruned.${ext}`);
    const inputHash = sha256(model);
    const run = runCli(["prune", model, "--out", out, "--remove", "2", "--data", TINYSTORIES, "--seq-len", "128", "--max-tokens", "2048"]);
    assert.equal(run.status, 0, run.stderr);
    assert.equal(sha256(model), inputHash, "the input is never modified");
    const record = JSON.parse(readFileSync(`${out}.json`, "utf8")) as { removed: number[]; layersAfter: number; selection: { method: string; ranking: number[]; data: { sha256: string }; options: { seqLen: number } } };
    assert.equal(record.selection.method, "bi");
    assert.deepEqual(record.removed, record.selection.ranking.slice(0, 2).sort());
    assert.equal(record.selection.data.sha256, sha256(TINYSTORIES));
    assert.equal(record.selection.options.seqLen, 128);
    assert.equal(record.layersAfter, 3);
    assert.equal(loadModel(out, { tokenizer: TOKENIZER }).model.nLayers, 3);

    const evalArgs = ["--ppl", TINYSTORIES, "--seq-len", "128", "--max-tokens", "1500", ...(ext === "bin" ? ["--tokenizer", TOKENIZER] : [])];
    const skipped = runJson(["eval", model, ...evalArgs, "--skip", record.removed.join(",")]);
    const pruned = runJson(["eval", out, ...evalArgs]);
    const original = runJson(["eval", model, ...evalArgs]);
    assert.equal(pruned["perplexity"], skipped["perplexity"], "bit-identical perplexity");
    assert.equal(pruned["tokens"], skipped["tokens"]);
    assert.ok((pruned["perplexity"] as number) > (original["perplexity"] as number));
  }
});

test("prune of a GGUF: metadata identical but block_count, kept tensors byte-identical and renumbered", () => {
  const dir = tempDir();
  const out = join(dir, "p.gguf");
  assert.equal(runCli(["prune", MODEL_GGUF, "--out", out, "--layers", "0,2"]).status, 0);
  const a = readGguf(MODEL_GGUF);
  const b = readGguf(out);
  assert.deepEqual([...b.metadata.keys()], [...a.metadata.keys()]);
  for (const [key, value] of a.metadata) {
    if (key === "llama.block_count") assert.equal(b.metadata.get(key)!.value, 3);
    else assert.deepEqual(b.metadata.get(key), value, key);
  }
  const rename: Record<string, string> = { "blk.1.": "blk.0.", "blk.3.": "blk.1.", "blk.4.": "blk.2." };
  const expected = a.tensors.filter((t) => !/^blk\.[02]\./.test(t.name));
  assert.equal(b.tensors.length, expected.length);
  expected.forEach((t, i) => {
    const prefix = Object.keys(rename).find((p) => t.name.startsWith(p));
    const name = prefix ? rename[prefix] + t.name.slice(prefix.length) : t.name;
    const got = b.tensors[i]!;
    assert.equal(got.name, name);
    assert.ok(readGgufTensorBytes(b, got).equals(readGgufTensorBytes(a, t)), name);
    assert.equal((b.dataOffset + got.offset) % 32, 0);
  });
  a.file.close();
  b.file.close();
});

test("tokenize: JSON documents are exactly what the tokenizer gives, with BOS", () => {
  const r = runJson(["tokenize", MODEL_BIN, "--data", TINYSTORIES, "--split", "blank-line"]);
  const docs = r["documents"] as number[][];
  assert.ok(docs.length > 100);
  const loaded = loadModel(MODEL_BIN);
  const first = readFileSync(TINYSTORIES, "utf8").replace(/\r\n?/g, "\n").split(/\n[ \t]*\n/)[0]!.trim();
  assert.deepEqual(docs[0], loaded.tokenizer.encode(first));
  assert.equal(docs[0]![0], 1);
});

test("inspect: both formats describe the same 5-layer Llama", () => {
  const bin = runJson(["inspect", MODEL_BIN]);
  const gguf = runJson(["inspect", MODEL_GGUF]);
  for (const r of [bin, gguf]) {
    assert.equal(r["layers"], 5);
    assert.equal(r["dim"], 64);
    assert.equal(r["hiddenDim"], 172);
    assert.equal(r["heads"], 8);
    assert.equal(r["kvHeads"], 4);
    assert.equal(r["vocabSize"], 512);
  }
  assert.equal(bin["parameters"], 260032);
  assert.equal(bin["tiedClassifier"], true);
  assert.equal(gguf["tiedClassifier"], false); // llama.cpp's converter stored a copy as output.weight
  assert.deepEqual(gguf["dtypes"], { F32: 48 });
});

test("demo: runs the whole pipeline and reports BI, perplexities and samples", () => {
  const r = runJson(["demo", "--calibration-tokens", "1024", "--eval-tokens", "1024"]);
  const results = r["results"] as { perplexity: number; sample: string }[];
  assert.equal(results.length, 3);
  assert.ok(results[0]!.sample.startsWith("Once upon a time, there was a little girl named Lily."));
  assert.ok(results[0]!.perplexity < results[1]!.perplexity && results[1]!.perplexity < results[2]!.perplexity);
  assert.equal((r["removeOne"] as number[]).length, 1);
});

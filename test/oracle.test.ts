// shortgpt against the committed numpy float64 oracle (test/oracle/llama_oracle.py) on the
// same token ids: tokenization, logits, Block Influence, perplexity, greedy generation.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { readTextData, tokenizeDocuments } from "../src/data/documents.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { generate } from "../src/eval/generate.js";
import { perplexity } from "../src/eval/perplexity.js";
import { loadModel } from "../src/load.js";
import { blockInfluence } from "../src/metrics/score.js";
import { repoRoot } from "../src/shared.js";
import { MODEL_BIN, MODEL_GGUF, TINYSTORIES, maxRelativeError } from "./helpers.js";

interface Golden {
  documents: { count: number; token_counts: number[] };
  tokenize: { source: string; text: string; ids: number[] }[];
  logits: { ids: number[]; skip: number[]; logits: number[][] }[];
  bi: { window: number; stride: number; max_tokens: number | null; skip: number[]; layers: number[]; cosine: number[]; bi: number[]; tokens: number; windows: number }[];
  perplexity: { window: number; stride: number; skip: number[]; nll: number; perplexity: number; tokens: number }[];
  generate: { prompt_ids: number[]; steps: number; ids: number[]; text: string };
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "stories260K.json"), "utf8")) as Golden;
const bin = loadModel(MODEL_BIN);
const gguf = loadModel(MODEL_GGUF);
const documents = tokenizeDocuments(bin.tokenizer, readTextData(TINYSTORIES, "blank-line").documents.slice(0, golden.documents.count));
const REL = 1e-5;

test("tokenizer: both formats give the oracle's ids for every case", () => {
  for (const c of golden.tokenize) {
    assert.deepEqual(bin.tokenizer.encode(c.text), c.ids, `llama2.c tokenizer on ${JSON.stringify(c.text)}`);
    assert.deepEqual(gguf.tokenizer.encode(c.text), c.ids, `GGUF tokenizer on ${JSON.stringify(c.text)}`);
    assert.equal(bin.tokenizer.decode(c.ids), c.text, "decoding gives the text back");
    assert.equal(gguf.tokenizer.decode(c.ids), c.text);
  }
  assert.deepEqual(documents.map((d) => d.length), golden.documents.token_counts);
});

test("logits of a prompt equal the oracle within 1e-5 relative, both formats, with and without skipped layers", () => {
  for (const c of golden.logits) {
    for (const loaded of [bin, gguf]) {
      const { logits } = loaded.model.forward(c.ids, { skip: new Set(c.skip) });
      const err = maxRelativeError(logits, c.logits.flat(), 1e-3);
      assert.ok(err < REL, `${loaded.format} skip [${c.skip}]: max relative error ${err}`);
    }
  }
});

test("Block Influence equals the oracle within 1e-5 relative for every window setting", () => {
  for (const c of golden.bi) {
    const windows = scoringWindows(documents, { seqLen: c.window, stride: c.stride, ...(c.max_tokens === null ? {} : { maxTokens: c.max_tokens }) });
    const result = blockInfluence(bin.model, windows, { skip: new Set(c.skip) });
    assert.equal(result.tokens, c.tokens);
    assert.equal(result.windows, c.windows);
    assert.deepEqual(result.layers.map((l) => l.layer), c.layers);
    assert.ok(maxRelativeError(result.layers.map((l) => l.bi), c.bi) < REL, `BI ${JSON.stringify(result.layers)} vs ${c.bi}`);
    assert.ok(maxRelativeError(result.layers.map((l) => l.cosine), c.cosine) < REL);
  }
});

test("perplexity equals the oracle within 1e-5 relative for every window setting", () => {
  for (const c of golden.perplexity) {
    const windows = perplexityWindows(documents, { seqLen: c.window, stride: c.stride });
    const result = perplexity(bin.model, windows, { skip: new Set(c.skip) });
    assert.equal(result.tokens, c.tokens);
    assert.ok(Math.abs(result.nll - c.nll) <= REL * c.nll, `nll ${result.nll} vs ${c.nll}`);
    assert.ok(Math.abs(result.perplexity - c.perplexity) <= REL * c.perplexity);
  }
});

test("greedy generation gives the oracle's ids", () => {
  const ids = generate(gguf.model, golden.generate.prompt_ids, { maxTokens: golden.generate.steps, temperature: 0, seed: 0 });
  assert.deepEqual(ids, golden.generate.ids);
  assert.equal(gguf.tokenizer.decode([...golden.generate.prompt_ids, ...ids]), golden.generate.text);
});

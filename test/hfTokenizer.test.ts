// tokenizer.json support (through @huggingface/tokenizers) against the Rust `tokenizers`
// library: a Llama-style SentencePiece BPE with byte fallback, trained and saved by
// test/oracle/hf_tokenizer_oracle.py, with the ids Rust gave for ASCII and non-ASCII text.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { repoRoot } from "../src/shared.js";
import { readHfTokenizer } from "../src/tokenizer/hfTokenizer.js";
import { tempDir } from "./helpers.js";

interface Golden {
  bos_id: number;
  eos_id: number;
  vocab_size: number;
  cases: { text: string; ids: number[]; decoded: string }[];
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "hf_tokenizer.json"), "utf8")) as Golden;
const dir = join(repoRoot(), "test", "fixtures", "hf-tokenizer");

test("tokenizer.json: ids equal the Rust tokenizers library's; BOS named by tokenizer_config.json, added only by a template (transformers 5)", () => {
  const tokenizer = readHfTokenizer(dir, {}, golden.vocab_size);
  assert.ok(tokenizer);
  assert.equal(tokenizer.bosId, golden.bos_id);
  assert.equal(tokenizer.eosId, golden.eos_id);
  // add_bos_token: true in tokenizer_config.json, but no post-processor template: transformers 5 adds none.
  assert.equal(tokenizer.addsBos, false);
  for (const c of golden.cases) {
    assert.deepEqual(tokenizer.encode(c.text, { bos: false }), c.ids, JSON.stringify(c.text));
    assert.deepEqual(tokenizer.encode(c.text), c.ids);
    assert.deepEqual(tokenizer.encode(c.text, { bos: true }), [golden.bos_id, ...c.ids]);
    assert.equal(tokenizer.decode([golden.bos_id, ...c.ids]), c.decoded);
  }
  assert.ok(golden.cases.some((c) => c.ids.some((id) => id >= 3 && id <= 258)), "byte fallback is exercised");
});

test("BOS as transformers 5 decides it: the post-processor template, never add_bos_token; an explicit null bos_token is none", () => {
  const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")) as Record<string, unknown>;
  const template = { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }], pair: [], special_tokens: { "<s>": { id: "<s>", ids: [golden.bos_id], tokens: ["<s>"] } } };
  const cases: [string, unknown, Record<string, unknown>, Record<string, unknown>, boolean, number][] = [
    ["a template, add_bos_token false", template, { bos_token: "<s>", add_bos_token: false, tokenizer_class: "LlamaTokenizerFast" }, {}, true, golden.bos_id],
    ["a template inside a Sequence", { type: "Sequence", processors: [{ type: "ByteLevel" }, template] }, { bos_token: "<s>" }, {}, true, golden.bos_id],
    ["no template, add_bos_token true, a Llama class", null, { bos_token: "<s>", add_bos_token: true, tokenizer_class: "LlamaTokenizerFast" }, {}, false, golden.bos_id],
    ["bos_token null, config.json names an id", null, { bos_token: null, eos_token: "</s>" }, { bos_token_id: golden.bos_id }, false, -1],
  ];
  for (const [what, postProcessor, tokenizerConfig, config, adds, bosId] of cases) {
    const d = tempDir();
    writeFileSync(join(d, "tokenizer.json"), JSON.stringify({ ...json, post_processor: postProcessor }));
    writeFileSync(join(d, "tokenizer_config.json"), JSON.stringify(tokenizerConfig));
    const t = readHfTokenizer(d, config, golden.vocab_size)!;
    assert.equal(t.addsBos, adds, what);
    assert.equal(t.bosId, bosId, what);
    assert.equal(t.encode("Hello")[0] === golden.bos_id, adds, what);
  }
});

test("a directory without tokenizer.json has no tokenizer", () => {
  assert.equal(readHfTokenizer(join(repoRoot(), "test"), {}, 10), undefined);
});

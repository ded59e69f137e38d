// tokenizer.json support (through @huggingface/tokenizers) against the Rust `tokenizers`
// library: a Llama-style SentencePiece BPE with byte fallback, trained and saved by
// test/oracle/hf_tokenizer_oracle.py, with the ids Rust gave for ASCII and non-ASCII text.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { repoRoot } from "../src/shared.js";
import { readHfTokenizer } from "../src/tokenizer/hfTokenizer.js";

interface Golden {
  bos_id: number;
  eos_id: number;
  vocab_size: number;
  cases: { text: string; ids: number[]; decoded: string }[];
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "hf_tokenizer.json"), "utf8")) as Golden;
const dir = join(repoRoot(), "test", "fixtures", "hf-tokenizer");

test("tokenizer.json: ids equal the Rust tokenizers library's, BOS from tokenizer_config.json (a Llama tokenizer class)", () => {
  const tokenizer = readHfTokenizer(dir, {}, golden.vocab_size);
  assert.ok(tokenizer);
  assert.equal(tokenizer.bosId, golden.bos_id);
  assert.equal(tokenizer.eosId, golden.eos_id);
  assert.equal(tokenizer.addsBos, true);
  for (const c of golden.cases) {
    assert.deepEqual(tokenizer.encode(c.text, { bos: false }), c.ids, JSON.stringify(c.text));
    assert.deepEqual(tokenizer.encode(c.text), [golden.bos_id, ...c.ids]);
    assert.equal(tokenizer.decode([golden.bos_id, ...c.ids]), c.decoded);
  }
  assert.ok(golden.cases.some((c) => c.ids.some((id) => id >= 3 && id <= 258)), "byte fallback is exercised");
});

test("a directory without tokenizer.json has no tokenizer", () => {
  assert.equal(readHfTokenizer(join(repoRoot(), "test"), {}, 10), undefined);
});

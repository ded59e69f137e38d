// Byte-level BPE vocabularies (GGUF tokenizer.ggml.model = gpt2): a tokenizer trained by the
// fixture code, in a Hugging Face directory, converted by shortgpt to GGUF; the ids of
// @huggingface/tokenizers on the tokenizer.json, of shortgpt's GGUF reader and of llama.cpp
// (node-llama-cpp) on the converted file must be equal, for the Llama 3, Qwen2 and GPT-2
// pre-tokenizers, on text with non-ASCII letters, digits, contractions and odd whitespace.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { getLlama, type Llama } from "node-llama-cpp";
import { convertModel } from "../src/convert/convertModel.js";
import { TokenizerError, UnsupportedError } from "../src/errors.js";
import { type GgufValue, GgufValueType, readGguf } from "../src/formats/gguf.js";
import { loadModel, openModel } from "../src/load.js";
import type { BpeVocab } from "../src/tokenizer/bpe.js";
import { bpeTokenizer } from "../src/tokenizer/hfTokenizer.js";
import { PieceType } from "../src/tokenizer/sentencepiece.js";
import { byteAlphabet, type FixturePre, writeBpeTokenizer } from "./fixtures/bpeTokenizer.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { rewriteGguf, tempDir, TINYSTORIES } from "./helpers.js";

const TEXTS = [
  "Once upon a time, there was a little girl named Lily.",
  "She didn't want to go. They'll see. I'M HERE! we've been",
  "Numbers: 7, 42, 1234567 and 3.14159; dates 2024-02-29.",
  "Héllo wörld, café naïve façade — «quotes» and ‘single’",
  "日本語のテキスト、中文文本，한국어 텍스트",
  "Emoji 🙂🚀 and symbols ∑∫√ ≠ ≤",
  "  leading spaces,\ttabs\tand\n\nnew lines  \n  trailing   ",
  "code: if (x >= 10) { return y[i] + 0x1F; }",
];

/** Training text: TinyStories, and the test texts a few times, so merges span multi-byte characters of every script. */
const TRAINING = readFileSync(TINYSTORIES, "utf8").slice(0, 30_000) + ` ${TEXTS.join(" ")}`.repeat(60);

let llama: Llama;
before(async () => {
  llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
});
after(async () => {
  await llama.dispose();
});

/** The fixture model (vocabulary 512) with a trained byte-level BPE tokenizer of 512 tokens. */
function bpeFixture(pre: FixturePre): { dir: string; bosId: number; eosId: number } {
  const dir = join(tempDir(), "hf");
  writeHfLlamaFixture(dir);
  return { dir, ...writeBpeTokenizer(dir, TRAINING, 512, pre) };
}

async function llamaCppTokens(path: string, text: string): Promise<number[]> {
  const model = await llama.loadModel({ modelPath: path });
  try {
    return model.tokenize(text).map(Number);
  } finally {
    await model.dispose();
  }
}

for (const pre of ["llama-bpe", "qwen2", "gpt-2"] as const) {
  test(`BPE vocabulary (${pre}): tokenizer.json, shortgpt's GGUF reader and llama.cpp give the same ids`, async () => {
    const { dir, bosId, eosId } = bpeFixture(pre);
    const hf = loadModel(dir);
    const gguf = join(tempDir(), "bpe.gguf");
    const result = convertModel(dir, gguf, { to: "gguf", dtype: "F32" });
    assert.equal(result.tokenizer, "written");
    const file = readGguf(gguf);
    assert.equal(file.metadata.get("tokenizer.ggml.model")?.value, "gpt2");
    assert.equal(file.metadata.get("tokenizer.ggml.pre")?.value, pre);
    assert.equal(file.metadata.get("tokenizer.ggml.bos_token_id")?.value, bosId);
    assert.equal(file.metadata.get("tokenizer.ggml.eos_token_id")?.value, eosId);
    assert.equal((file.metadata.get("tokenizer.ggml.merges")?.value as unknown[]).length, 512 - 256 - 2);
    file.file.close();
    const ours = loadModel(gguf);
    assert.match(ours.tokenizer.description, new RegExp(`byte-level BPE .*pre-tokenizer ${pre}`));
    assert.equal(ours.tokenizer.bosId, bosId);
    assert.equal(hf.tokenizer.addsBos, pre === "llama-bpe", "BOS added as transformers adds it (the template)");
    assert.equal(ours.tokenizer.addsBos, pre === "llama-bpe", "BOS added as tokenizer.ggml.add_bos_token says");
    for (const text of TEXTS) {
      const want = hf.tokenizer.encode(text, { bos: false });
      assert.ok(want.some((id) => id >= 256), `${JSON.stringify(text)}: merges were used`);
      assert.deepEqual(ours.tokenizer.encode(text, { bos: false }), want, `GGUF reader vs tokenizer.json: ${JSON.stringify(text)}`);
      assert.deepEqual(await llamaCppTokens(gguf, text), want, `llama.cpp vs tokenizer.json: ${JSON.stringify(text)}`);
      assert.equal(ours.tokenizer.decode(want), text, "decodes back to the text");
    }
    // Back to a Hugging Face directory: the tokenizer.json written from the GGUF vocabulary tokenizes alike.
    const back = join(tempDir(), "back");
    assert.equal(convertModel(gguf, back, { to: "safetensors", dtype: "F32" }).tokenizer, "written");
    const again = loadModel(back);
    assert.equal(again.tokenizer.addsBos, pre === "llama-bpe", "GGUF -> HF keeps whether BOS is added");
    for (const text of TEXTS) assert.deepEqual(again.tokenizer.encode(text, { bos: false }), hf.tokenizer.encode(text, { bos: false }), `GGUF -> HF: ${JSON.stringify(text)}`);
  });
}

test("BPE tokens named like Object properties (toString, constructor) are tokens like any other", () => {
  const alphabet = byteAlphabet();
  const vocab: BpeVocab = {
    tokens: [...alphabet, "toString", "constructor"], types: [...alphabet.map(() => PieceType.Normal), PieceType.Normal, PieceType.Normal],
    merges: [], pre: "llama-bpe", bosId: -1, eosId: -1, addBos: false,
  };
  // Llama 3's pre-tokenizer takes a word that is itself a token whole (ignore_merges).
  const tokenizer = bpeTokenizer(vocab, "test", "test vocabulary");
  assert.deepEqual(tokenizer.encode("toString", { bos: false }), [256]);
  assert.deepEqual(tokenizer.encode("constructor", { bos: false }), [257]);
});

test("bad BPE input: merges missing, an unknown pre-tokenizer, a tokenizer.json of another kind", () => {
  const { dir } = bpeFixture("qwen2");
  const gguf = join(tempDir(), "bpe.gguf");
  convertModel(dir, gguf, { to: "gguf", dtype: "F32" });
  const rewrite = (edit: (m: Map<string, GgufValue>) => void): string => rewriteGguf(gguf, join(tempDir(), "edited.gguf"), (m) => void edit(m));
  // GGUF -> GGUF keeps the vocabulary whole, token types included (an unused token stays unused).
  const withUnused = rewrite((m) => {
    const types = [...((m.get("tokenizer.ggml.token_type") as { value: number[] }).value)];
    types[300] = PieceType.Unused;
    m.set("tokenizer.ggml.token_type", { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value: types });
  });
  const again = join(tempDir(), "again.gguf");
  convertModel(withUnused, again, { to: "gguf", dtype: "F16" });
  const [before, after] = [readGguf(withUnused), readGguf(again)];
  for (const key of ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"]) {
    assert.deepEqual(after.metadata.get(key)?.value, before.metadata.get(key)?.value, key);
  }
  assert.equal((after.metadata.get("tokenizer.ggml.token_type")!.value as number[])[300], PieceType.Unused);
  before.file.close();
  after.file.close();
  const noMerges = rewrite((m) => m.delete("tokenizer.ggml.merges"));
  assert.throws(() => openModel(noMerges), (e: unknown) => e instanceof TokenizerError && /tokenizer\.ggml\.merges/.test(e.message) && e.message.includes(noMerges));
  const unknownPre = rewrite((m) => m.set("tokenizer.ggml.pre", { type: GgufValueType.STRING, value: "klingon" }));
  assert.throws(() => openModel(unknownPre), (e: unknown) => e instanceof UnsupportedError && /"klingon"/.test(e.message) && /llama-bpe/.test(JSON.stringify(e)));
  // A WordPiece-like tokenizer.json cannot become a GGUF BPE vocabulary: a clear error, no file.
  const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")) as Record<string, unknown>;
  json["pre_tokenizer"] = { type: "Whitespace" };
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(json));
  const out = join(tempDir(), "never.gguf");
  assert.throws(() => convertModel(dir, out, { to: "gguf", dtype: "F32" }), (e: unknown) => e instanceof UnsupportedError && /not byte-level/.test(e.message));
});

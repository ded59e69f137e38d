// llama2.c format variants: the versioned "ak42" v1 layout and the legacy separate-classifier
// flag (negative vocab_size), written from stories260K and loaded back.

import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { readLlama2c, writeLlama2c, type Llama2cHeader } from "../src/formats/llama2c.js";
import { loadModel } from "../src/load.js";
import { MODEL_BIN, TOKENIZER, tempDir } from "./helpers.js";

/** Rewrites stories260K.bin with another header (version, classifier flag); tensors picked by name. */
function rewrite(out: string, change: Partial<Llama2cHeader>): void {
  const src = readLlama2c(MODEL_BIN);
  const byName = new Map(src.tensors.map((t) => [t.name, t]));
  writeLlama2c(out, { ...src.header, ...change }, (t) => {
    // A separate classifier gets a copy of the embedding.
    const from = byName.get(t.name === "output.weight" ? "tok_embeddings.weight" : t.name)!;
    return src.file.read(from.offset, from.byteLength, t.name);
  });
  src.file.close();
}

test("llama2.c version 1 (ak42) and legacy with a separate classifier load to the same model", () => {
  const dir = tempDir();
  const reference = loadModel(MODEL_BIN);
  const ids = reference.tokenizer.encode("Once upon a time, there was");
  const want = reference.model.forward(ids).logits;
  for (const [name, change] of [["v1.bin", { version: 1 }], ["v1-separate.bin", { version: 1, sharedClassifier: false }], ["legacy-separate.bin", { sharedClassifier: false }]] as const) {
    const path = join(dir, name);
    rewrite(path, change);
    const header = readLlama2c(path);
    assert.equal(header.header.version, change.version ?? 0);
    assert.equal(header.header.sharedClassifier, !("sharedClassifier" in change));
    header.file.close();
    const loaded = loadModel(path, { tokenizer: TOKENIZER });
    const got = loaded.model.forward(ids).logits;
    assert.deepEqual([...got], [...want], name);
  }
});

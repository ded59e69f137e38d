// shortgpt convert: llama2.c / GGUF / HF in, GGUF or an HF directory out. The converted files
// must mean the same model: same logits as the original (exactly, or within the output dtype's
// rounding), the same tokenizer, and for the HF directory the same logits and ids in
// transformers + tokenizers (golden from test/oracle/hf_convert_oracle.py).

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { convertModel } from "../src/convert/convertModel.js";
import { UnsupportedError } from "../src/errors.js";
import { GgufValueType, readGguf } from "../src/formats/gguf.js";
import { loadModel, openModel } from "../src/load.js";
import { repoRoot } from "../src/shared.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { MODEL_BIN, MODEL_GGUF, rewriteGguf, runCli, scaledError, sha256, tempDir, TINYSTORIES } from "./helpers.js";

const PROMPT = "Once upon a time, there was a little girl named Lily. She loved to play";

function logitsOf(path: string, ids: number[]): Float64Array {
  return Float64Array.from(loadModel(path).model.forward(ids).logits);
}

test("llama2.c and GGUF to GGUF F32: same logits, and the vocabulary llama.cpp's converter writes", () => {
  const dir = tempDir();
  const ids = loadModel(MODEL_BIN).tokenizer.encode(PROMPT, { bos: true });
  const fromBin = join(dir, "from-bin.gguf");
  const fromGguf = join(dir, "from-gguf.gguf");
  const r = convertModel(MODEL_BIN, fromBin, { to: "gguf" });
  assert.equal(r.tokenizer, "written");
  assert.deepEqual(r.fallbacks, []);
  convertModel(MODEL_GGUF, fromGguf, { to: "gguf" });
  // GGUF -> GGUF in F32 is lossless; from llama2.c only the float32 RMSNorm epsilon in GGUF differs.
  assert.deepEqual(logitsOf(fromGguf, ids), logitsOf(MODEL_GGUF, ids));
  assert.ok(scaledError(logitsOf(fromBin, ids), logitsOf(MODEL_BIN, ids)) < 1e-9);
  const ours = readGguf(fromBin);
  const reference = readGguf(MODEL_GGUF);
  try {
    for (const key of ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "llama.block_count", "llama.rope.dimension_count"]) {
      assert.deepEqual(ours.metadata.get(key)?.value, reference.metadata.get(key)?.value, key);
    }
  } finally {
    ours.file.close();
    reference.file.close();
  }
});

test("llama2.c to an HF directory: identical logits, a tokenizer.json that tokenizes as the original", () => {
  const dir = tempDir();
  const out = join(dir, "hf");
  const r = convertModel(MODEL_BIN, out, { to: "safetensors" });
  assert.equal(r.tokenizer, "written");
  assert.deepEqual(readdirSync(out).sort(), ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
  const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
  assert.equal(config["num_hidden_layers"], 5);
  assert.equal(config["tie_word_embeddings"], true);
  const original = openModel(MODEL_BIN);
  const converted = openModel(out);
  try {
    const ids = original.tokenizer.encode(PROMPT, { bos: true });
    assert.deepEqual(logitsOf(out, ids), logitsOf(MODEL_BIN, ids));
    const lines = readFileSync(TINYSTORIES, "utf8").slice(0, 100_000).split("\n").filter((l) => l.length > 0);
    let differ = 0;
    for (const line of [...lines, "Hello wörld 🙂 日本語", "  two  spaces\tand a tab"]) {
      if (JSON.stringify(converted.tokenizer.encode(line, { bos: true })) !== JSON.stringify(original.tokenizer.encode(line, { bos: true }))) differ++;
    }
    assert.equal(differ, 0, `${differ} of ${lines.length + 2} lines tokenize differently`);
  } finally {
    original.close();
    converted.close();
  }
});

test("BOS survives conversion: transformers' template when the source adds BOS, none when a GGUF says add_bos_token = false", () => {
  const dir = tempDir();
  const withBos = join(dir, "with");
  convertModel(MODEL_BIN, withBos, { to: "safetensors" });
  const json = JSON.parse(readFileSync(join(withBos, "tokenizer.json"), "utf8")) as { post_processor: { type: string; single: unknown[] } | null };
  assert.equal(json.post_processor?.type, "TemplateProcessing");
  assert.deepEqual(json.post_processor.single[0], { SpecialToken: { id: "<s>", type_id: 0 } }, "the template starts with BOS, which transformers applies");
  const gguf = join(dir, "with.gguf");
  convertModel(MODEL_BIN, gguf, { to: "gguf" });
  const noBosGguf = rewriteGguf(MODEL_GGUF, join(dir, "nobos.gguf"), (meta) => {
    meta.set("tokenizer.ggml.add_bos_token", { type: GgufValueType.BOOL, value: false });
  });
  const withoutBos = join(dir, "without");
  convertModel(noBosGguf, withoutBos, { to: "safetensors" });
  const without = JSON.parse(readFileSync(join(withoutBos, "tokenizer.json"), "utf8")) as { post_processor: unknown };
  assert.equal(without.post_processor, null);
  for (const [path, adds] of [[MODEL_BIN, true], [MODEL_GGUF, true], [withBos, true], [gguf, true], [noBosGguf, false], [withoutBos, false]] as const) {
    const m = openModel(path);
    try {
      assert.equal(m.tokenizer.addsBos, adds, `${path}: adds BOS`);
      assert.equal(m.tokenizer.encode("Once upon a time")[0] === m.tokenizer.bosId, adds, `${path}: the default encoding`);
    } finally {
      m.close();
    }
  }
  const meta = readGguf(gguf);
  assert.equal(meta.metadata.get("tokenizer.ggml.add_bos_token")?.value, true, "the GGUF written says so, as llama.cpp's converter");
  meta.file.close();
});

test("the converted HF directory means the same to transformers and tokenizers (golden)", () => {
  const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "stories260K_converted_hf.json"), "utf8")) as {
    weights_sha256: string; strings: string[]; ids: number[][]; prompt: number[]; logits: number[];
  };
  const out = join(tempDir(), "hf");
  convertModel(MODEL_BIN, out, { to: "safetensors" });
  assert.equal(sha256(join(out, "model.safetensors")), golden.weights_sha256, "the same weights file as the golden was made from");
  const converted = openModel(out);
  try {
    golden.strings.forEach((s, i) => assert.deepEqual(converted.tokenizer.encode(s, { bos: false }), golden.ids[i], JSON.stringify(s)));
  } finally {
    converted.close();
  }
  const ours = logitsOf(out, golden.prompt);
  assert.ok(scaledError(ours, Float64Array.from(golden.logits)) < 1e-4, `logits vs transformers: ${scaledError(ours, Float64Array.from(golden.logits))}`);
});

test("dtypes: F16 GGUF within half-precision rounding, and back to an F32 directory losslessly", () => {
  const dir = tempDir();
  const ids = loadModel(MODEL_BIN).tokenizer.encode(PROMPT, { bos: true });
  const f16 = join(dir, "f16.gguf");
  convertModel(MODEL_GGUF, f16, { to: "gguf", dtype: "F16" });
  const f16Logits = logitsOf(f16, ids);
  const error = scaledError(f16Logits, logitsOf(MODEL_GGUF, ids));
  assert.ok(error > 0 && error < 1e-2, `F16 logits error ${error}`);
  const back = join(dir, "back");
  convertModel(f16, back, { to: "safetensors", dtype: "F32" });
  assert.deepEqual(logitsOf(back, ids), f16Logits);
  for (const dtype of ["Q8_0", "Q4_0"]) {
    const path = join(dir, `${dtype}.gguf`);
    const r = convertModel(MODEL_BIN, path, { to: "gguf", dtype });
    // stories260K's MLP width (172) is not a multiple of 32: ffn_down falls back to F16, as llama.cpp does.
    assert.deepEqual(r.fallbacks.map((f) => f.tensor), [0, 1, 2, 3, 4].map((l) => `blk.${l}.ffn_down.weight`));
    const gguf = readGguf(path);
    const types = new Set(gguf.tensors.filter((t) => t.dims.length === 2 && !t.name.includes("ffn_down")).map((t) => t.type.name));
    gguf.file.close();
    assert.deepEqual([...types], [dtype]);
    const q = scaledError(logitsOf(path, ids), logitsOf(MODEL_BIN, ids));
    assert.ok(q > 0 && q < (dtype === "Q8_0" ? 0.05 : 0.5), `${dtype} logits error ${q}`);
  }
});

test("an HF directory converts to another dtype with its tokenizer files copied", () => {
  const dir = tempDir();
  const fixture = writeHfLlamaFixture(join(dir, "in"), { dtype: "BF16" });
  const out = join(dir, "out");
  const r = convertModel(fixture.dir, out, { to: "safetensors", dtype: "F32" });
  assert.equal(r.tokenizer, "copied");
  for (const f of fixture.otherFiles) assert.equal(sha256(join(out, f)), sha256(join(fixture.dir, f)), f);
  const ids = [1, 37, 402, 11, 250, 99];
  assert.deepEqual(logitsOf(out, ids), logitsOf(fixture.dir, ids), "BF16 -> F32 is lossless");
});

test("convert refuses what it cannot write, naming the option or file, and writes nothing", () => {
  const dir = tempDir();
  const fixture = writeHfLlamaFixture(join(dir, "in"));
  assert.throws(() => convertModel(fixture.dir, join(dir, "x.gguf"), { to: "gguf" }), (err: unknown) => err instanceof UnsupportedError && /cannot be written as a GGUF vocabulary/.test(err.message));
  assert.equal(existsSync(join(dir, "x.gguf")), false);
  const cases: [string[], RegExp][] = [
    [["convert", MODEL_BIN, join(dir, "a.gguf")], /missing --to/],
    [["convert", MODEL_BIN, "--to", "onnx", join(dir, "a.gguf")], /--to onnx is not a known target/],
    [["convert", MODEL_BIN, "--to", "safetensors", "--dtype", "Q4_0", join(dir, "a")], /--dtype Q4_0 cannot be written to safetensors/],
    [["convert", MODEL_BIN, "--to", "gguf", "--dtype", "Q3_K", join(dir, "a.gguf")], /--dtype Q3_K cannot be written to gguf/],
    [["convert", MODEL_BIN, "--to", "gguf", MODEL_BIN], /is the input model/],
    [["convert", MODEL_BIN, "--to", "gguf", fixture.dir], /already exists/],
  ];
  const before = sha256(MODEL_BIN);
  for (const [argv, message] of cases) {
    const r = runCli(argv);
    assert.notEqual(r.status, 0, argv.join(" "));
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
  }
  assert.equal(sha256(MODEL_BIN), before);
  assert.deepEqual(readdirSync(dir).sort(), ["in"]);
});

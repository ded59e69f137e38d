// Bad input: each case exits non-zero with one clear message naming the file or option,
// and writes nothing.

import assert from "node:assert/strict";
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { GGML_TYPE_BY_NAME, GgufValueType, readGguf } from "../src/formats/gguf.js";
import { CheckpointError } from "../src/errors.js";
import { MODEL_BIN, MODEL_GGUF, TINYSTORIES, TOKENIZER, rewriteGguf, runCli, sha256, tempDir } from "./helpers.js";

/** Runs the CLI in a fresh folder and checks: non-zero exit, one error line matching `message`, no new files. */
function expectFailure(args: (dir: string) => string[], message: RegExp, setup?: (dir: string) => void): void {
  const dir = tempDir();
  setup?.(dir);
  const before = readdirSync(dir).sort();
  const inputHash = sha256(MODEL_BIN);
  const run = runCli(args(dir));
  assert.notEqual(run.status, 0, `expected failure, got success:\n${run.stdout}`);
  const lines = run.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one message expected, got:\n${run.stderr}`);
  assert.match(lines[0]!, message);
  assert.doesNotMatch(run.stderr, /internal error|at .*\.js:\d+/, "a typed error, not a crash");
  assert.deepEqual(readdirSync(dir).sort(), before, "nothing written");
  assert.equal(sha256(MODEL_BIN), inputHash, "input untouched");
}

test("a llama2.c checkpoint whose size does not match its header", () => {
  expectFailure((d) => ["score", join(d, "m.bin"), "--tokenizer", TOKENIZER, "--data", TINYSTORIES, "--json", join(d, "out.json")],
    /m\.bin: the llama2\.c header implies 1056540 bytes but the file has 1056500/, (d) => {
      writeFileSync(join(d, "m.bin"), readFileSync(MODEL_BIN).subarray(0, 1056500));
    });
  expectFailure((d) => ["inspect", join(d, "m.bin"), "--tokenizer", TOKENIZER], /implies 1056540 bytes but the file has 1056544/, (d) => {
    writeFileSync(join(d, "m.bin"), Buffer.concat([readFileSync(MODEL_BIN), Buffer.alloc(4)]));
  });
});

test("a truncated GGUF, cut inside the header, metadata, tensor index and data", () => {
  const full = readFileSync(MODEL_GGUF);
  for (const cut of [10, 100, 6000, 14000, 14176 + 100, full.length - 1]) {
    expectFailure((d) => ["prune", join(d, "m.gguf"), "--out", join(d, "out.gguf"), "--layers", "1"], /m\.gguf: .*(needs|truncated|remain)/, (d) => {
      writeFileSync(join(d, "m.gguf"), full.subarray(0, cut));
    });
  }
});

test("a GGUF with an unknown tensor type", () => {
  expectFailure((d) => ["inspect", join(d, "m.gguf")], /m\.gguf: tensor output_norm\.weight has unknown ggml type 99/, (d) => {
    rewriteGguf(MODEL_GGUF, join(d, "m.gguf"), (_, tensors) => {
      tensors[1]!.type = { id: 99, name: "X", blockSize: 1, blockBytes: 4 };
    });
  });
});

test("a GGUF with an unknown architecture lists the supported ones", () => {
  expectFailure((d) => ["score", join(d, "m.gguf"), "--data", TINYSTORIES], /m\.gguf: architecture "mamba9" is not supported yet \(supported: llama, qwen2, qwen3, gemma, gemma2, gemma3, phi3, gpt2, baichuan, mamba, mamba2, rwkv6, rwkv7\)/, (d) => {
    rewriteGguf(MODEL_GGUF, join(d, "m.gguf"), (meta) => {
      meta.set("general.architecture", { type: GgufValueType.STRING, value: "mamba9" });
    });
  });
});

test("a tokenizer whose vocabulary size differs from the model's", () => {
  expectFailure((d) => ["score", MODEL_BIN, "--tokenizer", join(d, "tok.bin"), "--data", TINYSTORIES], /tok\.bin has 300 tokens but the model's vocabulary has 512/, (d) => {
    // Keep the first 300 tokens of tok512.bin.
    const bytes = readFileSync(TOKENIZER);
    let pos = 4;
    for (let i = 0; i < 300; i++) pos += 8 + bytes.readInt32LE(pos + 4);
    writeFileSync(join(d, "tok.bin"), bytes.subarray(0, pos));
  });
});

test("--remove K with K >= the number of layers", () => {
  expectFailure((d) => ["prune", MODEL_BIN, "--out", join(d, "o.bin"), "--remove", "5", "--data", TINYSTORIES], /--remove 5: must be an integer from 1 to 4 \(the model has 5 layers\)/);
});

test("duplicate or out-of-range --layers", () => {
  expectFailure((d) => ["prune", MODEL_BIN, "--out", join(d, "o.bin"), "--layers", "1,1"], /--layers: layer 1 is listed twice/);
  expectFailure((d) => ["prune", MODEL_GGUF, "--out", join(d, "o.gguf"), "--layers", "2,7"], /--layers: layer 7 is out of range; the model has layers 0\.\.4/);
  expectFailure(() => ["eval", MODEL_BIN, "--ppl", TINYSTORIES, "--skip", "9"], /--skip: layer 9 is out of range/);
});

test("an empty data file, and one with fewer tokens than one window", () => {
  expectFailure((d) => ["score", MODEL_BIN, "--data", join(d, "empty.txt"), "--json", join(d, "o.json")], /empty\.txt contains no text/, (d) => writeFileSync(join(d, "empty.txt"), "\n \n"));
  expectFailure((d) => ["eval", MODEL_BIN, "--ppl", join(d, "short.txt"), "--json", join(d, "o.json")], /short\.txt has \d+ tokens, fewer than one window of 512 .*--seq-len/, (d) => writeFileSync(join(d, "short.txt"), "Once upon a time."));
  expectFailure((d) => ["prune", MODEL_BIN, "--out", join(d, "o.bin"), "--remove", "1", "--data", join(d, "short.txt")], /short\.txt has \d+ tokens, fewer than one window/, (d) => writeFileSync(join(d, "short.txt"), "Once upon a time."));
});

test("--out equal to the input, or an existing file without --force", () => {
  expectFailure((d) => ["prune", join(d, "m.bin"), "--out", join(d, "m.bin"), "--layers", "1"], /--out .*m\.bin is the input model; refusing to overwrite it/, (d) => copyFileSync(MODEL_BIN, join(d, "m.bin")));
  expectFailure((d) => ["prune", join(d, "m.bin"), "--out", join(d, ".", "m.bin"), "--layers", "1", "--force"], /is the input model/, (d) => copyFileSync(MODEL_BIN, join(d, "m.bin")));
  expectFailure((d) => ["prune", MODEL_BIN, "--out", join(d, "x.bin"), "--layers", "1"], /x\.bin already exists .*--force/, (d) => writeFileSync(join(d, "x.bin"), "keep me"));
});

test("bad option values name the option", () => {
  expectFailure(() => ["score", MODEL_BIN, "--data", TINYSTORIES, "--seq-len", "abc"], /--seq-len "abc" is not an integer/);
  expectFailure(() => ["score", MODEL_BIN, "--data", TINYSTORIES, "--seq-len", "4096"], /--seq-len 4096 is longer than the model's context of 512/);
  expectFailure(() => ["score", MODEL_BIN, "--data", TINYSTORIES, "--seq-len", "64", "--stride", "65"], /--stride 65 must be between 1 and --seq-len \(64\)/);
  expectFailure(() => ["score", MODEL_BIN], /missing --data FILE/);
  expectFailure(() => ["score", MODEL_BIN, "--data", TINYSTORIES, "--bogus"], /Unknown option '--bogus'/);
  expectFailure(() => ["frobnicate"], /unknown command "frobnicate".*commands: demo, inspect/);
  expectFailure(() => ["score", "/nonexistent/model.bin", "--data", TINYSTORIES], /model file not found: \/nonexistent\/model\.bin/);
  expectFailure(() => ["score", MODEL_BIN, "--data", TINYSTORIES, "--threads", "0"], /--threads 0 must be between 1 and 1024/);
  expectFailure(() => ["score", MODEL_BIN, "--data", TINYSTORIES, "--threads", "two"], /--threads "two" is not an integer/);
  expectFailure(() => ["eval", MODEL_BIN, "--ppl", TINYSTORIES, "--backend", "gpu"], /--backend "gpu" is not a backend \(choose one of: auto, cuda, onnx, wasm, reference\)/);
});

test("size fields are checked against the file size before anything is allocated", () => {
  // A GGUF header claiming 2^40 metadata entries, and one whose first key claims a 2^50-byte string.
  const dir = tempDir();
  const header = Buffer.alloc(24);
  header.writeUInt32LE(0x46554747, 0);
  header.writeUInt32LE(3, 4);
  header.writeBigUInt64LE(0n, 8);
  header.writeBigUInt64LE(1n << 40n, 16);
  writeFileSync(join(dir, "count.gguf"), Buffer.concat([header, Buffer.alloc(64)]));
  const header2 = Buffer.from(header);
  header2.writeBigUInt64LE(1n, 16);
  const key = Buffer.alloc(8);
  key.writeBigUInt64LE(1n << 50n);
  writeFileSync(join(dir, "string.gguf"), Buffer.concat([header2, key, Buffer.alloc(64)]));
  const started = Date.now();
  assert.throws(() => readGguf(join(dir, "count.gguf")), (e: unknown) => e instanceof CheckpointError && /metadata \(1099511627776 entries\) needs/.test(e.message));
  assert.throws(() => readGguf(join(dir, "string.gguf")), (e: unknown) => e instanceof CheckpointError && /metadata key #0 needs 1125899906842624 bytes/.test(e.message));
  assert.ok(Date.now() - started < 1000);
  assert.ok(GGML_TYPE_BY_NAME.get("Q8_0"));
});

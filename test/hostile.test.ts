// Hostile files (issue #14): each crafted checkpoint or config is refused in one line with exit 1,
// quickly and within a small memory budget: never a hang, a crash or an internal error.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CheckpointError, DataError, TokenizerError } from "../src/errors.js";
import { fileSystemError, RandomAccessFile, readWholeFile } from "../src/formats/file.js";
import { GgufValueType } from "../src/formats/gguf.js";
import { jsonTooDeepAt, parseJson } from "../src/formats/json.js";
import { llama2cFileBytes, llama2cLayout, readLlama2c } from "../src/formats/llama2c.js";
import { openModel } from "../src/load.js";
import { checkTokenizerJsonShape } from "../src/tokenizer/tokenizerJsonShape.js";
import { repoRoot } from "../src/shared.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { MODEL_BIN, MODEL_GGUF, TOKENIZER, rewriteGguf, runCli, tempDir } from "./helpers.js";

interface Refusal {
  status: number;
  line: string;
  ms: number;
  peakKb: number;
}

let preload: string | undefined;

/** A preload script that makes a node process print its peak RSS (VmHWM, kB) on exit: no external tool needed. */
function peakPreload(): string {
  if (preload === undefined) {
    preload = join(tempDir(), "peak.cjs");
    writeFileSync(preload, `process.on("exit", () => {
  const m = /VmHWM:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/status", "utf8"));
  process.stdout.write("\\nPEAK " + (m ? m[1] : 0) + "\\n");
});
`);
  }
  return preload;
}

/** Runs `shortgpt inspect` with a 10 s limit and reports the exit code, the one stderr line, the time and the peak RSS. */
function inspect(path: string): Refusal {
  const started = Date.now();
  const cli = join(repoRoot(), "dist", "src", "cli", "main.js");
  const r = spawnSync(process.execPath, ["--require", peakPreload(), cli, "inspect", path], { encoding: "utf8", timeout: 10_000 });
  const peakKb = Number(/PEAK (\d+)/.exec(r.stdout)?.[1] ?? 0);
  assert.equal(r.signal, null, `inspect ${path} was killed (${r.signal}): a hang`);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line expected:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /internal error|RangeError|\n\s+at /);
  return { status: r.status ?? -1, line: lines[0]!, ms: Date.now() - started, peakKb };
}

function expectRefused(path: string, message: RegExp): Refusal {
  const r = inspect(path);
  assert.equal(r.status, 1, r.line);
  assert.match(r.line, message);
  assert.ok(r.ms < 5000, `took ${r.ms} ms`);
  assert.ok(r.peakKb < 400_000, `peak RSS ${r.peakKb} kB`);
  return r;
}

/** A GGUF with one metadata entry holding arrays nested `depth` deep (written by hand: the writer would recurse too). */
function nestedArrayGguf(path: string, depth: number): void {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0x46554747, 0);
  head.writeUInt32LE(3, 4);
  head.writeBigUInt64LE(0n, 8); // tensors
  head.writeBigUInt64LE(1n, 16); // metadata entries
  const key = Buffer.from("x.nested");
  const keyLength = Buffer.alloc(8);
  keyLength.writeBigUInt64LE(BigInt(key.length));
  const type = Buffer.alloc(4);
  type.writeUInt32LE(GgufValueType.ARRAY);
  const level = Buffer.alloc(12); // item type ARRAY, one item
  level.writeUInt32LE(GgufValueType.ARRAY, 0);
  level.writeBigUInt64LE(1n, 4);
  const innermost = Buffer.alloc(13); // item type UINT8, one item
  innermost.writeBigUInt64LE(1n, 4);
  writeFileSync(path, Buffer.concat([head, keyLength, key, type, ...new Array<Buffer>(depth).fill(level), innermost]));
}

function hfFixture(): string {
  const dir = join(tempDir(), "model");
  writeHfLlamaFixture(dir);
  return dir;
}

function editConfig(dir: string, edit: (config: Record<string, unknown>) => string | void): void {
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  const text = edit(config);
  writeFileSync(join(dir, "config.json"), text ?? JSON.stringify(config));
}

test("a GGUF whose metadata nests arrays 100,000 deep", () => {
  const path = join(tempDir(), "nested.gguf");
  nestedArrayGguf(path, 100_000);
  expectRefused(path, /nested\.gguf: metadata x\.nested(\[0\]){8} nests arrays more than 8 deep/);
});

/** A GGUF with one metadata entry `x.big`: the given value bytes, then the file grown (sparse) to `size` bytes. */
function sparseGguf(path: string, value: Buffer, size: number): void {
  const head = Buffer.alloc(24);
  head.writeUInt32LE(0x46554747, 0);
  head.writeUInt32LE(3, 4);
  head.writeBigUInt64LE(0n, 8);
  head.writeBigUInt64LE(1n, 16);
  const key = Buffer.from("x.big");
  const keyLength = Buffer.alloc(8);
  keyLength.writeBigUInt64LE(BigInt(key.length));
  writeFileSync(path, Buffer.concat([head, keyLength, key, value]));
  truncateSync(path, size);
}

test("a GGUF array or string whose length a large (sparse) file could back is refused before it is read", () => {
  const dir = tempDir();
  const array = Buffer.alloc(16); // type ARRAY, item type UINT8, 5e9 items
  array.writeUInt32LE(GgufValueType.ARRAY, 0);
  array.writeUInt32LE(GgufValueType.UINT8, 4);
  array.writeBigUInt64LE(5_000_000_000n, 8);
  sparseGguf(join(dir, "array.gguf"), array, 6_000_000_000);
  expectRefused(join(dir, "array.gguf"), /array\.gguf: metadata x\.big is an array of 5000000000 items, over the 67108864/);
  const string = Buffer.alloc(12); // type STRING, 7e8 bytes
  string.writeUInt32LE(GgufValueType.STRING, 0);
  string.writeBigUInt64LE(700_000_000n, 4);
  sparseGguf(join(dir, "string.gguf"), string, 800_000_000);
  expectRefused(join(dir, "string.gguf"), /string\.gguf: metadata x\.big is a string of 700000000 bytes, over the 67108864/);
});

test("a config.json nested thousands of levels deep", () => {
  const dir = hfFixture();
  // Where the value is a wrong type, the message used to JSON.stringify it and overflow the stack.
  editConfig(dir, (c) => JSON.stringify({ ...c, hidden_size: null }).replace('"hidden_size":null', `"hidden_size":${"[".repeat(10_000)}${"]".repeat(10_000)}`));
  expectRefused(dir, /config\.json: config\.json is not valid JSON \(nesting deeper than 64 levels at position \d+\)/);
  assert.equal(jsonTooDeepAt(`{"a":"[[[[[["}`, 2), -1, "brackets inside strings do not count");
  assert.equal(jsonTooDeepAt(`[[[1]]]`, 2), 2);
  assert.deepEqual(parseJson(`{"a":[{"b":"\\"]]"}]}`, 3), { a: [{ b: '"]]' }] });
});

test("a config.json with num_hidden_layers 1e9", () => {
  const dir = hfFixture();
  editConfig(dir, (c) => {
    c["num_hidden_layers"] = 1e9;
    delete c["layer_types"]; // else refused for another reason
  });
  expectRefused(dir, /config\.json: config nLayers is 1000000000, expected an integer from 1 to 4096/);
  // Within the bound but beyond the file: refused before a tensor list is built.
  editConfig(dir, (c) => {
    c["num_hidden_layers"] = 4000;
  });
  expectRefused(dir, /model: the config says 4000 layers, which need 36000 layer tensors, but the checkpoint holds 39 tensors/);
});

test("a llama2.c header whose n_layers wraps around, or claims 2^24 layers", () => {
  const dir = tempDir();
  copyFileSync(TOKENIZER, join(dir, "tok512.bin"));
  const bytes = readFileSync(MODEL_BIN);
  for (const [name, value] of [["wrap", 0xfffffffb], ["big", 1 << 24], ["justbelow", (1 << 24) - 1]] as const) {
    const b = Buffer.from(bytes);
    b.writeUInt32LE(value, 8); // n_layers is the third int32
    writeFileSync(join(dir, `${name}.bin`), b);
  }
  expectRefused(join(dir, "wrap.bin"), /wrap\.bin: llama2\.c header field n_layers is -5/);
  expectRefused(join(dir, "big.bin"), /big\.bin: the llama2\.c header implies \d+ bytes but the file has 1056540 \(the header does not fit this file/);
  expectRefused(join(dir, "justbelow.bin"), /justbelow\.bin: the llama2\.c header implies/);
});

test("llama2cFileBytes agrees with the tensor layout for both versions and both classifiers", () => {
  const { header } = readLlama2c(MODEL_BIN);
  for (const version of [0, 1] as const) {
    for (const sharedClassifier of [true, false]) {
      const h = { ...header, version, sharedClassifier, nKvHeads: header.nHeads / (header.nHeads % 2 === 0 ? 2 : 1) };
      const layout = llama2cLayout(h);
      const last = layout[layout.length - 1]!;
      assert.equal(llama2cFileBytes(h), last.offset + last.byteLength, `version ${version}, shared ${sharedClassifier}`);
    }
  }
});

test("model.safetensors that is a folder, and other file-system surprises", () => {
  const dir = hfFixture();
  rmSync(join(dir, "model.safetensors"));
  mkdirSync(join(dir, "model.safetensors"));
  expectRefused(dir, /model\/model\.safetensors is a folder, not a file/);

  const other = tempDir();
  const fifo = join(other, "pipe.gguf");
  assert.equal(spawnSync("mkfifo", [fifo]).status, 0);
  expectRefused(fifo, /pipe\.gguf is a named pipe \(FIFO\), not a file/); // opened without blocking

  symlinkSync(join(other, "loop-b"), join(other, "loop-a"));
  symlinkSync(join(other, "loop-a"), join(other, "loop-b"));
  expectRefused(join(other, "loop-a"), /loop-a is a loop of symbolic links/);

  const hf = hfFixture();
  rmSync(join(hf, "config.json"));
  mkdirSync(join(hf, "config.json"));
  expectRefused(hf, /config\.json is a folder, not a file/);

  // Permission denied cannot be staged when the tests run as root; the mapping is what matters.
  const denied = fileSystemError(Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" }), "/x/model.gguf");
  assert.ok(denied instanceof CheckpointError);
  assert.equal(denied.message, "/x/model.gguf cannot be read: permission denied");
  const tokenizer = fileSystemError(Object.assign(new Error("EACCES"), { code: "EACCES" }), "/x/tok.bin", TokenizerError);
  assert.ok(tokenizer instanceof TokenizerError);
  const plain = new Error("not a file-system error");
  assert.equal(fileSystemError(plain, "/x"), plain);
  assert.throws(() => readWholeFile(other, DataError), (e: unknown) => e instanceof DataError && /is a folder, not a file/.test(e.message));
});

test("a GGUF whose bos_token_id is 99999 with 512 tokens", () => {
  const path = join(tempDir(), "bos.gguf");
  rewriteGguf(MODEL_GGUF, path, (meta) => {
    meta.set("tokenizer.ggml.bos_token_id", { type: GgufValueType.UINT32, value: 99999 });
  });
  expectRefused(path, /bos\.gguf: metadata tokenizer\.ggml\.bos_token_id is 99999, outside the 512 tokens \(0\.\.511\)/);
  // -1 as a u32 means "none" for a token the tokenizer does not use (stories260K.gguf's separator), not for BOS.
  const none = join(tempDir(), "none.gguf");
  rewriteGguf(MODEL_GGUF, none, (meta) => {
    meta.set("tokenizer.ggml.padding_token_id", { type: GgufValueType.UINT32, value: 0xffffffff });
  });
  assert.equal(inspect(none).status, 0);
  const eos = rewriteGguf(MODEL_GGUF, join(tempDir(), "eos.gguf"), (meta) => {
    meta.set("tokenizer.ggml.eos_token_id", { type: GgufValueType.UINT32, value: 0xffffffff });
  });
  expectRefused(eos, /eos\.gguf: metadata tokenizer\.ggml\.eos_token_id is 4294967295, outside the 512 tokens/);
});

test("the path of a valid HF directory's model.safetensors opens as that directory", () => {
  const dir = hfFixture();
  const r = inspect(join(dir, "model.safetensors"));
  assert.equal(r.status, 0, r.line);
  const opened = openModel(join(dir, "model.safetensors"));
  try {
    assert.equal(opened.format, "hf");
    assert.equal(opened.path, dir);
    assert.equal(opened.config.nLayers, 4);
  } finally {
    opened.close();
  }
  // Named by its weights file, the folder is still the input: --force cannot replace it.
  for (const args of [["prune", join(dir, "model.safetensors"), "--out", dir, "--layers", "1", "--force"], ["convert", join(dir, "model.safetensors"), "--to", "safetensors", dir, "--force"]]) {
    const run = runCli(args);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /is the input model; refusing to overwrite it/);
  }
  const intact = openModel(dir);
  intact.close();
  assert.equal(intact.config.nLayers, 4, "the input is intact");
  // Without config.json beside it, the message says what is missing.
  const lone = join(tempDir(), "model.safetensors");
  copyFileSync(join(dir, "model.safetensors"), lone);
  expectRefused(lone, /model\.safetensors is a safetensors file without config\.json beside it \(pass the folder of a Hugging Face checkpoint/);
});

test("a message stays one readable line whatever the file put in it", () => {
  const e = new CheckpointError(`m.gguf: architecture "${"x".repeat(1_000_000)}" is not supported\n  at line 2`, { hint: "see\nthe list" });
  const line = e.describe();
  assert.doesNotMatch(line, /\n/);
  assert.ok(line.length < 400, `${line.length} characters`);
  assert.match(line, /^m\.gguf: architecture "x{119}\.\.\.\(1000002 characters\) is not supported at line 2 \(see the list\)$/);
});

test("a file that becomes shorter while it is read is a typed error", () => {
  const path = join(tempDir(), "m.gguf");
  copyFileSync(MODEL_GGUF, path);
  const file = new RandomAccessFile(path);
  try {
    truncateSync(path, 1000); // another process rewrites the file after it was opened
    assert.throws(() => file.read(500, 4000, "tensor x"), (e: unknown) => e instanceof CheckpointError && /m\.gguf: unexpected end of file while reading tensor x/.test(e.message) && /became shorter/.test(e.describe()));
  } finally {
    file.close();
  }
});

test("control characters and very long lines from a file are defused in the message", () => {
  const name = `blk.0\u001b[31m${"x y".repeat(3000)}`;
  const line = new CheckpointError(`m.gguf: tensor ${name} is missing`, { hint: "re-convert it" }).describe();
  assert.doesNotMatch(line, /\u001b/);
  assert.ok(line.length <= 1000, `${line.length} characters`);
  assert.match(line, /^m\.gguf: tensor blk\.0\?\[31mx yx y.* \.\.\.\(\d+ characters\)\.\.\. .*is missing \(re-convert it\)$/);
});

test("tokenizer.json parts the tokenizer library would iterate or loop on are checked first (found by the fuzzer)", () => {
  const base = (): Record<string, unknown> => ({
    added_tokens: [{ id: 1, content: "<s>" }],
    normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "\u2581" }, { type: "Replace", pattern: { String: " " }, content: "\u2581" }] },
    decoder: { type: "Sequence", decoders: [{ type: "Strip", content: " ", start: 1, stop: 0 }] },
    model: { type: "BPE", vocab: { a: 0, "<s>": 1 }, merges: [] },
  });
  const refused = (edit: (j: Record<string, unknown>) => void, message: RegExp): void => {
    const json = base();
    edit(json);
    assert.throws(() => checkTokenizerJsonShape(json, 512, "tokenizer.json"), (e: unknown) => e instanceof TokenizerError && message.test(e.message));
  };
  checkTokenizerJsonShape(base(), 512, "tokenizer.json");
  refused((j) => (j["added_tokens"] = "x".repeat(1000)), /added_tokens, expected an array/);
  refused((j) => ((j["added_tokens"] as { content: string }[])[0]!.content = "x".repeat(1 << 20)), /added_tokens\[0\]\.content, a token of 1048576 characters/);
  refused((j) => ((j["added_tokens"] as { id: number }[])[0]!.id = 512), /added_tokens\[0\] has id 512, outside the model's 512 tokens/);
  refused((j) => (((j["normalizer"] as { normalizers: Record<string, unknown>[] }).normalizers[1]!)["content"] = new Array(100_000).fill(0)), /normalizer\.normalizers\[1\]\.content, expected a string/);
  refused((j) => (((j["decoder"] as { decoders: Record<string, unknown>[] }).decoders[0]!)["start"] = 1e9), /decoder\.decoders\[0\]\.start, expected a small number/);
  refused((j) => ((j["normalizer"] as Record<string, unknown>)["normalizers"] = "abc"), /normalizer\.normalizers, expected a list of steps/);
  refused((j) => ((j["model"] as Record<string, unknown>)["vocab"] = { a: 0, b: 9999 }), /model\.vocab entry "b" has id 9999/);
  refused((j) => ((j["model"] as Record<string, unknown>)["end_of_word_suffix"] = new Array(100_000).fill(0)), /model\.end_of_word_suffix, expected a string, number, boolean or null/);
  // SentencePiece's precompiled map is long by nature.
  const precompiled = base();
  precompiled["normalizer"] = { type: "Precompiled", precompiled_charsmap: "A".repeat(300_000) };
  checkTokenizerJsonShape(precompiled, 512, "tokenizer.json");
});

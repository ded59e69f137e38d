// Hugging Face checkpoints: the safetensors reader and writer (round trip, hostile files), a
// tiny random Llama directory against transformers (test/oracle/hf_llama_oracle.py golden), and
// layer removal on a sharded directory.

import assert from "node:assert/strict";
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { test } from "node:test";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { perplexityWindows } from "../src/data/windows.js";
import { perplexity } from "../src/eval/perplexity.js";
import { streamingPerplexity } from "../src/models/streaming.js";
import { CheckpointError, OutputError, ShortgptError, UnsupportedError } from "../src/errors.js";
import { type GgufValue, GgufValueType } from "../src/formats/gguf.js";
import { openHfDirectory } from "../src/formats/hfDirectory.js";
import { convertModel } from "../src/convert/convertModel.js";
import {
  findDuplicateJsonKey, readSafetensors, readTensorBytes, readTensorChunks, safetensorsByteLength, type SafetensorsTensorToWrite, writeSafetensors,
} from "../src/formats/safetensors.js";
import { resolveHfGpt2Config } from "../src/models/gpt2.js";
import { HF_LLAMA_NAMES, hfLlamaTensorNames, parseHfLlamaConfig, resolveHfLlamaConfig } from "../src/models/hfLlamaConfig.js";
import type { LlamaModel } from "../src/models/llama.js";
import { removeHfLayers } from "../src/prune/removeLayersHf.js";
import { loadModel, openModel } from "../src/load.js";
import { repoRoot } from "../src/shared.js";
import { decodeF16 } from "../src/tensor/dtype.js";
import { f32ToBf16Bits, f32ToF16Bits } from "../src/tensor/half.js";
import { type FixtureDtype, type FixtureFamily, writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { rewriteGguf, scaledError, sha256, tempDir, TOKENIZER } from "./helpers.js";

interface GoldenCase {
  name: string;
  config: Record<string, unknown>;
  weight_sha256: Record<string, string>;
  /**
   * Every position's logits (f32), or the last position's (logits_last) with the final normed
   * hidden state at every position (final_normed) for the other cases: the classifier is one
   * matmul, checked in full on f32, and the file stays small. Round-trip cases ("-rt") keep only logits_last.
   */
  logits?: number[];
  logits_last?: number[];
  residual?: number[][];
  final_normed?: number[];
  logits_f64_last?: number[];
}
interface Golden {
  transformers_version: string;
  ids: number[];
  cases: GoldenCase[];
  pruned: (GoldenCase & { removed: number[] })[];
}
/** The oracle stores float arrays as base64 little-endian {"f32": ...} or {"f64": ...}: decoded to numbers here. */
function decodeFloats(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  const { f32, f64 } = value as { f32?: unknown; f64?: unknown };
  const bytes = typeof f32 === "string" ? Buffer.from(f32, "base64") : typeof f64 === "string" ? Buffer.from(f64, "base64") : undefined;
  if (!bytes) return value;
  const copy = new Uint8Array(bytes); // aligned
  return Array.from(typeof f32 === "string" ? new Float32Array(copy.buffer) : new Float64Array(copy.buffer));
}
const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "hf_llama_tiny.json"), "utf8"), decodeFloats) as Golden;

/** Loads a Llama HF directory the way the CLI does (open, resolve config, strict weights). */
function loadHfLlama(dir: string): LlamaModel {
  return loadModel(dir).model;
}

/** max over elements of |got - want| / max(|want|, floor). */
function elementError(got: ArrayLike<number>, want: ArrayLike<number>, floor: number): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / Math.max(Math.abs(want[i]!), floor));
  return worst;
}

function hashDir(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) out[f] = sha256(join(dir, f));
  return out;
}

test("every family written back as a Hugging Face directory (HF -> GGUF -> HF by shortgpt convert) loads in transformers with the same logits", (t) => {
  const dir = tempDir();
  const cases = golden.cases.filter((c) => c.name.endsWith("-rt"));
  assert.deepEqual(cases.map((c) => c.name), ["f32-rt", "qwen2-rt", "qwen3-rt", "gemma-rt", "gpt2-rt"]);
  const vocab = 512;
  for (const c of cases) {
    const source = c.name.slice(0, -3);
    const input = writeHfLlamaFixture(join(dir, source), { family: FIXTURE_FAMILY[source] ?? "llama" }).dir;
    convertModel(input, join(dir, `${source}.gguf`), { to: "gguf", dtype: "F32", tokenizer: TOKENIZER });
    const output = join(dir, c.name);
    convertModel(join(dir, `${source}.gguf`), output, { to: "safetensors", dtype: "F32" });
    // The very directory transformers loaded (no missing or unexpected keys) when the golden was made.
    assert.deepEqual(JSON.parse(readFileSync(join(output, "config.json"), "utf8")), c.config, `${c.name}: config.json`);
    assert.deepEqual(Object.fromEntries(readdirSync(output).filter((f) => f.endsWith(".safetensors")).map((f) => [f, sha256(join(output, f))])), c.weight_sha256, `${c.name}: weights`);
    const ours = loadModel(output).model.forward(golden.ids).logits;
    const last = ours.subarray((golden.ids.length - 1) * vocab);
    const err = scaledError(last, c.logits_last!);
    t.diagnostic(`${c.name}: last-position logits vs transformers, max|diff|/max|want| = ${err.toExponential(2)}`);
    assert.ok(err <= 1e-5, `${c.name}: ${err}`);
    assert.ok(scaledError(ours, loadModel(input).model.forward(golden.ids).logits) < 1e-9, `${c.name}: the same model as the fixture`);
  }
});

// ---------------------------------------------------------------------------------------------
// safetensors: round trip

const f32Bytes = (values: number[]): Uint8Array => new Uint8Array(new Float32Array(values).buffer);

function sampleTensors(): SafetensorsTensorToWrite[] {
  const big = new Uint8Array(3000);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
  const i64 = new BigInt64Array([-1n, 2n ** 40n, 3n]);
  return [
    { name: "z.f32", dtype: "F32", shape: [2, 2], byteLength: 16, bytes: () => f32Bytes([1, -2, 3.5, 1e-30]) },
    { name: "a.bf16", dtype: "BF16", shape: [3], byteLength: 6, bytes: () => new Uint8Array([0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40]) },
    { name: "m.i64", dtype: "I64", shape: [3], byteLength: 24, bytes: () => new Uint8Array(i64.buffer) },
    { name: "b.bool", dtype: "BOOL", shape: [1, 3], byteLength: 3, bytes: () => new Uint8Array([1, 0, 1]) },
    { name: "c.f4", dtype: "F4", shape: [6], byteLength: 3, bytes: () => new Uint8Array([0x12, 0x34, 0x56]) },
    { name: "s.scalar", dtype: "F64", shape: [], byteLength: 8, bytes: () => new Uint8Array(new Float64Array([Math.PI]).buffer) },
    { name: "e.empty", dtype: "F16", shape: [0, 5], byteLength: 0, bytes: () => new Uint8Array(0) },
    // Chunked source, uneven chunk sizes.
    { name: "u.u8", dtype: "U8", shape: [3000], byteLength: 3000, bytes: () => [big.subarray(0, 1), big.subarray(1, 1000), big.subarray(1000)] },
  ];
}

test("safetensors: write then read gives the same tensors, metadata, sorted names and an 8-aligned data section", () => {
  const dir = tempDir();
  const path = join(dir, "t.safetensors");
  const tensors = sampleTensors();
  const result = writeSafetensors(path, tensors, { format: "pt", note: "ünïcode ✓" });
  const st = readSafetensors(path);
  try {
    assert.equal(st.dataOffset % 8, 0);
    assert.equal(st.dataOffset, 8 + result.headerLength);
    assert.deepEqual(st.metadata, { format: "pt", note: "ünïcode ✓" });
    const sortedNames = tensors.map((t) => t.name).sort();
    assert.deepEqual([...st.tensors].sort((a, b) => a.begin - b.begin || a.name.localeCompare(b.name)).map((t) => t.name), sortedNames, "data in name order");
    for (const t of tensors) {
      const info = st.byName.get(t.name)!;
      assert.equal(info.dtype, t.dtype);
      assert.deepEqual(info.shape, t.shape);
      const src = t.bytes();
      const want = Buffer.concat(src instanceof Uint8Array ? [src] : [...src]);
      assert.deepEqual(readTensorBytes(st, t.name), want, t.name);
      assert.deepEqual(Buffer.concat([...readTensorChunks(st, t.name, 7)]), want, `${t.name} in 7-byte chunks`);
    }
    // The header is space-padded JSON.
    const raw = readFileSync(path);
    const header = raw.subarray(8, st.dataOffset).toString("utf8");
    assert.match(header, /^\{.*\} *$/s);
  } finally {
    st.file.close();
  }
  // Deterministic: the same input gives the same bytes.
  const again = join(dir, "again.safetensors");
  writeSafetensors(again, sampleTensors(), { note: "ünïcode ✓", format: "pt" });
  assert.equal(sha256(again), sha256(path));
});

test("safetensors: the writer refuses wrong sizes and existing files", () => {
  const dir = tempDir();
  const bad = (tensors: SafetensorsTensorToWrite[], re: RegExp): void => {
    const path = join(dir, `bad-${Math.random()}.safetensors`);
    assert.throws(() => writeSafetensors(path, tensors), (e: unknown) => e instanceof CheckpointError && re.test(e.message));
  };
  bad([{ name: "x", dtype: "F32", shape: [3], byteLength: 16, bytes: () => new Uint8Array(16) }], /tensor x: F32 \[3\] needs 12 bytes, got 16/);
  bad([{ name: "x", dtype: "F4", shape: [3], byteLength: 2, bytes: () => new Uint8Array(2) }], /tensor x: F4 \[3\] needs a non-integral/);
  bad([{ name: "x", dtype: "F32", shape: [2], byteLength: 8, bytes: () => [new Uint8Array(4)] }], /tensor x supplied 4 bytes, expected 8/);
  bad([{ name: "x", dtype: "F32", shape: [2], byteLength: 8, bytes: () => [new Uint8Array(8), new Uint8Array(1)] }], /tensor x supplied more than bytes, expected 8/);
  const dup = { name: "x", dtype: "U8" as const, shape: [1], byteLength: 1, bytes: () => new Uint8Array(1) };
  bad([dup, dup], /tensor x is listed twice/);
  bad([{ ...dup, name: "__metadata__" }], /cannot write a tensor named "__metadata__"/);
  const path = join(dir, "exists.safetensors");
  writeFileSync(path, "x");
  assert.throws(() => writeSafetensors(path, [dup]), /EEXIST/);
});

test("safetensors: byte lengths follow the dtype's bits", () => {
  assert.equal(safetensorsByteLength("BF16", [3, 4]), 24);
  assert.equal(safetensorsByteLength("F6_E2M3", [4]), 3);
  assert.equal(safetensorsByteLength("F6_E2M3", [3]), undefined);
  assert.equal(safetensorsByteLength("F64", []), 8);
  assert.equal(safetensorsByteLength("U8", [2 ** 40, 2 ** 20]), undefined, "beyond a safe integer");
});

test("duplicate JSON keys are found at any depth, through escapes", () => {
  assert.equal(findDuplicateJsonKey('{"a":1,"b":{"a":2}}'), undefined);
  assert.deepEqual(findDuplicateJsonKey('{"a":1,"b":2,"a":3}'), { key: "a", path: [] });
  assert.deepEqual(findDuplicateJsonKey('{"x":{"k":[{"q":1}],"k":2}}'), { key: "k", path: ["x"] });
  assert.deepEqual(findDuplicateJsonKey('{"a\\"b":1,"a\\u0022b":2}'), { key: 'a"b', path: [] });
  assert.equal(findDuplicateJsonKey('{"s":"{\\"a\\":1,\\"a\\":2}"}'), undefined, "keys inside a string value do not count");
  assert.equal(findDuplicateJsonKey('{"l":["a","a"]}'), undefined, "array items are not keys");
});

// ---------------------------------------------------------------------------------------------
// safetensors: hostile files. Each is a typed error naming the file (and tensor or field).

/** Raw file: 8-byte length, header text (padded to 8 with spaces), data. */
function rawSafetensors(header: string, data: Uint8Array, declaredLength?: bigint): Buffer {
  const text = Buffer.from(header, "utf8");
  const padded = Buffer.alloc(Math.ceil(text.length / 8) * 8, 0x20);
  text.copy(padded);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(declaredLength ?? BigInt(padded.length));
  return Buffer.concat([len, padded, data]);
}

const TWO = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [8, 16] } };

function expectReadError(name: string, bytes: Uint8Array, type: typeof CheckpointError | typeof UnsupportedError, message: RegExp, tensor?: string): void {
  const dir = tempDir();
  const path = join(dir, `${name}.safetensors`);
  writeFileSync(path, bytes);
  const started = Date.now();
  assert.throws(() => readSafetensors(path), (e: unknown) => {
    assert.ok(e instanceof type, `${name}: ${String(e)}`);
    assert.equal((e as ShortgptError).details.file, path, `${name}: names the file`);
    assert.ok((e as Error).message.startsWith(path), `${name}: message starts with the path: ${(e as Error).message}`);
    assert.match((e as Error).message, message, name);
    if (tensor !== undefined) assert.equal((e as ShortgptError).details.tensor, tensor, `${name}: names the tensor`);
    return true;
  });
  assert.ok(Date.now() - started < 1000, `${name}: fast`);
  assert.deepEqual(readdirSync(dir), [basename(path)], `${name}: nothing written`);
}

test("hostile safetensors: truncated at every section boundary and inside each section", () => {
  const full = rawSafetensors(JSON.stringify({ __metadata__: { format: "pt" }, ...TWO }), f32Bytes([1, 2, 3, 4]));
  const headerEnd = 8 + Number(full.readBigUInt64LE(0));
  const cuts: [number, RegExp][] = [
    [0, /too short for the 8-byte header length/],
    [5, /too short for the 8-byte header length/],
    [8, /header length \d+ exceeds the 0 bytes after it/],
    [8 + 10, /header length \d+ exceeds the 10 bytes after it/],
    [headerEnd - 1, /header length \d+ exceeds/],
    [headerEnd, /tensor a: data_offsets \[0, 8\] run past the 0-byte data section/],
    [headerEnd + 3, /tensor a: .* run past the 3-byte data section/],
    [headerEnd + 8, /tensor b: data_offsets \[8, 16\] run past the 8-byte data section/],
    [full.length - 1, /tensor b: .* run past the 15-byte data section/],
  ];
  for (const [cut, re] of cuts) expectReadError(`cut-${cut}`, full.subarray(0, cut), CheckpointError, re);
  // Extra bytes after the last tensor are refused too (the reference implementation does).
  expectReadError("trailing", Buffer.concat([full, Buffer.alloc(4)]), CheckpointError, /the data section has 20 bytes but the tensors cover 16/);
});

test("hostile safetensors: header length, JSON and field errors", () => {
  const data = f32Bytes([1, 2, 3, 4]);
  const ok = JSON.stringify(TWO);
  expectReadError("huge-length", rawSafetensors(ok, data, 2n ** 62n), CheckpointError, /header length 4611686018427387904 exceeds the \d+ bytes after it/);
  expectReadError("length-past-end", rawSafetensors(ok, data, 1000n), CheckpointError, /header length 1000 exceeds the \d+ bytes after it/);
  expectReadError("not-json", rawSafetensors('{"a": ', data), CheckpointError, /the header is not valid JSON/);
  expectReadError("not-object", rawSafetensors("[1, 2]", data), CheckpointError, /the header is not a JSON object/);
  expectReadError("bad-utf8", Buffer.concat([rawSafetensors('{"a":"\u00ff"}', new Uint8Array(0)).subarray(0, 14), Buffer.from([0xff, 0xfe]), rawSafetensors('{"a":"\u00ff"}', new Uint8Array(0)).subarray(16)]),
    CheckpointError, /not valid UTF-8/);
  const edit = (name: string, change: Record<string, unknown>, re: RegExp, type: typeof CheckpointError | typeof UnsupportedError = CheckpointError, tensor: string | undefined = "b"): void => {
    expectReadError(name, rawSafetensors(JSON.stringify({ ...TWO, b: { ...TWO.b, ...change } }), data), type, re, tensor);
  };
  edit("out-of-range", { data_offsets: [16, 24] }, /tensor b: data_offsets \[16, 24\] run past the 16-byte data section/);
  edit("size-vs-shape", { shape: [3] }, /tensor b: F32 \[3\] needs 12 bytes but data_offsets \[8, 16\] hold 8/);
  edit("size-vs-dtype", { dtype: "F64" }, /tensor b: F64 \[2\] needs 16 bytes but data_offsets \[8, 16\] hold 8/);
  edit("end-before-begin", { data_offsets: [16, 8] }, /tensor b: data_offsets \[16, 8\] end before they begin/);
  edit("negative-dim", { shape: [-2] }, /tensor b: shape\[0\] is -2, expected a non-negative integer/);
  edit("fractional-dim", { shape: [2.5] }, /tensor b: shape\[0\] is 2.5/);
  edit("offsets-not-pair", { data_offsets: [8] }, /tensor b: data_offsets must be \[begin, end\]/);
  edit("no-dtype", { dtype: undefined }, /tensor b: dtype is missing/);
  edit("unknown-dtype", { dtype: "F12" }, /tensor b has unknown dtype "F12"/, UnsupportedError);
  edit("overlap", { data_offsets: [4, 12] }, /tensors a and b overlap/);
  expectReadError("gap", rawSafetensors(JSON.stringify({ ...TWO, b: { ...TWO.b, data_offsets: [12, 20] } }), new Uint8Array(20)), CheckpointError, /4 unused bytes before tensor b/, "b");
  expectReadError("duplicate-name", rawSafetensors(`{"a":${JSON.stringify(TWO.a)},"b":${JSON.stringify(TWO.b)},"a":${JSON.stringify(TWO.a)}}`, data), CheckpointError, /tensor a appears twice in the header/, "a");
  expectReadError("duplicate-field", rawSafetensors(`{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":${JSON.stringify(TWO.b)}}`, data), CheckpointError, /key dtype appears twice under a/, "a");
  expectReadError("metadata-not-string", rawSafetensors(JSON.stringify({ __metadata__: { n: 1 }, ...TWO }), data), CheckpointError, /__metadata__\.n is 1, expected a string/);
});

test("safetensors: offsets beyond 4 GiB (sparse file) are read without loading the rest", () => {
  const dir = tempDir();
  const path = join(dir, "big.safetensors");
  const bigLength = 4.5 * 2 ** 30;
  const header = rawSafetensors(JSON.stringify({
    big: { dtype: "U8", shape: [bigLength], data_offsets: [0, bigLength] },
    tail: { dtype: "F32", shape: [2], data_offsets: [bigLength, bigLength + 8] },
  }), new Uint8Array(0));
  const fd = openSync(path, "w");
  try {
    writeSync(fd, header);
    ftruncateSync(fd, header.length + bigLength + 8);
    writeSync(fd, f32Bytes([6.5, -1]), 0, 8, header.length + bigLength);
  } finally {
    closeSync(fd);
  }
  const st = readSafetensors(path);
  try {
    assert.deepEqual(new Float32Array(new Uint8Array(readTensorBytes(st, "tail")).buffer), new Float32Array([6.5, -1]));
    const first = readTensorChunks(st, "big", 1 << 20)[Symbol.iterator]().next();
    assert.equal(first.done, false);
    assert.equal(first.value?.length, 1 << 20);
  } finally {
    st.file.close();
    rmSync(path);
  }
});

// ---------------------------------------------------------------------------------------------
// Hugging Face directories

test("HF directory: single file and sharded fixtures expose the same tensors; bad indexes are refused", () => {
  const dir = tempDir();
  writeHfLlamaFixture(join(dir, "single"), { dtype: "BF16" });
  writeHfLlamaFixture(join(dir, "sharded"), { dtype: "BF16", shards: 2 });
  const single = openHfDirectory(join(dir, "single"));
  const sharded = openHfDirectory(join(dir, "sharded"));
  try {
    assert.equal(single.index, null);
    assert.deepEqual(single.weightFiles, ["model.safetensors"]);
    assert.deepEqual(sharded.weightFiles, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
    assert.deepEqual(single.otherFiles, ["generation_config.json", "special_tokens_map.json", "tokenizer_config.json"]);
    assert.deepEqual(sharded.otherFiles, single.otherFiles);
    const names = (h: typeof single): string[] => h.tensors.map((t) => t.name).sort();
    assert.deepEqual(names(sharded), names(single));
    assert.equal(sharded.tensor("model.layers.3.mlp.up_proj.weight").file, "model-00002-of-00002.safetensors");
    for (const t of single.tensors) assert.deepEqual(sharded.readTensorBytes(t.name), single.readTensorBytes(t.name), t.name);
    assert.deepEqual(single.fileMetadata.get("model.safetensors"), { format: "pt" });
  } finally {
    single.close();
    sharded.close();
  }

  const broken = (name: string, edit: (d: string) => void, type: typeof CheckpointError | typeof UnsupportedError, re: RegExp, file: (d: string) => string, tensor?: string): void => {
    const d = join(dir, name);
    writeHfLlamaFixture(d, { shards: 2 });
    edit(d);
    assert.throws(() => openHfDirectory(d), (e: unknown) => {
      assert.ok(e instanceof type, `${name}: ${String(e)}`);
      assert.match((e as Error).message, re, name);
      assert.equal((e as ShortgptError).details.file, file(d), `${name}: names the file`);
      if (tensor !== undefined) assert.equal((e as ShortgptError).details.tensor, tensor);
      return true;
    });
  };
  const index = (d: string): string => join(d, "model.safetensors.index.json");
  const editIndex = (d: string, f: (weightMap: Record<string, string>) => void): void => {
    const json = JSON.parse(readFileSync(index(d), "utf8")) as { weight_map: Record<string, string> };
    f(json.weight_map);
    writeFileSync(index(d), JSON.stringify(json));
  };
  broken("missing-shard", (d) => rmSync(join(d, "model-00002-of-00002.safetensors")), CheckpointError,
    /model\.safetensors\.index\.json: shard model-00002-of-00002\.safetensors \(holding .*\) does not exist/, index);
  broken("not-in-shard", (d) => editIndex(d, (m) => { m["model.layers.9.mlp.up_proj.weight"] = "model-00002-of-00002.safetensors"; }), CheckpointError,
    /tensor model\.layers\.9\.mlp\.up_proj\.weight is listed in shard model-00002-of-00002\.safetensors but that file does not hold it/, index, "model.layers.9.mlp.up_proj.weight");
  broken("wrong-shard", (d) => editIndex(d, (m) => { m["lm_head.weight"] = "model-00001-of-00002.safetensors"; }), CheckpointError,
    /weight_map puts lm_head\.weight in model-00001-of-00002\.safetensors but it is in model-00002-of-00002\.safetensors/, index, "lm_head.weight");
  broken("unindexed", (d) => editIndex(d, (m) => { delete m["model.norm.weight"]; }), CheckpointError,
    /tensor model\.norm\.weight is in shard model-00002-of-00002\.safetensors but not in weight_map/, index, "model.norm.weight");
  broken("path-escape", (d) => editIndex(d, (m) => { m["model.norm.weight"] = "../x.safetensors"; }), CheckpointError,
    /weight_map entry for model\.norm\.weight is "\.\.\/x\.safetensors", expected a file name/, index, "model.norm.weight");
  broken("both", (d) => writeFileSync(join(d, "model.safetensors"), ""), CheckpointError, /holds both model\.safetensors and model\.safetensors\.index\.json/, (d) => d);
  broken("bad-shard", (d) => writeFileSync(join(d, "model-00001-of-00002.safetensors"), Buffer.alloc(4)), CheckpointError,
    /model-00001-of-00002\.safetensors: the file has 4 bytes/, (d) => join(d, "model-00001-of-00002.safetensors"));
  broken("config-dup", (d) => writeFileSync(join(d, "config.json"), '{"model_type":"llama","model_type":"gpt2"}'), CheckpointError,
    /config\.json: key model_type appears twice/, (d) => join(d, "config.json"));
  broken("no-weights", (d) => { rmSync(index(d)); }, CheckpointError, /has neither model\.safetensors nor model\.safetensors\.index\.json/, (d) => d);
});

// ---------------------------------------------------------------------------------------------
// config.json

test("HF config: transformers' defaults, the mistral alias and unsupported features", () => {
  const src = "x/config.json";
  const resolve = (json: Record<string, unknown>): ReturnType<typeof resolveHfLlamaConfig> => resolveHfLlamaConfig(parseHfLlamaConfig(json, src), src);
  const minimal = { model_type: "llama", hidden_size: 64, intermediate_size: 160, num_hidden_layers: 2, num_attention_heads: 8, vocab_size: 100 };
  assert.deepEqual(resolve(minimal), {
    nLayers: 2, dim: 64, hiddenDim: 160, nHeads: 8, nKvHeads: 8, headDim: 8, vocabSize: 100, contextLength: 2048, normEps: 1e-6, ropeTheta: 10000,
  });
  assert.deepEqual(resolve({ model_type: "llama" }), {
    nLayers: 32, dim: 4096, hiddenDim: 11008, nHeads: 32, nKvHeads: 32, headDim: 128, vocabSize: 32000, contextLength: 2048, normEps: 1e-6, ropeTheta: 10000,
  }, "LlamaConfig() defaults");
  assert.equal(resolve({ ...minimal, head_dim: 16, num_key_value_heads: 2 }).headDim, 16);
  assert.equal(resolve({ ...minimal, num_key_value_heads: null }).nKvHeads, 8);
  assert.equal(resolve({ ...minimal, rope_theta: 500000, rope_scaling: null }).ropeTheta, 500000);
  assert.equal(resolve({ ...minimal, rope_parameters: { rope_type: "default", rope_theta: 1e6 } }).ropeTheta, 1e6, "transformers 5 spelling");
  // Mistral: its own defaults; the sliding window caps the context, where it equals full attention.
  assert.deepEqual(resolve({ model_type: "mistral" }), {
    nLayers: 32, dim: 4096, hiddenDim: 14336, nHeads: 32, nKvHeads: 8, headDim: 128, vocabSize: 32000, contextLength: 4096, normEps: 1e-6, ropeTheta: 10000,
  }, "MistralConfig() defaults");
  assert.equal(resolve({ ...minimal, model_type: "mistral", max_position_embeddings: 32768, sliding_window: null }).contextLength, 32768);
  assert.equal(resolve({ ...minimal, model_type: "mistral", num_attention_heads: 16, num_key_value_heads: null }).nKvHeads, 16, "explicit null: as many as the query heads");
  assert.equal(resolve({ ...minimal, model_type: "mistral", num_attention_heads: 16 }).nKvHeads, 8, "absent: MistralConfig's 8");
  assert.equal(resolve({ ...minimal, num_attention_heads: 4 }).nKvHeads, 4, "absent: LlamaConfig's num_attention_heads");
  assert.equal(resolve({ ...minimal, layer_types: ["full_attention", "full_attention"], rope_parameters: { full_attention: { rope_type: "default", rope_theta: 5e5 } } }).ropeTheta, 5e5, "nested by layer type");

  const refuses = (json: Record<string, unknown>, type: typeof CheckpointError | typeof UnsupportedError, re: RegExp): void => {
    assert.throws(() => resolve(json), (e: unknown) => e instanceof type && re.test((e as Error).message) && (e as ShortgptError).details.file === src);
  };
  refuses({ ...minimal, model_type: "gpt_neox" }, UnsupportedError, /model_type "gpt_neox" is not supported yet \(supported: llama, mistral, qwen2, qwen3, gemma, baichuan, gemma2, gemma3_text, phi3, gpt2\)/);
  refuses({ ...minimal, model_type: undefined }, UnsupportedError, /model_type null is not supported/);
  // RoPE scaling: linear divides every frequency; llama3 keeps the fast, divides the slow, blends between.
  assert.deepEqual(resolve({ ...minimal, rope_scaling: { type: "linear", factor: 2 } }).ropeFreqFactors, [2, 2, 2, 2]);
  const llama3 = resolve({ ...minimal, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 } }).ropeFreqFactors!;
  // wavelengths 2pi * 10000^(i/4): 6.3 (< 64/4: kept), 62.8 (between 16 and 64: blended), 628 and 6283 (> 64: divided by 8)
  const smooth = (64 / (2 * Math.PI * 10)) / 3 - 1 / 3;
  assert.deepEqual(llama3.map((f) => Number(f.toFixed(12))), [1, Number((1 / ((1 - smooth) / 8 + smooth)).toFixed(12)), 8, 8]);
  refuses({ ...minimal, rope_scaling: { rope_type: "llama3", factor: 8 } }, CheckpointError, /rope_scaling low_freq_factor is missing/);
  refuses({ ...minimal, rope_parameters: { rope_type: "yarn" } }, UnsupportedError, /rope_parameters type "yarn"\) is not supported yet; unscaled, linear, llama3 and longrope are/);
  refuses({ ...minimal, hidden_act: "gelu" }, UnsupportedError, /hidden activation "gelu" \(only silu\)/);
  refuses({ ...minimal, attention_bias: true }, UnsupportedError, /attention_bias/);
  refuses({ ...minimal, layer_types: ["full_attention", "sliding_attention"] }, UnsupportedError, /layer type "sliding_attention"/);
  refuses({ ...minimal, layer_types: ["full_attention"] }, CheckpointError, /layer_types has 1 entries but num_hidden_layers is 2/);
  refuses({ ...minimal, quantization_config: { quant_method: "gptq" } }, UnsupportedError, /a quantized checkpoint \(quant_method "gptq"\)/);
  refuses({ ...minimal, architectures: ["LlamaForSequenceClassification"] }, UnsupportedError, /architecture LlamaForSequenceClassification/);
  refuses({ ...minimal, hidden_size: "64" }, CheckpointError, /hidden_size is "64", expected an integer/);
  refuses({ ...minimal, num_attention_heads: 7 }, CheckpointError, /hidden_size 64 is not a multiple of num_attention_heads 7/);

  // Tied classifier: lm_head is optional (and ignored) when tied, required otherwise.
  const config = resolve(minimal);
  const raw = parseHfLlamaConfig(minimal, src);
  assert.throws(() => hfLlamaTensorNames(raw, config, ["model.embed_tokens.weight"], src), /tensor lm_head\.weight is missing and tie_word_embeddings is false/);
  const tied = hfLlamaTensorNames(parseHfLlamaConfig({ ...minimal, tie_word_embeddings: true }, src), config, ["lm_head.weight"], src);
  assert.ok(tied.ignored.has("lm_head.weight"));
  assert.ok(tied.ignored.has("model.layers.1.self_attn.rotary_emb.inv_freq"));
  assert.equal(HF_LLAMA_NAMES.interleavedRope, false);
  assert.equal(HF_LLAMA_NAMES.layer(3).wDown, "model.layers.3.mlp.down_proj.weight");
});

// ---------------------------------------------------------------------------------------------
// Against transformers

const FIXTURE_DTYPE: Record<string, FixtureDtype> = { f32: "F32", bf16: "BF16", f16: "F16" };

test("fixture encoders: bf16 and f16 rounding to nearest even, subnormals, overflow", () => {
  assert.equal(f32ToBf16Bits(1), 0x3f80);
  assert.equal(f32ToBf16Bits(1 + 2 ** -8), 0x3f80, "tie rounds to even");
  assert.equal(f32ToBf16Bits(1 + 3 * 2 ** -8), 0x3f82, "tie rounds to even (up)");
  assert.equal(f32ToF16Bits(1), 0x3c00);
  assert.equal(f32ToF16Bits(-2), 0xc000);
  assert.equal(f32ToF16Bits(65504), 0x7bff);
  assert.equal(f32ToF16Bits(65520), 0x7c00, "rounds up to infinity");
  assert.equal(f32ToF16Bits(2 ** -24), 0x0001, "smallest subnormal");
  assert.equal(f32ToF16Bits(2 ** -26), 0x0000);
  const out = new Float32Array(1);
  for (const x of [0.1, -3.14159, 1e-5, 6.1e-5, 1234.5]) {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(f32ToF16Bits(x));
    decodeF16(b, out);
    assert.ok(Math.abs(out[0]! - x) <= Math.abs(x) * 2 ** -11 + 2 ** -25, `${x} -> ${out[0]}`);
  }
});

/** Golden cases of the other families (F32 weights). */
const FIXTURE_FAMILY: Record<string, FixtureFamily> = { qwen2: "qwen2", qwen3: "qwen3", gemma: "gemma", gpt2: "gpt2", llama3: "llama3", "llama-linear": "llama-linear" };

test(`the fixture matches transformers ${golden.transformers_version}: logits (F32, BF16, F16 weights; Qwen2 biases, Qwen3 q/k norms, Gemma, GPT-2, Llama 3 and linear RoPE scaling) and the residual stream`, (t) => {
  const dir = tempDir();
  const ids = golden.ids;
  assert.equal(ids.length, 17);
  for (const c of golden.cases.filter((x) => !x.name.endsWith("-rt"))) {
    const family = FIXTURE_FAMILY[c.name] ?? "llama";
    const dtype = FIXTURE_DTYPE[c.name] ?? "F32";
    const path = join(dir, c.name);
    const written = writeHfLlamaFixture(path, { dtype, family });
    assert.deepEqual(written.config, c.config, `${c.name}: config.json is the one the golden was made from`);
    assert.deepEqual(Object.fromEntries(written.weightFiles.map((f) => [f, sha256(join(path, f))])), c.weight_sha256, `${c.name}: weights are byte-identical to the golden's`);
    const model = loadHfLlama(path);
    const layerInputs: Float64Array[] = [];
    let lastOutput = new Float64Array(0);
    const { logits } = model.forward(ids, {
      hooks: {
        onLayer: (_layer, input, output) => {
          layerInputs.push(Float64Array.from(input));
          lastOutput = Float64Array.from(output);
        },
      },
    });
    const vocab = model.config.vocabSize;
    const lastLogits = logits.subarray((ids.length - 1) * vocab);
    // Gemma's scaled embedding gives logits up to ~90: float32 rounding in transformers moves the
    // small ones by more than 1e-4 of 1, so for it the float64 comparison below is the tight one.
    const floor = c.name === "gemma" ? 10 : 1;
    for (const [what, got, want] of [["logits", logits, c.logits], ["last-position logits", lastLogits, c.logits_last], ["final normed hidden state", model.finalNorm(lastOutput, ids.length), c.final_normed]] as const) {
      if (!want) continue;
      // Relative per element, absolute below `floor` (many values are near zero).
      const scaled = scaledError(got, want);
      const element = elementError(got, want, floor);
      t.diagnostic(`${c.name}: ${what} max|diff|/max|want| = ${scaled.toExponential(2)}, max |diff|/max(|want|, ${floor}) = ${element.toExponential(2)}`);
      assert.ok(scaled <= 1e-4 && element <= 1e-4, `${c.name}: ${what} differ from transformers (${scaled}, ${element})`);
    }
    assert.ok(c.logits ?? (c.logits_last && c.final_normed), `${c.name}: the golden holds every position's logits, or the last position's and the normed hidden states`);
    if (c.logits_f64_last) {
      // transformers in float64 (its RoPE angles stay float32): most of the float32 gap closes.
      const err64 = scaledError(lastLogits, c.logits_f64_last);
      t.diagnostic(`${c.name}: last-position logits vs transformers in float64, max|diff|/max|want| = ${err64.toExponential(2)}`);
      assert.ok(err64 <= 1e-5, `${c.name}: float64 logits differ (${err64})`);
    }
    if (c.residual && c.final_normed) {
      const L = model.nLayers;
      assert.equal(c.residual.length, L + 1);
      let worst = 0;
      for (let layer = 0; layer < L; layer++) worst = Math.max(worst, scaledError(layerInputs[layer]!, c.residual[layer]!));
      worst = Math.max(worst, scaledError(lastOutput, c.residual[L]!));
      const normedErr = scaledError(model.finalNorm(lastOutput, ids.length), c.final_normed);
      t.diagnostic(`${c.name}: residual stream max scaled error ${worst.toExponential(2)}, final normed ${normedErr.toExponential(2)}`);
      assert.ok(worst <= 1e-5 && normedErr <= 1e-5, `${c.name}: hidden states differ (${worst}, ${normedErr})`);
      // The fixture is not degenerate: every layer turns the stream noticeably.
      for (let layer = 0; layer < L; layer++) {
        const a = c.residual[layer]!;
        const b = c.residual[layer + 1]!;
        let dot = 0, na = 0, nb = 0;
        for (let i = 0; i < a.length; i++) {
          dot += a[i]! * b[i]!;
          na += a[i]! * a[i]!;
          nb += b[i]! * b[i]!;
        }
        assert.ok(dot / Math.sqrt(na * nb) < 0.99, `layer ${layer} changes the residual stream`);
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Layer removal

test("removeHfLayers on a sharded directory: loads, equals skipping, patches config and index, copies files, leaves the input alone", (t) => {
  const dir = tempDir();
  const input = join(dir, "in");
  writeHfLlamaFixture(input, { dtype: "F32", shards: 2 });
  const before = hashDir(input);
  const original = loadHfLlama(input);
  const ids = golden.ids;

  const out = join(dir, "out");
  const result = removeHfLayers(input, out, [2, 1]);
  assert.deepEqual(hashDir(input), before, "input untouched");
  assert.deepEqual(result.removed, [1, 2]);
  assert.equal(result.layersBefore, 4);
  assert.equal(result.layersAfter, 2);
  assert.deepEqual(result.weightFiles, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
  assert.deepEqual(result.patchedConfigKeys.sort(), ["layer_types", "num_hidden_layers"]);
  assert.deepEqual(result.skipped, []);
  assert.deepEqual(readdirSync(dir).sort(), ["in", "out"], "no temporary directory left");

  // config.json: only the per-layer fields change.
  const inConfig = JSON.parse(readFileSync(join(input, "config.json"), "utf8")) as Record<string, unknown>;
  const outConfig = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
  assert.deepEqual(outConfig, { ...inConfig, num_hidden_layers: 2, layer_types: ["full_attention", "full_attention"] });
  // Other files copied byte for byte.
  for (const f of ["generation_config.json", "special_tokens_map.json", "tokenizer_config.json"]) assert.equal(sha256(join(out, f)), before[f], f);

  // Index: the kept tensors renamed densely, in the input's shard grouping, total_size right.
  const index = JSON.parse(readFileSync(join(out, "model.safetensors.index.json"), "utf8")) as { metadata: { total_size: number }; weight_map: Record<string, string> };
  const hf = openHfDirectory(out);
  try {
    const names = Object.keys(index.weight_map);
    assert.deepEqual(names, [...names].sort(), "weight_map sorted");
    assert.equal(names.length, 2 + 2 * 9 + 1);
    assert.ok(names.every((n) => !/^model\.layers\.[2-9]\./.test(n)));
    assert.equal(index.weight_map["model.layers.0.mlp.up_proj.weight"], "model-00001-of-00002.safetensors", "layer 0 stays in shard 1");
    assert.equal(index.weight_map["model.layers.1.mlp.up_proj.weight"], "model-00002-of-00002.safetensors", "old layer 3 stays in shard 2");
    assert.equal(index.metadata.total_size, hf.tensors.reduce((n, t) => n + t.byteLength, 0));
    assert.equal(index.metadata.total_size, result.bytesWritten);
    // Bytes of a renumbered tensor are the original's.
    const src = openHfDirectory(input);
    try {
      assert.deepEqual(hf.readTensorBytes("model.layers.1.self_attn.q_proj.weight"), src.readTensorBytes("model.layers.3.self_attn.q_proj.weight"));
    } finally {
      src.close();
    }
  } finally {
    hf.close();
  }

  // The pruned model is exactly the original with those layers skipped, and what transformers
  // computes on the same directory (written by this same code when the golden was made).
  const pruned = loadHfLlama(out);
  assert.equal(pruned.nLayers, 2);
  let hidden = new Float64Array(0); // leaving the last layer
  const got = pruned.forward(ids, { hooks: { onLayer: (_layer, _input, output) => void (hidden = Float64Array.from(output)) } }).logits;
  const want = original.forward(ids, { skip: new Set([1, 2]) }).logits;
  assert.deepEqual([...got], [...want], "bit for bit");
  const g = golden.pruned[0]!;
  assert.deepEqual(g.removed, [1, 2]);
  assert.deepEqual(Object.fromEntries(result.weightFiles.map((f) => [f, sha256(join(out, f))])), g.weight_sha256, "same bytes as the directory transformers loaded");
  // Every position's final normed hidden state and the last position's logits (the pruned model's classifier is the original's).
  const errHidden = scaledError(pruned.finalNorm(hidden, ids.length), g.final_normed!);
  const errLast = scaledError(got.subarray((ids.length - 1) * pruned.config.vocabSize), g.logits_last!);
  t.diagnostic(`pruned: vs transformers on the pruned directory, max|diff|/max|want|: final normed hidden states ${errHidden.toExponential(2)}, last-position logits ${errLast.toExponential(2)}`);
  assert.ok(errHidden <= 1e-4 && errLast <= 1e-4);

  // Refusals: existing output without force, output = input or inside it, replacing a parent of the input.
  const refuses = (o: string, force: boolean, re: RegExp): void => {
    assert.throws(() => removeHfLayers(input, o, [1], { force }), (e: unknown) => e instanceof OutputError && re.test((e as Error).message));
  };
  refuses(out, false, /already exists/);
  refuses(input, true, /is the input model directory/);
  refuses(join(input, "sub"), true, /inside the input model directory/);
  refuses(dir, true, /contains the input model directory/);
  assert.throws(() => removeHfLayers(input, join(dir, "x"), [0, 1, 2, 3]), /would leave none/);
  assert.throws(() => removeHfLayers(input, join(dir, "x"), [4]), /layer 4 is out of range/);
  assert.deepEqual(readdirSync(dir).sort(), ["in", "out"], "refusals write nothing");

  // With force, the existing output is replaced by a complete new one.
  writeFileSync(join(out, "stale.txt"), "old");
  const again = removeHfLayers(input, out, [0], { force: true });
  assert.equal(again.layersAfter, 3);
  assert.ok(!existsSync(join(out, "stale.txt")));
  assert.equal(loadHfLlama(out).nLayers, 3);
  assert.deepEqual(readdirSync(dir).sort(), ["in", "out"]);
  assert.deepEqual(hashDir(input), before, "input still untouched");
});

test("removeHfLayers: single file stays single, emptied shards disappear, stale weights and sub-directories are not copied", () => {
  const dir = tempDir();
  const single = join(dir, "single");
  writeHfLlamaFixture(single, { dtype: "BF16" });
  mkdirSync(join(single, "original"));
  writeFileSync(join(single, "original", "consolidated.00.pth"), "x");
  writeFileSync(join(single, "pytorch_model.bin"), "x");
  const r = removeHfLayers(single, join(dir, "single-out"), [3]);
  assert.deepEqual(r.weightFiles, ["model.safetensors"]);
  assert.deepEqual(r.skipped, ["pytorch_model.bin", "original/"]);
  assert.deepEqual(readdirSync(join(dir, "single-out")).sort(), ["config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer_config.json"]);
  const a = loadHfLlama(single);
  const b = loadHfLlama(join(dir, "single-out"));
  assert.deepEqual([...b.forward(golden.ids).logits], [...a.forward(golden.ids, { skip: new Set([3]) }).logits]);

  // A 3-shard layout whose middle shard holds only layers 1 and 2: removing them drops the shard.
  const sharded = join(dir, "three");
  writeHfLlamaFixture(sharded, { shards: 2 });
  const indexPath = join(sharded, "model.safetensors.index.json");
  const hf = openHfDirectory(sharded);
  const groups: SafetensorsTensorToWrite[][] = [[], [], []];
  const weightMap: Record<string, string> = {};
  const files = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"];
  for (const t of hf.tensors) {
    const layer = Number(/^model\.layers\.(\d+)\./.exec(t.name)?.[1] ?? -1);
    const g = layer === 1 || layer === 2 ? 1 : layer === 3 || t.name === "lm_head.weight" || t.name === "model.norm.weight" ? 2 : 0;
    const bytes = hf.readTensorBytes(t.name);
    groups[g]!.push({ name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.byteLength, bytes: () => bytes });
    weightMap[t.name] = files[g]!;
  }
  hf.close();
  for (const f of readdirSync(sharded).filter((f) => f.endsWith(".safetensors"))) rmSync(join(sharded, f));
  groups.forEach((g, i) => writeSafetensors(join(sharded, files[i]!), g, { format: "pt" }));
  writeFileSync(indexPath, JSON.stringify({ metadata: { total_size: 1, total_parameters: 1 }, weight_map: weightMap }));
  const r3 = removeHfLayers(sharded, join(dir, "three-out"), [1, 2]);
  assert.deepEqual(r3.weightFiles, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]);
  const idx = JSON.parse(readFileSync(join(dir, "three-out", "model.safetensors.index.json"), "utf8")) as { metadata: Record<string, number> };
  const elements = 512 * 64 * 2 + 64 + 2 * (2 * 64 + 64 * 64 * 2 + 32 * 64 * 2 + 160 * 64 * 3);
  assert.deepEqual(idx.metadata, { total_size: elements * 4, total_parameters: elements });
});

test("removeHfLayers on a broken input fails with a typed error and writes nothing", () => {
  const dir = tempDir();
  const input = join(dir, "in");
  writeHfLlamaFixture(input, { shards: 2 });
  rmSync(join(input, "model-00002-of-00002.safetensors"));
  assert.throws(() => removeHfLayers(input, join(dir, "out"), [1]), (e: unknown) => e instanceof CheckpointError && /shard model-00002-of-00002\.safetensors .* does not exist/.test((e as Error).message));
  // A config that does not match the weights.
  const other = join(dir, "mismatch");
  writeHfLlamaFixture(other, {});
  const cfg = JSON.parse(readFileSync(join(other, "config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(other, "config.json"), JSON.stringify({ ...cfg, num_hidden_layers: 3, layer_types: ["full_attention", "full_attention", "full_attention"] }));
  assert.throws(() => removeHfLayers(other, join(dir, "out"), [1]), (e: unknown) => e instanceof CheckpointError && /tensor model\.layers\.3\..* belongs to layer 3 but num_hidden_layers is 3/.test((e as Error).message));
  assert.deepEqual(readdirSync(dir).sort(), ["in", "mismatch"], "no output and no temporary directory");
});

test("Qwen2, Qwen3, Gemma, GPT-2 and Llama 3 directories: the onnxruntime graph (biases, per-head q/k norms, GELU, LayerNorm, learned positions, scaled RoPE) agrees with the reference; pruning keeps their extra tensors", async () => {
  const dir = tempDir();
  const ort = await createOrtBackend({ threads: 2, flavor: "node" });
  try {
    for (const family of ["qwen2", "qwen3", "gemma", "gpt2", "llama3"] as const) {
      const path = join(dir, family);
      writeHfLlamaFixture(path, { family });
      const opened = openModel(path);
      try {
        assert.equal(opened.architecture, family === "llama3" ? "llama" : family);
        const docs = [Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 512), Array.from({ length: 33 }, (_, i) => (i * 91 + 5) % 512)];
        const windows = perplexityWindows(docs, { seqLen: 16, stride: 16 });
        const reference = await streamingPerplexity(opened, windows, { backend: createReferenceBackend() });
        const fast = await streamingPerplexity(opened, windows, { backend: ort });
        assert.ok(Math.abs(fast.nll - reference.nll) <= 1e-5 * reference.nll, `${family}: nll ${fast.nll} vs ${reference.nll}`);
        const inMemory = perplexity(loadModel(path).model, windows);
        assert.ok(Math.abs(inMemory.nll - reference.nll) <= 1e-6 * reference.nll, `${family}: streaming reference vs in-memory`);
      } finally {
        opened.close();
      }
      const pruned = join(dir, `${family}-pruned`);
      const removal = removeHfLayers(path, pruned, [1]);
      assert.equal(removal.layersAfter, 3, `${family}: layer count patched`);
      const ids = [1, 37, 402, 11, 250, 99];
      assert.deepEqual(loadModel(pruned).model.forward(ids).logits, loadModel(path).model.forward(ids, { skip: new Set([1]) }).logits, `${family}: pruned = skipped`);
    }
  } finally {
    await ort.dispose();
  }
});

test("Baichuan2: W_pack is split into q, k and v and the head is row-normalized, exactly like an equivalent Llama; pruning renumbers W_pack", () => {
  const dir = tempDir();
  const baichuan = writeHfLlamaFixture(join(dir, "baichuan"), { family: "baichuan" });
  // The equivalent Llama, built here from the stored tensors: W_pack cut in three, lm_head rows scaled to unit norm.
  const st = readSafetensors(join(baichuan.dir, "model.safetensors"));
  const tensors: SafetensorsTensorToWrite[] = [];
  for (const t of st.tensors) {
    const values = new Float32Array(new Uint8Array(readTensorBytes(st, t.name)).buffer);
    const put = (name: string, shape: number[], v: Float32Array): void => void tensors.push({ name, dtype: "F32", shape, byteLength: v.byteLength, bytes: () => new Uint8Array(v.buffer, v.byteOffset, v.byteLength) });
    const pack = /^(.*)\.W_pack\.weight$/.exec(t.name);
    if (pack) {
      const rows = t.shape[0]! / 3;
      ["q", "k", "v"].forEach((p, i) => put(`${pack[1]}.${p}_proj.weight`, [rows, t.shape[1]!], values.slice(i * rows * t.shape[1]!, (i + 1) * rows * t.shape[1]!)));
    } else if (t.name === "lm_head.weight") {
      const cols = t.shape[1]!;
      const normed = values.slice();
      for (let r = 0; r < t.shape[0]!; r++) {
        const row = normed.subarray(r * cols, (r + 1) * cols);
        const norm = Math.sqrt(row.reduce((s, v) => s + v * v, 0));
        for (let c = 0; c < cols; c++) row[c] = row[c]! / norm;
      }
      put(t.name, [...t.shape], normed);
    } else {
      put(t.name, [...t.shape], values);
    }
  }
  st.file.close();
  const llamaDir = join(dir, "llama");
  mkdirSync(llamaDir);
  writeSafetensors(join(llamaDir, "model.safetensors"), tensors);
  const { z_loss_weight: _z, model_max_length: _m, ...rest } = baichuan.config;
  writeFileSync(join(llamaDir, "config.json"), JSON.stringify({ ...rest, model_type: "llama", architectures: ["LlamaForCausalLM"] }));
  const ids = [1, 37, 402, 11, 250, 99, 500, 3];
  const want = loadModel(llamaDir).model.forward(ids).logits;
  assert.deepEqual(loadModel(baichuan.dir).model.forward(ids).logits, want);
  // Pruned: W_pack renumbered with its layer, and the result equals the equivalent Llama with that layer skipped.
  const pruned = join(dir, "pruned");
  removeHfLayers(baichuan.dir, pruned, [2]);
  assert.ok(openHfDirectory(pruned).tensors.some((t) => t.name === "model.layers.2.self_attn.W_pack.weight"));
  assert.deepEqual(loadModel(pruned).model.forward(ids).logits, loadModel(llamaDir).model.forward(ids, { skip: new Set([2]) }).logits);
});

test("RoPE scaling in GGUF: rope_freqs or linear metadata mean the same; other types are refused; HF output keeps rope_scaling", () => {
  const dir = tempDir();
  const ids = [1, 37, 402, 11, 250, 99, 500, 3];
  const linear = writeHfLlamaFixture(join(dir, "linear"), { family: "llama-linear" });
  const want = loadModel(linear.dir).model.forward(ids).logits;
  const gguf = join(dir, "linear.gguf");
  convertModel(linear.dir, gguf, { to: "gguf", dtype: "F32", tokenizer: TOKENIZER });
  // llama.cpp's converter writes linear scaling as metadata rather than rope_freqs: the same model.
  const rewrite = (out: string, edit: (m: Map<string, GgufValue>) => void): string => rewriteGguf(gguf, out, (metadata, tensors) => {
    edit(metadata);
    return tensors.filter((t) => t.name !== "rope_freqs.weight");
  });
  const asMetadata = rewrite(join(dir, "metadata.gguf"), (m) => {
    m.set("llama.rope.scaling.type", { type: GgufValueType.STRING, value: "linear" });
    m.set("llama.rope.scaling.factor", { type: GgufValueType.FLOAT32, value: 4 });
  });
  assert.ok(scaledError(loadModel(asMetadata).model.forward(ids).logits, want) < 1e-9);
  assert.ok(scaledError(loadModel(gguf).model.forward(ids).logits, want) < 1e-9);
  const yarn = rewrite(join(dir, "yarn.gguf"), (m) => m.set("llama.rope.scaling.type", { type: GgufValueType.STRING, value: "yarn" }));
  assert.throws(() => openModel(yarn), (e: unknown) => e instanceof UnsupportedError && /RoPE scaling type "yarn"/.test((e as Error).message));
  // Back to Hugging Face: linear factors become rope_scaling again; Llama 3's dict is kept from an HF source,
  // but cannot be recovered from a GGUF rope_freqs tensor.
  convertModel(asMetadata, join(dir, "linear-hf"), { to: "safetensors", dtype: "F32" });
  assert.deepEqual(JSON.parse(readFileSync(join(dir, "linear-hf", "config.json"), "utf8")).rope_scaling, { rope_type: "linear", factor: 4 });
  const llama3 = writeHfLlamaFixture(join(dir, "llama3"), { family: "llama3" });
  convertModel(llama3.dir, join(dir, "llama3-hf"), { to: "safetensors", dtype: "F32", tokenizer: TOKENIZER });
  assert.deepEqual(JSON.parse(readFileSync(join(dir, "llama3-hf", "config.json"), "utf8")).rope_scaling, llama3.config["rope_scaling"]);
  convertModel(llama3.dir, join(dir, "llama3.gguf"), { to: "gguf", dtype: "F32", tokenizer: TOKENIZER });
  assert.throws(() => convertModel(join(dir, "llama3.gguf"), join(dir, "never"), { to: "safetensors", dtype: "F32" }), (e: unknown) => e instanceof UnsupportedError && /rope_freqs/.test((e as Error).message));
  assert.ok(!existsSync(join(dir, "never")));
});

test("GPT-2 with its own classifier (a GGUF output.weight) becomes an untied Hugging Face GPT-2 with lm_head.weight", () => {
  const dir = tempDir();
  const gpt2 = writeHfLlamaFixture(join(dir, "gpt2"), { family: "gpt2" });
  const tied = join(dir, "tied.gguf");
  convertModel(gpt2.dir, tied, { to: "gguf", dtype: "F32", tokenizer: TOKENIZER });
  // Add a separate output.weight (older llama.cpp converters stored one).
  const untied = rewriteGguf(tied, join(dir, "untied.gguf"), (_, tensors) => {
    const embedding = tensors.find((t) => t.name === "token_embd.weight")!;
    const classifier = new Float32Array(embedding.byteLength / 4).map((_, i) => Math.sin(i) * 0.3);
    tensors.push({ name: "output.weight", dims: embedding.dims, type: embedding.type, byteLength: embedding.byteLength, bytes: () => new Uint8Array(classifier.buffer) });
  });
  const out = join(dir, "untied-hf");
  convertModel(untied, out, { to: "safetensors", dtype: "F32" });
  assert.equal(JSON.parse(readFileSync(join(out, "config.json"), "utf8")).tie_word_embeddings, false);
  assert.ok(openHfDirectory(out).tensors.some((t) => t.name === "lm_head.weight"));
  const ids = [1, 37, 402, 11, 250, 99];
  const want = loadModel(untied).model.forward(ids).logits;
  assert.ok(scaledError(loadModel(out).model.forward(ids).logits, want) < 1e-12);
  assert.ok(scaledError(loadModel(gpt2.dir).model.forward(ids).logits, want) > 1e-3, "the classifier matters");
});

test("Baichuan in GGUF: convert writes it as llama (head normalized); a file in llama.cpp's baichuan layout reads the same; 40 layers (ALiBi) is refused", () => {
  const dir = tempDir();
  const baichuan = writeHfLlamaFixture(join(dir, "baichuan"), { family: "baichuan" });
  const gguf = join(dir, "baichuan.gguf");
  convertModel(baichuan.dir, gguf, { to: "gguf", dtype: "F32", tokenizer: TOKENIZER });
  const ids = [1, 37, 402, 11, 250, 99, 500, 3];
  const want = loadModel(baichuan.dir).model.forward(ids).logits;
  assert.ok(scaledError(loadModel(gguf).model.forward(ids).logits, want) < 1e-9, "the llama-architecture GGUF is the same model");
  // llama.cpp's converter names: general.architecture baichuan, hyperparameters under baichuan.*.
  const rewrite = (out: string, blockCount?: number): string => rewriteGguf(gguf, out, (metadata) => {
    for (const [k, v] of [...metadata]) {
      if (!k.startsWith("llama.")) continue;
      metadata.delete(k);
      metadata.set(`baichuan.${k.slice(6)}`, v);
    }
    metadata.set("general.architecture", { type: GgufValueType.STRING, value: "baichuan" });
    if (blockCount !== undefined) metadata.set("baichuan.block_count", { type: GgufValueType.UINT32, value: blockCount });
  });
  const asBaichuan = loadModel(rewrite(join(dir, "arch-baichuan.gguf")));
  assert.equal(openModel(join(dir, "arch-baichuan.gguf")).architecture, "baichuan");
  assert.ok(scaledError(asBaichuan.model.forward(ids).logits, want) < 1e-9);
  assert.throws(() => openModel(rewrite(join(dir, "thirteen.gguf"), 40)), (e: unknown) => e instanceof UnsupportedError && /ALiBi/.test((e as Error).message));
});

test("GPT-2 config.json: transformers' defaults, fields type-checked, features the engine lacks refused", () => {
  const small = resolveHfGpt2Config({ model_type: "gpt2", n_inner: null }, "config.json");
  assert.deepEqual([small.dim, small.nLayers, small.nHeads, small.hiddenDim, small.contextLength, small.vocabSize, small.normEps], [768, 12, 12, 3072, 1024, 50257, 1e-5]);
  const corrupt: Record<string, unknown>[] = [{ n_embd: "768" }, { n_layer: 1.5 }, { layer_norm_epsilon: "1e-5" }, { tie_word_embeddings: "false" }, { n_inner: "big" }];
  for (const fields of corrupt) {
    const key = Object.keys(fields)[0]!;
    assert.throws(() => resolveHfGpt2Config({ model_type: "gpt2", ...fields }, "config.json"), (e: unknown) => e instanceof CheckpointError && e.message.includes(key), key);
  }
  assert.throws(() => resolveHfGpt2Config({ n_embd: 100, n_head: 12 }, "config.json"), (e: unknown) => e instanceof CheckpointError && /not a multiple of n_head/.test((e as Error).message));
  const lacking: Record<string, unknown>[] = [{ activation_function: "relu" }, { scale_attn_weights: false }, { scale_attn_by_inverse_layer_idx: true }, { add_cross_attention: true }];
  for (const fields of lacking) {
    const key = Object.keys(fields)[0]!;
    assert.throws(() => resolveHfGpt2Config({ model_type: "gpt2", ...fields }, "config.json"), (e: unknown) => e instanceof UnsupportedError && e.message.includes(key), key);
  }
});

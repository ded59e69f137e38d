// Layer loads without wasted work: the native bf16 widening and huge-page arrays
// (native/host_memory.c) against their JavaScript twins, tensors read into their own float32
// memory against the plain decode of their bytes, and embedding rows read alone against the
// rows of the whole table.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { openHfDirectory } from "../src/formats/hfDirectory.js";
import { openModel } from "../src/load.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { scoringWindows } from "../src/data/windows.js";
import { streamingBlockInfluence } from "../src/models/streaming.js";
import { embeddingNormView } from "../src/models/rwkv.js";
import { decodeBF16, decodeF16, readDecodedF32 } from "../src/tensor/dtype.js";
import { clearF32Pool, f32PoolStats, HOST_MEMORY_HELPER_PATH, hostMemoryNative, newF32, recycleF32, takeF32 } from "../src/tensor/hostMemory.js";
import { gatherTensorRows, readTensorRows, type TensorProvider } from "../src/tensor/provider.js";
import { type FixtureDtype, writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { tempDir } from "./helpers.js";

/** Every bf16 bit pattern (NaN payloads, infinities, subnormals, both zeros) as little-endian bytes, then a few more: an odd count. */
function allBf16Patterns(): Uint8Array {
  const n = 65536 + 7;
  const bytes = new Uint8Array(2 * n);
  for (let i = 0; i < n; i++) {
    const bits = i < 65536 ? i : (i * 40503) & 0xffff;
    bytes[2 * i] = bits & 0xff;
    bytes[2 * i + 1] = bits >> 8;
  }
  return bytes;
}

/** What bf16 bits mean, computed independently of both decoders: the float32 with those top 16 bits. */
function expectedBits(bytes: Uint8Array): Uint32Array {
  const out = new Uint32Array(bytes.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = ((bytes[2 * i + 1]! << 24) | (bytes[2 * i]! << 16)) >>> 0;
  return out;
}

const bitsOf = (f: Float32Array): Uint32Array => new Uint32Array(f.buffer, f.byteOffset, f.length);

test("bf16 widening: the native helper is built, and it and the JavaScript loop give every bit pattern exactly, from separate bytes and in place", () => {
  const native = hostMemoryNative();
  assert.ok(native, `the host memory helper ${HOST_MEMORY_HELPER_PATH} is built by npm install (scripts/build-native.mjs)`);
  const bytes = allBf16Patterns();
  const want = expectedBits(bytes);
  const n = want.length;
  for (const [name, decode] of [["javascript", decodeBF16], ["native", native.decodeBf16]] as const) {
    // Separate bytes, at an aligned and at an odd offset (the JavaScript loop's two paths).
    for (const shift of [0, 1]) {
      const padded = new Uint8Array(bytes.length + shift);
      padded.set(bytes, shift);
      const out = new Float32Array(n);
      decode(padded.subarray(shift), out);
      assert.deepEqual(bitsOf(out), want, `${name}, bytes at offset ${shift}`);
    }
    // In place: the bytes in the last half of the output's own memory, odd and even counts.
    for (const count of [n, n - 1]) {
      const out = new Float32Array(count);
      const tail = new Uint8Array(out.buffer, 2 * count, 2 * count);
      tail.set(bytes.subarray(0, 2 * count));
      decode(tail, out);
      assert.deepEqual(bitsOf(out), want.subarray(0, count), `${name} in place, ${count} values`);
    }
  }
  assert.throws(() => native.decodeBf16(new Uint8Array(3), new Float32Array(2)), RangeError);
  assert.throws(() => native.decodeBf16(new Float32Array(2) as unknown as Uint8Array, new Float32Array(1)), TypeError);
});

test("readDecodedF32: BF16, F16 and F32 bytes read into the array's own memory equal the plain decode of the same bytes", () => {
  const bytes = allBf16Patterns();
  const n = bytes.length / 2;
  const plainBf16 = new Float32Array(n);
  decodeBF16(bytes.slice(), plainBf16);
  const plainF16 = new Float32Array(n);
  decodeF16(bytes.slice(), plainF16);
  assert.deepEqual(bitsOf(readDecodedF32("BF16", n, (into) => into.set(bytes))), bitsOf(plainBf16));
  assert.deepEqual(bitsOf(readDecodedF32("F16", n, (into) => into.set(bytes))), bitsOf(plainF16));
  const f32 = bytes.subarray(0, 4 * Math.floor(n / 2));
  assert.deepEqual(bitsOf(readDecodedF32("F32", f32.length / 4, (into) => into.set(f32))), new Uint32Array(f32.slice().buffer));
});

test("newF32: large arrays are advised onto huge pages where the kernel allows, and every array starts zeroed", () => {
  const native = hostMemoryNative()!;
  const big = newF32(5 << 20); // 20 MiB: at least eight whole 2 MiB pages inside
  assert.ok(big.every((v) => v === 0));
  assert.equal(native.adviseHugePages(new Float32Array(16)), 0, "no whole huge page inside 64 bytes");
  const advised = native.adviseHugePages(big);
  assert.ok(advised === 0 || (advised >= 8 * (2 << 20) && advised % (2 << 20) === 0 && advised <= big.byteLength), `advised ${advised} bytes`);
  assert.equal(newF32(3).length, 3);
});

for (const dtype of ["BF16", "F16", "F32"] as FixtureDtype[]) {
  test(`HF ${dtype} directory: tensors read in place equal the decode of their bytes; embedding rows read alone equal those rows of the whole table`, (t) => {
    const dir = join(tempDir(), "model");
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    writeHfLlamaFixture(dir, { dtype });
    const hf = openHfDirectory(dir);
    const opened = openModel(dir);
    try {
      const provider = opened.provider;
      for (const entry of hf.tensors) {
        const plain = new Float32Array(entry.shape.reduce((a, b) => a * b, 1));
        const bytes = hf.readTensorBytes(entry.name);
        if (dtype === "BF16") decodeBF16(bytes, plain);
        else if (dtype === "F16") decodeF16(bytes, plain);
        else plain.set(new Float32Array(Uint8Array.from(bytes).buffer));
        assert.deepEqual(bitsOf(provider.readF32(entry.name)), bitsOf(plain), entry.name);
      }
      const name = opened.names.embedding;
      const nRows = opened.config.vocabSize;
      // Repeats, out of order, the first and the last row.
      const rows = Int32Array.from([5, 0, nRows - 1, 5, 17, 3]);
      assert.ok(provider.readRowsF32, "the HF provider reads rows alone");
      const alone = readTensorRows(provider, name, rows);
      assert.deepEqual(bitsOf(alone), bitsOf(gatherTensorRows(provider.readF32(name), nRows, rows, name, dir)));
      assert.throws(() => readTensorRows(provider, name, Int32Array.from([nRows])), /row \d+ of tensor .* is outside 0\.\./);
    } finally {
      opened.close();
      hf.close();
    }
  });
}

test("RWKV's ln0 view: embedding rows read alone and normalized equal those rows of the whole normalized table, with and without a row reader below", () => {
  const [vocab, dim] = [11, 6];
  const tensors = new Map<string, { shape: number[]; values: Float32Array }>([
    ["emb", { shape: [vocab, dim], values: Float32Array.from({ length: vocab * dim }, (_, i) => Math.sin(i * 1.7) * (1 + (i % 5))) }],
    ["ln0.weight", { shape: [dim], values: Float32Array.from({ length: dim }, (_, i) => 0.5 + i / 7) }],
    ["ln0.bias", { shape: [dim], values: Float32Array.from({ length: dim }, (_, i) => i / 3 - 1) }],
  ]);
  const plain: TensorProvider = {
    source: "memory",
    entries: () => [...tensors].map(([name, t]) => ({ name, shape: t.shape, dtype: "F32" })),
    readF32: (name) => tensors.get(name)!.values.slice(),
  };
  const withRows: TensorProvider = { ...plain, readRowsF32: (name, rows) => gatherTensorRows(plain.readF32(name), tensors.get(name)!.shape[0]!, rows, name, "memory") };
  const rows = Int32Array.from([10, 2, 2, 0]);
  for (const stored of [plain, withRows]) {
    const view = embeddingNormView(stored, 1e-5, { embedding: "emb", weight: "ln0.weight", bias: "ln0.bias" }, "test");
    const whole = view.readF32("emb");
    assert.deepEqual(bitsOf(readTensorRows(view, "emb", rows)), bitsOf(gatherTensorRows(whole, vocab, rows, "emb", "memory")));
    // The view really normalizes (the rows differ from the stored ones).
    assert.notDeepEqual(Array.from(whole.subarray(0, dim)), Array.from(tensors.get("emb")!.values.subarray(0, dim)));
    // Other tensors pass through unchanged.
    assert.deepEqual(readTensorRows(view, "ln0.weight", Int32Array.from([1])), Float32Array.from([tensors.get("ln0.weight")!.values[1]!]));
  }
});

test("streaming BI reads only the embedding rows of its tokens, and scores exactly as with rows taken from the whole table", async (t) => {
  const dir = join(tempDir(), "model");
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeHfLlamaFixture(dir, { dtype: "BF16" });
  const opened = openModel(dir);
  try {
    const stored = opened.provider;
    const embedding = opened.names.embedding;
    let wholeReads = 0;
    const counting: TensorProvider = {
      source: stored.source,
      entries: () => stored.entries(),
      readF32: (name) => {
        if (name === embedding) wholeReads++;
        return stored.readF32(name);
      },
      readRowsF32: (name, rows) => stored.readRowsF32!(name, rows),
    };
    const withoutRowReader: TensorProvider = { source: stored.source, entries: () => stored.entries(), readF32: (name) => stored.readF32(name) };
    const vocab = opened.config.vocabSize;
    const ids = [[1, 7, 7, 3, vocab - 1, 9, 2, 7], [1, 4, 4, 4, 0, 5, 6, 8]];
    const windows = scoringWindows(ids, { seqLen: 8, stride: 8 });
    const backend = createReferenceBackend();
    const fast = await streamingBlockInfluence({ ...opened, provider: counting }, windows, { backend });
    assert.equal(wholeReads, 0, "the whole embedding table was never read");
    const whole = await streamingBlockInfluence({ ...opened, provider: withoutRowReader }, windows, { backend });
    assert.deepEqual(fast.layers.map((l) => l.bi), whole.layers.map((l) => l.bi));
    await assert.rejects(streamingBlockInfluence({ ...opened, provider: counting }, scoringWindows([[1, vocab]], { seqLen: 2, stride: 2 }), { backend }), /token id \d+ is outside the vocabulary/);
  } finally {
    opened.close();
  }
});

test("the pool of finished layers' arrays: only takeF32's arrays come back, each once, by length; streaming leaves it empty", async (t) => {
  clearF32Pool();
  const a = takeF32(1000);
  const b = takeF32(1000);
  const foreign = new Float32Array(1000);
  recycleF32([a, a, foreign, undefined]);
  assert.deepEqual(f32PoolStats(), { arrays: 1, bytes: 4000 }, "a once, the foreign array not at all");
  recycleF32([a]);
  assert.equal(f32PoolStats().arrays, 1, "a second hand-back of the same array is ignored");
  assert.notEqual(takeF32(999), a, "another length gets a new array");
  assert.equal(takeF32(1000), a, "the same length reuses it");
  assert.notEqual(takeF32(1000), a, "and hands it out once");
  recycleF32([b]);
  clearF32Pool();
  assert.deepEqual(f32PoolStats(), { arrays: 0, bytes: 0 });

  // A streamed run reuses its layers' arrays (two layers live with prefetch, so from the third
  // load on) and leaves nothing behind; its scores are exactly those of a run without reuse.
  const dir = join(tempDir(), "model");
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeHfLlamaFixture(dir, { dtype: "BF16" });
  const opened = openModel(dir);
  try {
    const windows = scoringWindows([[1, 5, 9, 2, 7, 3, 3, 8]], { seqLen: 8, stride: 8 });
    const backend = createReferenceBackend();
    const seen = new Set<Float32Array>();
    let reused = 0;
    const stored = opened.provider;
    const watching: TensorProvider = {
      source: stored.source,
      entries: () => stored.entries(),
      readF32: (name) => {
        const w = stored.readF32(name);
        if (seen.has(w)) reused++;
        seen.add(w);
        return w;
      },
      readRowsF32: (name, rows) => stored.readRowsF32!(name, rows),
    };
    const pooled = await streamingBlockInfluence({ ...opened, provider: watching }, windows, { backend });
    assert.ok(reused > 0, "later layers were read into earlier layers' arrays");
    assert.deepEqual(f32PoolStats(), { arrays: 0, bytes: 0 });
    // Without reuse: every layer read afresh (copies), the pool never sees them.
    const fresh = await streamingBlockInfluence({ ...opened, provider: { ...watching, readF32: (name) => stored.readF32(name).slice() } }, windows, { backend });
    assert.deepEqual(pooled.layers.map((l) => l.bi), fresh.layers.map((l) => l.bi));
  } finally {
    opened.close();
  }
});

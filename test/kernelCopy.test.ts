// Pruning copies tensor bytes inside the kernel (copy_file_range via the native helper that
// `npm ci` builds). The kernel path and the user-space path must write identical files, and
// the kernel path must actually run where the helper is built.

import assert from "node:assert/strict";
import { closeSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { RandomAccessFile, writeChunks } from "../src/formats/file.js";
import { copyStats, kernelCopyAvailable, NATIVE_HELPER_PATH, setKernelCopy } from "../src/formats/kernelCopy.js";
import { removeLayers } from "../src/prune/removeLayers.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { MODEL_BIN, MODEL_GGUF, sha256, tempDir } from "./helpers.js";

test("the native copy helper is built and loads (npm ci builds it with the C compiler)", () => {
  assert.ok(kernelCopyAvailable(), `${NATIVE_HELPER_PATH} missing or not loadable: run node scripts/build-native.mjs`);
});

test("writeChunks copies a file range kernel-side at the descriptor's position, bytes exact", () => {
  const dir = tempDir();
  const input = join(dir, "in.bin");
  const bytes = Buffer.alloc(3_000_017);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
  writeFileSync(input, bytes);
  const file = new RandomAccessFile(input);
  const output = join(dir, "out.bin");
  const fd = openSync(output, "wx");
  try {
    writeSync(fd, Buffer.from("head"));
    const before = copyStats.kernelBytes;
    assert.equal(writeChunks(fd, file.readChunks(1234, 2_000_000, "range", 1 << 16)), 2_000_000);
    assert.equal(copyStats.kernelBytes - before, 2_000_000);
    writeSync(fd, Buffer.from("tail"));
  } finally {
    closeSync(fd);
    file.close();
  }
  const out = readFileSync(output);
  assert.equal(out.length, 8 + 2_000_000);
  assert.equal(out.subarray(0, 4).toString(), "head");
  assert.ok(out.subarray(4, 4 + 2_000_000).equals(bytes.subarray(1234, 1234 + 2_000_000)));
  assert.equal(out.subarray(-4).toString(), "tail");
});

test("writeChunks with a limit refuses a range longer than declared without copying it", () => {
  const dir = tempDir();
  const input = join(dir, "in.bin");
  writeFileSync(input, Buffer.alloc(100, 7));
  const file = new RandomAccessFile(input);
  const fd = openSync(join(dir, "out.bin"), "wx");
  try {
    assert.ok(writeChunks(fd, file.readChunks(0, 100, "range", 64), 50) > 50);
    assert.equal(readFileSync(join(dir, "out.bin")).length, 0, "nothing past the limit was written");
  } finally {
    closeSync(fd);
    file.close();
  }
});

test("pruning writes the same bytes through the kernel and through user space (llama2.c, GGUF, HF)", () => {
  const dir = tempDir();
  const hf = writeHfLlamaFixture(join(dir, "hf"), { dtype: "BF16", shards: 2 });
  const cases = [
    { input: MODEL_BIN, name: "pruned.bin", layers: [1, 3] },
    { input: MODEL_GGUF, name: "pruned.gguf", layers: [0, 4] },
    { input: hf.dir, name: "pruned-hf", layers: [2] },
  ];
  for (const c of cases) {
    const viaKernel = join(dir, `kernel-${c.name}`);
    const viaUser = join(dir, `user-${c.name}`);
    const before = copyStats.kernelBytes;
    const result = removeLayers(c.input, viaKernel, c.layers);
    assert.equal(copyStats.kernelBytes - before, result.bytesWritten, `${c.name}: every tensor byte copied kernel-side`);
    setKernelCopy(false);
    try {
      const userBefore = copyStats.kernelBytes;
      removeLayers(c.input, viaUser, c.layers);
      assert.equal(copyStats.kernelBytes, userBefore, `${c.name}: switched off, the kernel path did not run`);
    } finally {
      setKernelCopy(true);
    }
    const files = c.input === hf.dir ? readdirSync(viaKernel).sort() : [""];
    if (c.input === hf.dir) assert.deepEqual(readdirSync(viaUser).sort(), files);
    for (const f of files) {
      const a = f === "" ? viaKernel : join(viaKernel, f);
      const b = f === "" ? viaUser : join(viaUser, f);
      assert.equal(sha256(a), sha256(b), `${c.name} ${f}: identical output`);
    }
  }
});

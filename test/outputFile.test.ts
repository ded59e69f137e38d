// Checkpoints are written through OutputFile: with the native helper that `npm ci` builds,
// ranges are read with pread and written with O_DIRECT from a background thread; without it,
// through a buffer and plain writes. Both must write identical files, the native path must
// actually run where the helper is built, and O_DIRECT must be on where the file system has it.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { closeSync, constants, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { CheckpointError } from "../src/errors.js";
import { RandomAccessFile } from "../src/formats/file.js";
import { NATIVE_HELPER_PATH, nativeOutputAvailable, OutputFile, outputStats, setNativeOutput, writeChunks, writeOutputFile } from "../src/formats/outputFile.js";
import { removeLayers } from "../src/prune/removeLayers.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { MODEL_BIN, MODEL_GGUF, sha256, tempDir } from "./helpers.js";

/** Whether the file system under `dir` accepts O_DIRECT (tmpfs does not). */
function directIoWorks(dir: string): boolean {
  const probe = join(dir, "direct-probe");
  try {
    closeSync(openSync(probe, constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT));
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { force: true });
  }
}

function withNativeOutput<T>(on: boolean, run: () => T): T {
  setNativeOutput(on);
  try {
    return run();
  } finally {
    setNativeOutput(true);
  }
}

function patternBytes(length: number): Buffer {
  const bytes = Buffer.alloc(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 2654435761) >>> 24;
  return bytes;
}

test("the native output helper is built and loads (npm ci builds it with the C compiler)", () => {
  assert.ok(nativeOutputAvailable(), `${NATIVE_HELPER_PATH} missing or not loadable: run node scripts/build-native.mjs`);
});

test("OutputFile writes bytes and file ranges in order, exact size, natively and buffered alike", () => {
  const dir = tempDir();
  // Over two of the native writer's 32 MiB buffers, with an odd total so the last block is padded and cut back.
  const input = join(dir, "in.bin");
  const bytes = patternBytes(75_000_017);
  writeFileSync(input, bytes);
  const file = new RandomAccessFile(input);
  const expected = Buffer.concat([Buffer.from("head"), bytes.subarray(1234, 1234 + 70_000_000), Buffer.from("mid"), bytes.subarray(5, 4_000_005), Buffer.from("tail")]);
  try {
    for (const native of [true, false]) {
      const output = join(dir, `out-${native}.bin`);
      const before = { ...outputStats };
      withNativeOutput(native, () => writeOutputFile(output, (out) => {
        out.write(Buffer.from("head"));
        assert.equal(writeChunks(out, file.readChunks(1234, 70_000_000, "range", 1 << 16)), 70_000_000);
        out.write(Buffer.from("mid"));
        out.copyFrom(file.readChunks(5, 4_000_000, "second range"));
        out.write(Buffer.from("tail"));
        assert.equal(out.bytesWritten, expected.length);
      }));
      const got = readFileSync(output);
      assert.equal(got.length, expected.length, `native=${native}: exact size`);
      assert.ok(got.equals(expected), `native=${native}: same bytes`);
      if (native) {
        assert.equal(outputStats.nativeBytes - before.nativeBytes, expected.length, "the native writer wrote every byte");
        // Every full 32 MiB buffer goes direct where the file system has O_DIRECT; the padded tail may not (blocks over 4 KiB).
        const direct = outputStats.directBytes - before.directBytes;
        if (directIoWorks(dir)) assert.ok(direct >= 2 * (32 << 20) && direct <= expected.length, `written with O_DIRECT: ${direct} bytes`);
      } else {
        assert.equal(outputStats.nativeBytes, before.nativeBytes, "switched off, the native writer did not run");
        assert.equal(outputStats.bufferedBytes - before.bufferedBytes, expected.length);
      }
    }
  } finally {
    file.close();
  }
});

test("writeChunks with a limit refuses a range longer than declared without copying it", () => {
  const dir = tempDir();
  const input = join(dir, "in.bin");
  writeFileSync(input, Buffer.alloc(100, 7));
  const file = new RandomAccessFile(input);
  try {
    writeOutputFile(join(dir, "out.bin"), (out) => assert.ok(writeChunks(out, file.readChunks(0, 100, "range", 64), 50) > 50));
    assert.equal(readFileSync(join(dir, "out.bin")).length, 0, "nothing past the limit was written");
  } finally {
    file.close();
  }
});

test("an input that shrinks while it is copied is a CheckpointError naming it, on both paths", () => {
  const dir = tempDir();
  const input = join(dir, "in.bin");
  for (const native of [true, false]) {
    writeFileSync(input, Buffer.alloc(1 << 20, 3));
    const file = new RandomAccessFile(input);
    const range = file.readChunks(0, 1 << 20, "tensor t");
    truncateSync(input, 1000); // after the range was checked against the size
    const output = join(dir, `out-${native}.bin`);
    try {
      assert.throws(
        () => withNativeOutput(native, () => writeOutputFile(output, (out) => out.copyFrom(range))),
        (err: unknown) => err instanceof CheckpointError && err.message.includes(input) && err.message.includes("tensor t"),
      );
    } finally {
      file.close();
    }
  }
});

test("an aborted or finished OutputFile accepts nothing more; abort twice is harmless", () => {
  const dir = tempDir();
  for (const native of [true, false]) {
    withNativeOutput(native, () => {
      const aborted = new OutputFile(join(dir, `aborted-${native}.bin`));
      aborted.write(Buffer.from("x"));
      aborted.abort();
      aborted.abort();
      assert.throws(() => aborted.write(Buffer.from("y")), /already aborted/);
      assert.throws(() => aborted.finish(), /already aborted/);
      const finished = new OutputFile(join(dir, `finished-${native}.bin`));
      finished.write(Buffer.from("z"));
      finished.finish();
      assert.throws(() => finished.write(Buffer.from("y")), /already finished/);
      finished.abort();
      assert.equal(readFileSync(join(dir, `finished-${native}.bin`)).toString(), "z");
    });
  }
});

test("a write the file system refuses (a file size limit) is an OutputError; no output, no temp file", () => {
  const dir = tempDir();
  // Child processes under `ulimit -f` (KiB): the writes fail with EFBIG. "prune": stories260K
  // (1.2 MB) under 256 KiB, where the last block fails; "stream": 80 MiB of 1 MiB writes under
  // 20 MiB, where the native writer thread fails on a full 32 MiB buffer and the error surfaces
  // at a later write.
  const script = join(dir, "child.mjs");
  writeFileSync(script, [
    `import { removeLayers } from ${JSON.stringify(new URL("../src/prune/removeLayers.js", import.meta.url).href)};`,
    `import { setNativeOutput, writeOutputFile } from ${JSON.stringify(new URL("../src/formats/outputFile.js", import.meta.url).href)};`,
    `const [path, mode, output] = process.argv.slice(2);`,
    `setNativeOutput(path === "native");`,
    `let written = 0;`,
    `try {`,
    `  if (mode === "prune") removeLayers(${JSON.stringify(MODEL_GGUF)}, output, [1]);`,
    `  else writeOutputFile(output, (out) => { for (let i = 0; i < 80; i++) { out.write(Buffer.alloc(1 << 20, i)); written += 1 << 20; } });`,
    `  console.log(JSON.stringify({ ok: true }));`,
    `} catch (e) { console.log(JSON.stringify({ name: e.constructor.name, message: e.message, hint: e.details?.hint, written })); }`,
  ].join("\n"));
  for (const path of ["native", "buffered"]) {
    for (const [mode, limitKiB] of [["prune", 256], ["stream", 20 << 10]] as const) {
      const out = join(dir, `${path}-${mode}`);
      mkdirSync(out);
      const child = spawnSync("sh", ["-c", `ulimit -f ${limitKiB}; exec "$0" "$@"`, process.execPath, script, path, mode, join(out, "out.bin")], { encoding: "utf8" });
      assert.equal(child.status, 0, child.stderr);
      const result = JSON.parse(child.stdout) as { name?: string; message?: string; hint?: string; written: number };
      assert.equal(result.name, "OutputError", `${path} ${mode}: ${child.stdout}`);
      assert.match(result.message!, /cannot write .*out\.bin/);
      assert.match(result.hint!, /ulimit -f/);
      if (mode === "prune") assert.deepEqual(readdirSync(out), [], `${path}: nothing left behind`);
      else assert.ok(result.written < 80 << 20, `${path}: the failure surfaced while writing (${result.written} bytes accepted)`);
    }
  }
});

test("pruning writes the same bytes natively and buffered (llama2.c, GGUF, HF)", () => {
  const dir = tempDir();
  const hf = writeHfLlamaFixture(join(dir, "hf"), { dtype: "BF16", shards: 2 });
  const cases = [
    { input: MODEL_BIN, name: "pruned.bin", layers: [1, 3] },
    { input: MODEL_GGUF, name: "pruned.gguf", layers: [0, 4] },
    { input: hf.dir, name: "pruned-hf", layers: [2] },
  ];
  for (const c of cases) {
    const viaNative = join(dir, `native-${c.name}`);
    const viaBuffered = join(dir, `buffered-${c.name}`);
    const before = outputStats.nativeBytes;
    const result = removeLayers(c.input, viaNative, c.layers);
    const weightFiles = c.input === hf.dir ? readdirSync(viaNative).filter((f) => f.endsWith(".safetensors")).map((f) => join(viaNative, f)) : [viaNative];
    const weightBytes = weightFiles.reduce((n, f) => n + statSync(f).size, 0);
    assert.ok(weightBytes > result.bytesWritten, `${c.name}: the files hold the tensors and their headers`);
    assert.equal(outputStats.nativeBytes - before, weightBytes, `${c.name}: every byte of the weight files written natively`);
    const nativeAfter = outputStats.nativeBytes;
    withNativeOutput(false, () => removeLayers(c.input, viaBuffered, c.layers));
    assert.equal(outputStats.nativeBytes, nativeAfter, `${c.name}: switched off, the native writer did not run`);
    const files = c.input === hf.dir ? readdirSync(viaNative).sort() : [""];
    if (c.input === hf.dir) assert.deepEqual(readdirSync(viaBuffered).sort(), files);
    for (const f of files) {
      const a = f === "" ? viaNative : join(viaNative, f);
      const b = f === "" ? viaBuffered : join(viaBuffered, f);
      assert.equal(sha256(a), sha256(b), `${c.name} ${f}: identical output`);
    }
  }
});

// kill -9 in the middle of prune and convert: the output never appears partial, what the killed
// writer left is only a recognisable temporary name, and the next run removes it.
//
// The writer is stopped at an exact point by a preload script (no hook in the product): it turns
// the native output writer off (so bytes go through fs.writeSync), then blocks forever either
// after 16 KiB have been written to the output or when the finished temporary output is about to
// be renamed into place, and says so through a marker file; the test then sends SIGKILL.

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { openModel } from "../src/load.js";
import { repoRoot } from "../src/shared.js";
import { claimTempPath, removeStaleTemps, TEMP_HOST } from "../src/util/atomicWrite.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { MODEL_BIN, MODEL_GGUF, TOKENIZER, runCli, tempDir } from "./helpers.js";

const PRELOAD = `
const fs = require("fs");
const Module = require("module");
const load = Module._load;
Module._load = function (request, ...rest) {
  if (String(request).endsWith("shortgpt_native.node")) throw new Error("native writer off for this test");
  return load.call(this, request, ...rest);
};
let stalled = false;
function stall() {
  stalled = true;
  fs.writeFileSync(process.env.STALL_MARKER, String(process.pid));
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // blocks until killed
}
if (process.env.STALL_AT === "write") {
  const writeSync = fs.writeSync;
  let total = 0;
  fs.writeSync = function (...args) {
    const n = writeSync.apply(this, args);
    total += n;
    if (!stalled && total >= 16384) stall();
    return n;
  };
}
if (process.env.STALL_AT === "rename") {
  const renameSync = fs.renameSync;
  fs.renameSync = function (from, to) {
    if (!stalled && String(from).includes(".shortgpt-tmp-")) stall();
    return renameSync.call(this, from, to);
  };
}
Module.syncBuiltinESMExports();
`;

const TEMP = new RegExp(`^\\..+\\.shortgpt-(tmp|old)-${TEMP_HOST}-(\\d+)-\\d+$`);

let preloadPath: string | undefined;
function preload(): string {
  if (preloadPath === undefined) {
    preloadPath = join(tempDir(), "stall.cjs");
    writeFileSync(preloadPath, PRELOAD);
  }
  return preloadPath;
}

/** Starts the CLI with the stall preload, waits until it stalls, kills it with SIGKILL and returns its pid. */
async function killMidWrite(args: string[], at: "write" | "rename"): Promise<number> {
  const marker = join(tempDir(), "stalled");
  const child = spawn(process.execPath, ["--require", preload(), join(repoRoot(), "dist", "src", "cli", "main.js"), ...args], {
    env: { ...process.env, CI: "true", STALL_AT: at, STALL_MARKER: marker }, stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const started = Date.now();
  while (!existsSync(marker)) {
    assert.equal(child.exitCode, null, `the writer finished before it stalled: ${stderr}`);
    assert.ok(Date.now() - started < 60_000, "the writer never reached the stall point");
    await sleep(20);
  }
  child.kill("SIGKILL");
  await exited;
  assert.equal(child.signalCode, "SIGKILL");
  return child.pid!;
}

/** Bytes of a file, or of every file in a folder. */
function bytesOf(path: string): number {
  const s = statSync(path);
  return s.isDirectory() ? readdirSync(path).reduce((n, f) => n + bytesOf(join(path, f)), 0) : s.size;
}

interface WriteCase {
  name: string;
  output: string;
  args: (dir: string, out: string) => string[];
}

const hfInput = (): string => {
  const dir = join(tempDir(), "hf");
  writeHfLlamaFixture(dir);
  return dir;
};

const CASES: WriteCase[] = [
  { name: "prune llama2.c", output: "out.bin", args: (_, out) => ["prune", MODEL_BIN, "--out", out, "--layers", "1"] },
  { name: "prune GGUF", output: "out.gguf", args: (_, out) => ["prune", MODEL_GGUF, "--out", out, "--layers", "2"] },
  { name: "prune Hugging Face", output: "out", args: (_, out) => ["prune", hfInput(), "--out", out, "--layers", "1"] },
  { name: "convert to GGUF", output: "out.gguf", args: (_, out) => ["convert", MODEL_BIN, "--to", "gguf", out] },
  { name: "convert to safetensors", output: "out", args: (_, out) => ["convert", MODEL_BIN, "--to", "safetensors", out] },
];

for (const c of CASES) {
  test(`kill -9 during ${c.name} leaves no output, and the next run cleans up`, async () => {
    for (const at of ["write", "rename"] as const) {
      const dir = tempDir();
      const out = join(dir, c.output);
      const args = c.args(dir, out);
      const pid = await killMidWrite(args, at);
      const left = readdirSync(dir);
      assert.ok(!left.includes(c.output), `${at}: the output must not appear: ${left.join(", ")}`);
      assert.ok(!left.includes(`${c.output}.json`), `${at}: nor its record`);
      const temps = left.filter((f) => TEMP.exec(f)?.[2] === String(pid));
      assert.equal(temps.length, 1, `${at}: the killed writer's temporary output is recognisable: ${left.join(", ")}`);
      const partialBytes = bytesOf(join(dir, temps[0]!));

      const rerun = runCli(args);
      assert.equal(rerun.status, 0, rerun.stderr);
      const after = readdirSync(dir);
      assert.deepEqual(after.filter((f) => TEMP.test(f)), [], `${at}: the next run removed what the killed one left`);
      assert.ok(after.includes(c.output));
      if (at === "write") assert.ok(partialBytes < bytesOf(out), `${at}: the killed writer stopped part-way (${partialBytes} of ${bytesOf(out)} bytes)`);
      const opened = openModel(out, { tokenizer: TOKENIZER }); // the tokenizer option matters only for llama2.c
      opened.close();
    }
  });
}

test("stale temporary outputs: a dead writer's are removed, a moved-aside output restored only if it died between the renames; live writers', other hosts' and other outputs' are kept", () => {
  const dir = tempDir();
  const dead = spawnSync(process.execPath, ["-e", ""]).pid!; // has exited by now
  const h = TEMP_HOST;
  // "model": its writer died between moving the old output aside and renaming the new one in.
  mkdirSync(join(dir, `.model.shortgpt-old-${h}-${dead}-1`));
  writeFileSync(join(dir, `.model.shortgpt-old-${h}-${dead}-1`, "config.json"), "{}");
  mkdirSync(join(dir, `.model.shortgpt-tmp-${h}-${dead}-2`));
  // "gone": an output the user removed after its replace was killed while deleting the old copy.
  mkdirSync(join(dir, `.gone.shortgpt-old-${h}-${dead}-1`));
  writeFileSync(join(dir, `.m.gguf.shortgpt-tmp-${h}-${dead}-3`), "partial");
  writeFileSync(join(dir, `.m.gguf.shortgpt-tmp-${h}-${process.pid}-4`), "being written by a live process");
  writeFileSync(join(dir, `.m.gguf.shortgpt-tmp-other_host-${dead}-5`), "another machine's writer: its pid means nothing here");
  writeFileSync(join(dir, ".m.gguf.tmp-1-2"), "not ours: another tool's name");
  assert.deepEqual(removeStaleTemps(join(dir, "m.gguf")), [`.m.gguf.shortgpt-tmp-${h}-${dead}-3`]);
  assert.deepEqual(removeStaleTemps(join(dir, "model")).sort(), [`.model.shortgpt-old-${h}-${dead}-1`, `.model.shortgpt-tmp-${h}-${dead}-2`]);
  assert.deepEqual(removeStaleTemps(join(dir, "gone")), [`.gone.shortgpt-old-${h}-${dead}-1`]);
  assert.deepEqual(readdirSync(dir).sort(), [`.m.gguf.shortgpt-tmp-${h}-${process.pid}-4`, `.m.gguf.shortgpt-tmp-other_host-${dead}-5`, ".m.gguf.tmp-1-2", "model"].sort());
  assert.ok(existsSync(join(dir, "model", "config.json")), "the moved-aside output is back under its name");
  assert.ok(!existsSync(join(dir, "gone")), "an output the user emptied is not resurrected");
  assert.match(claimTempPath(join(dir, "x.bin")), new RegExp(`/\\.x\\.bin\\.shortgpt-tmp-${h}-${process.pid}-\\d+$`));
});

// The fuzzer in CI: a fixed seed and a bounded number of inputs must find nothing; and its
// classification turns each kind of failure into the finding it names.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { type Case, classify, FINDING_CLASSES, FORMATS, type FuzzSummary, type JobOutcome, memoryBoundKb } from "../fuzz/fuzz.js";
import { repoRoot } from "../src/shared.js";
import { tempDir } from "./helpers.js";

test("fuzzing 300 inputs (seed 1) through inspect and score finds no hang, crash, internal error, stack trace, over-allocation or write", () => {
  const dir = tempDir();
  const summaryPath = join(dir, "summary.json");
  const r = spawnSync(process.execPath, [join(repoRoot(), "dist", "fuzz", "fuzz.js"), "--seed", "1", "--inputs", "300", "--seconds", "150", "--cli-every", "30",
    "--out", join(dir, "findings"), "--json", summaryPath], { encoding: "utf8", timeout: 240_000 });
  const summary = JSON.parse(readFileSync(summaryPath, "utf8")) as FuzzSummary;
  assert.deepEqual(summary.findings, [], "findings:\n" + JSON.stringify(summary.findings, null, 2));
  assert.equal(r.status, 0, r.stderr);
  for (const c of FINDING_CLASSES) assert.equal(summary.classes[c], 0, c);
  assert.ok(summary.inputs >= 150, `only ${summary.inputs} inputs ran`);
  assert.ok(summary.cliChecks >= 5);
  for (const f of FORMATS) {
    assert.ok(summary.perFormat[f].refused > 0, `${f}: mutations must be refused sometimes`);
    assert.equal(summary.perFormat[f].inputs, summary.perFormat[f].accepted + summary.perFormat[f].refused);
  }
  // Mutations are not all fatal: some inputs of the formats whose fields are mostly weights still load.
  assert.ok(summary.classes.accepted > 0);
  assert.ok(FORMATS.reduce((n, f) => n + summary.perFormat[f].scored, 0) > 0, "score ran to the end on some inputs");
});

test("the fuzzer's classification: each failure becomes the finding it names", () => {
  const c: Case = { index: 0, format: "gguf", dir: "/x", what: "test", inputBytes: 1_000_000, model: "/x/m.gguf", extra: [] };
  const result = (outcomes: { kind: "accepted" | "refused" | "internal"; message: string }[], peakDeltaKb = 1000): JobOutcome => ({
    kind: "result", result: { id: 0, ms: 1, peakDeltaKb, outcomes: outcomes.map((o) => ({ ...o, command: "inspect", exitCode: o.kind === "accepted" ? 0 : o.kind === "refused" ? 1 : 70 })) },
  });
  const classes = (outcome: JobOutcome, wrote?: string): string[] => classify(c, outcome, wrote).findings.map((f) => f.class);
  assert.deepEqual(classes(result([{ kind: "accepted", message: "" }])), []);
  assert.equal(classify(c, result([{ kind: "accepted", message: "" }]), undefined).accepted, true);
  assert.deepEqual(classes(result([{ kind: "refused", message: "m.gguf: tensor x is missing" }])), []);
  assert.deepEqual(classes({ kind: "hang" }), ["hang"]);
  assert.deepEqual(classes({ kind: "crash", detail: "worker exited (code null, signal SIGSEGV)" }), ["crash"]);
  assert.deepEqual(classes({ kind: "crash", detail: "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory" }), ["over-allocation"]);
  assert.deepEqual(classes({ kind: "rss", kb: 3_000_000 }), ["over-allocation"]);
  assert.deepEqual(classes(result([{ kind: "internal", message: "TypeError: x is undefined" }])), ["internal"]);
  assert.deepEqual(classes(result([{ kind: "refused", message: "RangeError: Maximum call stack size exceeded" }])), ["stack-trace"]);
  assert.deepEqual(classes(result([{ kind: "refused", message: "two\nlines" }])), ["stack-trace"]);
  assert.deepEqual(classes(result([{ kind: "refused", message: "x".repeat(5000) }])), ["stack-trace"], "a megabyte-long line is not a message");
  assert.deepEqual(classes(result([{ kind: "refused", message: "fine" }], memoryBoundKb(c.inputBytes) + 1)), ["over-allocation"]);
  assert.deepEqual(classes(result([{ kind: "refused", message: "fine" }], memoryBoundKb(c.inputBytes))), []);
  assert.deepEqual(classes(result([{ kind: "accepted", message: "" }]), "the input folder changed"), ["write"]);
});

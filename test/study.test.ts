// `shortgpt study`: the pruning x quantization grid is the composition of the commands it stands
// for. Each cell must equal what `eval` gives on the model with the layers skipped, or on the file
// `convert` + `prune` write; sizes equal the files' tensor bytes; the additivity table is the
// grid's own arithmetic; the work folder is cleaned up; bad options fail before any work.

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { readGguf } from "../src/formats/gguf.js";
import { MODEL_BIN, runCli, tempDir, TINYSTORIES } from "./helpers.js";

// The first stories of TinyStories' validation text (a temporary file: each command tokenizes its whole text).
const TEXT = join(tempDir(), "stories.txt");
writeFileSync(TEXT, readFileSync(TINYSTORIES, "utf8").slice(0, 12000));
const WINDOWS = ["--seq-len", "128", "--max-tokens", "768"];
const PPL = `ppl:${TEXT}`;

interface Row { pruned: boolean; removed: number[]; quant: string; unquantized: boolean; bytes: number; fileBytes?: number; evals: Record<string, number>; fallbacks?: { tensor: string; dtype: string }[] }
interface Additivity { quant: string; eval: string; prune: number; quantize: number; both: number; interaction: number }

function evalPerplexity(model: string, extra: string[] = []): number {
  const dir = tempDir();
  const json = join(dir, "eval.json");
  const run = runCli(["eval", model, "--ppl", TEXT, ...WINDOWS, ...extra, "--json", json]);
  assert.equal(run.status, 0, run.stderr);
  return (JSON.parse(readFileSync(json, "utf8")) as { perplexity: number }).perplexity;
}

test("study on stories260K: every cell equals eval on the skipped model or on the convert + prune files", () => {
  const dir = tempDir();
  const work = join(dir, "work");
  const json = join(dir, "study.json");
  const report = join(dir, "report");
  const run = runCli(["study", MODEL_BIN, "--data", TEXT, ...WINDOWS, "--remove", "1", "--quant", "Q8_0,Q4_K", "--eval", PPL, "--work-dir", work, "--json", json, "--report", report]);
  assert.equal(run.status, 0, run.stderr);
  const out = JSON.parse(readFileSync(json, "utf8")) as { removed: number[]; rows: Row[]; additivity: Additivity[] };
  assert.equal(out.removed.length, 1);
  const layer = out.removed[0]!;
  assert.deepEqual(out.rows.map((r) => `${r.pruned ? "pruned" : "original"} ${r.quant}${r.unquantized ? " as given" : ""}`),
    ["original F32 as given", "original Q8_0", "original Q4_K", "pruned F32 as given", "pruned Q8_0", "pruned Q4_K"]);
  for (const r of out.rows) assert.deepEqual(r.removed, r.pruned ? [layer] : []);

  const cell = (pruned: boolean, quant: string): Row => out.rows.find((r) => r.pruned === pruned && r.quant === quant)!;
  // The unquantized pair: the model as given, and with the removed layer skipped.
  assert.ok(Math.abs(cell(false, "F32").evals[PPL]! - evalPerplexity(MODEL_BIN)) < 1e-9);
  assert.ok(Math.abs(cell(true, "F32").evals[PPL]! - evalPerplexity(MODEL_BIN, ["--skip", String(layer)])) < 1e-9);
  // stories260K.bin holds 5 layers of F32 matrices; the pruned one has 4 of them.
  const perLayer = cell(false, "F32").bytes - cell(true, "F32").bytes;
  assert.equal(perLayer, 4 * (4 * 64 * 64 - 2 * 64 * 32 + 3 * 64 * 172 + 2 * 64));

  // A quantized pair: the files convert and prune write, evaluated by eval.
  const q4k = join(dir, "q4k.gguf");
  const q4kPruned = join(dir, "q4k-pruned.gguf");
  assert.equal(runCli(["convert", MODEL_BIN, "--to", "gguf", "--dtype", "Q4_K", q4k]).status, 0);
  assert.equal(runCli(["prune", q4k, "--out", q4kPruned, "--layers", String(layer)]).status, 0);
  for (const [pruned, file] of [[false, q4k], [true, q4kPruned]] as const) {
    const row = cell(pruned, "Q4_K");
    assert.ok(Math.abs(row.evals[PPL]! - evalPerplexity(file)) < 1e-9, `${file}`);
    const gguf = readGguf(file);
    assert.equal(row.bytes, gguf.tensors.reduce((n, t) => n + t.byteLength, 0));
    gguf.file.close();
    assert.equal(row.fileBytes, statSync(file).size);
  }
  // stories260K's rows of 64 and 172 are not whole blocks of 256: llama.cpp's fallbacks, reported.
  assert.ok(cell(false, "Q4_K").fallbacks!.some((f) => f.tensor === "blk.0.attn_q.weight" && f.dtype === "Q5_0"));
  assert.match(run.stdout, /Q4_K: \d+ matrices .* as Q5_0/);

  // Additivity on the log-perplexity scale, recomputed from the rows.
  const logPpl = (r: Row): number => Math.log(r.evals[PPL]!);
  for (const quant of ["Q8_0", "Q4_K"]) {
    const a = out.additivity.find((x) => x.quant === quant && x.eval === PPL)!;
    const base = logPpl(cell(false, "F32"));
    const want = { prune: logPpl(cell(true, "F32")) - base, quantize: logPpl(cell(false, quant)) - base, both: logPpl(cell(true, quant)) - base };
    for (const key of ["prune", "quantize", "both"] as const) assert.ok(Math.abs(a[key] - want[key]) < 1e-12, `${quant} ${key}`);
    assert.ok(Math.abs(a.interaction - (want.both - want.prune - want.quantize)) < 1e-12);
  }

  assert.deepEqual(readdirSync(work), [], "the work folder's files are removed");
  const html = readFileSync(join(report, "index.html"), "utf8");
  assert.match(html, /data-chart="quality-size"/);
  assert.match(html, /Do the losses add up\?/);
});

test("study refuses bad options before any work", () => {
  const dir = tempDir();
  const bad = (args: string[], pattern: RegExp): void => {
    const run = runCli(["study", MODEL_BIN, "--data", TEXT, "--eval", PPL, "--work-dir", join(dir, "work"), ...args]);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, pattern);
  };
  bad(["--remove", "1", "--quant", "Q3_K"], /--quant Q3_K is not a dtype GGUF files can be written in/);
  bad(["--remove", "1", "--quant", "Q8_0,Q8_0"], /names a dtype twice/);
  bad(["--quant", "Q8_0"], /missing --remove K/);
  bad(["--remove", "1"], /missing --quant/);
  bad(["--remove", "5", "--quant", "Q8_0"], /--remove/);
  assert.ok(!existsSync(join(dir, "work")), "nothing written");
});

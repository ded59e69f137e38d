// --shard i/n and merge on stories260K: three parts merged equal one run (Block Influence and the
// other metrics, perplexity, task accuracy), mismatched parts are refused in one line, and
// prune --from-scores writes the checkpoint that prune scoring itself writes.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { OptionError } from "../src/errors.js";
import { sharedPath } from "../src/shared.js";
import { firstDifference } from "../src/shards/partial.js";
import { parseShard, shardIndices } from "../src/shards/shard.js";
import { MODEL_BIN, MODEL_GGUF, TINYSTORIES, runCli, sha256, tempDir } from "./helpers.js";

const DATA_DIR = sharedPath("data");
// The head of TinyStories: the runs read only ~1000 tokens, and tokenizing the whole file would cost more than scoring.
const TEXT = join(tempDir("shortgpt-shards-data-"), "head.txt");
writeFileSync(TEXT, readFileSync(TINYSTORIES, "utf8").slice(0, 8000));
const SCORE = ["--data", TEXT, "--seq-len", "64", "--max-tokens", "1024", "--metric", "bi,angular,ppl,random"];
const EVAL = ["--ppl", TEXT, "--seq-len", "64", "--max-tokens", "1024", "--tasks", "arc_easy", "--limit", "12", "--data-dir", DATA_DIR];

interface Scores { metric: string; scores: { layer: number; score: number }[]; ranking: number[] }
interface Json {
  [key: string]: unknown;
  kind?: string;
  shard?: { index: number; count: number };
  score?: { scoringWindows: number[] };
  tokens: number;
  windows: number;
  layers: { layer: number; bi: number }[];
  ranking: number[];
  metrics: Scores[];
  perplexity: number;
  nll: number;
  tasks: { items: number; metrics: unknown; results: unknown[] }[];
  selection: { method: string; fromScores: string };
}

function runJson(args: string[], out: string): Json {
  const run = runCli([...args, "--json", out]);
  assert.equal(run.status, 0, run.stderr);
  return JSON.parse(readFileSync(out, "utf8")) as Json;
}

/** One run, its three shards (as files) and their merge (parts given out of order). */
function singleAndMerged(command: string, model: string, args: string[]): { single: Json; parts: string[]; merged: Json; dir: string } {
  const dir = tempDir("shortgpt-shards-");
  const single = runJson([command, model, ...args], join(dir, "single.json"));
  const parts = [1, 2, 3].map((i) => {
    const path = join(dir, `part${i}.json`);
    const part = runJson([command, model, ...args, "--shard", `${i}/3`], path);
    assert.equal(part.kind, "shortgpt-partial");
    assert.deepEqual(part.shard, { index: i, count: 3 });
    return path;
  });
  const merged = runJson(["merge", parts[2]!, parts[0]!, parts[1]!], join(dir, "merged.json"));
  return { single, parts, merged, dir };
}

function maxDiff(a: readonly number[], b: readonly number[]): number {
  assert.equal(a.length, b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
}

let scoreRun: ReturnType<typeof singleAndMerged> | undefined;
const score = (): ReturnType<typeof singleAndMerged> => (scoreRun ??= singleAndMerged("score", MODEL_BIN, SCORE));

test("score --shard: three parts merged equal a single run (BI within 1e-12, same tokens, windows and rankings)", () => {
  const { single, merged, parts } = score();
  assert.equal(merged.tokens, single.tokens);
  assert.equal(merged.windows, single.windows);
  assert.ok(maxDiff(merged.layers.map((l) => l.bi), single.layers.map((l) => l.bi)) <= 1e-12);
  assert.deepEqual(merged.ranking, single.ranking);
  assert.equal(merged.metrics.length, 4);
  for (const [i, m] of single.metrics.entries()) {
    const got = merged.metrics[i]!;
    assert.equal(got.metric, m.metric);
    assert.ok(maxDiff(got.scores.map((s) => s.score), m.scores.map((s) => s.score)) <= 1e-12, m.metric);
    assert.deepEqual(got.ranking, m.ranking);
  }
  assert.deepEqual(merged["kendallTau"], single["kendallTau"]);
  assert.deepEqual(Object.keys(merged), Object.keys(single), "the merged JSON has the single run's shape");
  // The parts are disjoint round-robin shares of the windows.
  const ids = parts.map((p) => (JSON.parse(readFileSync(p, "utf8")) as Json).score!.scoringWindows);
  assert.deepEqual(ids[1]!.slice(0, 2), [1, 4]);
  assert.deepEqual(ids.flat().sort((a, b) => a - b), Array.from({ length: single.windows }, (_, i) => i));
});

test("eval --shard: three parts merged give the single run's perplexity and task accuracy", () => {
  const { single, merged } = singleAndMerged("eval", MODEL_BIN, EVAL);
  assert.equal(merged.tokens, single.tokens);
  assert.equal(merged.windows, single.windows);
  assert.ok(Math.abs(merged.perplexity - single.perplexity) <= 1e-12 * single.perplexity);
  assert.ok(Math.abs(merged.nll - single.nll) <= 1e-12);
  const [a, b] = [single.tasks[0]!, merged.tasks[0]!];
  assert.equal(b.items, 12);
  assert.deepEqual(b.metrics, a.metrics);
  assert.deepEqual(b.results, a.results, "every item's log-likelihoods, in item order");
  assert.deepEqual(Object.keys(merged), Object.keys(single));
});

test("merge refuses parts of different runs, a missing shard and a repeated one, in one line", () => {
  const { parts, dir } = score();
  const refuse = (args: string[], pattern: RegExp): void => {
    const run = runCli(["merge", ...args, "--json", join(dir, "refused.json")]);
    assert.equal(run.status, 1, run.stderr);
    assert.equal(run.stderr.trim().split("\n").length, 1, run.stderr);
    assert.match(run.stderr, pattern);
  };
  const otherSeqLen = join(dir, "seq32.json");
  runJson(["score", MODEL_BIN, ...SCORE.map((a) => (a === "64" ? "32" : a)), "--shard", "3/3"], otherSeqLen);
  refuse([parts[0]!, parts[1]!, otherSeqLen], /seq32\.json is not part of the same run as .*part1\.json: options\.seqLen: 64 vs 32/);
  const otherModel = join(dir, "gguf.json");
  runJson(["score", MODEL_GGUF, ...SCORE, "--shard", "3/3"], otherModel);
  refuse([parts[0]!, parts[1]!, otherModel], /gguf\.json is not part of the same run .*: model: /);
  refuse([parts[0]!, parts[2]!], /missing shard 2\/3/);
  refuse([parts[0]!, parts[1]!, parts[1]!, parts[2]!], /shard 2\/3 is given twice/);
  refuse([parts[0]!, join(dir, "single.json")], /single\.json is not a partial result/);
  const damaged = JSON.parse(readFileSync(parts[1]!, "utf8")) as { score: { tables: { sums: number[][] }[] } };
  damaged.score.tables[0]!.sums[0]!.pop();
  writeFileSync(join(dir, "damaged.json"), JSON.stringify(damaged));
  refuse([parts[0]!, join(dir, "damaged.json"), parts[2]!], /damaged\.json: the partial result is damaged \(bi sums\)/);
});

test("--shard options are checked before any work", () => {
  for (const [args, pattern] of [
    [["score", MODEL_BIN, ...SCORE, "--shard", "0/3"], /--shard 0\/3: expected i\/n/],
    [["score", MODEL_BIN, ...SCORE, "--shard", "2/x"], /--shard 2\/x: expected i\/n/],
    [["score", MODEL_BIN, ...SCORE, "--shard", "40/40"], /only 16 scoring windows/],
    [["score", MODEL_BIN, ...SCORE, "--shard", "1/3", "--bootstrap", "10"], /--bootstrap belongs to the whole run/],
    [["merge", "a.json"], /missing --json OUT/],
  ] as const) {
    const run = runCli([...args]);
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, pattern);
  }
});

test("prune --from-scores MERGED.json writes the checkpoint prune writes when it scores itself", () => {
  const { dir } = score();
  const byScoring = join(dir, "scored.bin");
  const bySingle = join(dir, "single.bin");
  const byMerged = join(dir, "merged.bin");
  assert.equal(runCli(["prune", MODEL_BIN, "--out", byScoring, "--remove", "2", "--data", TEXT, "--seq-len", "64", "--max-tokens", "1024"]).status, 0);
  assert.equal(runCli(["prune", MODEL_BIN, "--out", bySingle, "--remove", "2", "--from-scores", join(dir, "single.json")]).status, 0);
  const run = runCli(["prune", MODEL_BIN, "--out", byMerged, "--remove", "2", "--from-scores", join(dir, "merged.json")]);
  assert.equal(run.status, 0, run.stderr);
  assert.equal(sha256(byMerged), sha256(byScoring));
  assert.equal(sha256(bySingle), sha256(byScoring));
  const record = JSON.parse(readFileSync(`${byMerged}.json`, "utf8")) as Json;
  assert.equal(record.selection.method, "bi");
  assert.equal(record.selection.fromScores, join(dir, "merged.json"));
  // Another metric of the file, a part instead of the merge, and another model's scores.
  assert.equal(runCli(["prune", MODEL_BIN, "--out", join(dir, "ppl.bin"), "--remove", "1", "--from-scores", join(dir, "merged.json"), "--metric", "ppl"]).status, 0);
  const part = runCli(["prune", MODEL_BIN, "--out", join(dir, "x.bin"), "--remove", "2", "--from-scores", join(dir, "part1.json")]);
  assert.equal(part.status, 1);
  assert.match(part.stderr, /one part of a sharded run \(merge the parts first/);
  const other = runCli(["prune", MODEL_GGUF, "--out", join(dir, "x.gguf"), "--remove", "2", "--from-scores", join(dir, "merged.json")]);
  assert.equal(other.status, 1);
  assert.match(other.stderr, /scored a different model/);
});

test("shards are round-robin, disjoint and complete; parts are compared field by field", () => {
  const parts = [1, 2, 3].map((index) => shardIndices(10, { index, count: 3 }));
  assert.deepEqual(parts, [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]);
  assert.deepEqual(parseShard("2/8"), { index: 2, count: 8 });
  for (const bad of ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2"]) assert.throws(() => parseShard(bad), OptionError, bad);
  assert.equal(firstDifference({ options: { seqLen: 64, stride: 64 } }, { options: { seqLen: 64, stride: 64 } }), undefined);
  assert.equal(firstDifference({ options: { seqLen: 64 } }, { options: { seqLen: 32 } }), "options.seqLen: 64 vs 32");
  assert.equal(firstDifference({ skip: [1] }, { skip: [] }), "skip.0: 1 vs (absent)");
});

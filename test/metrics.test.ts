// Layer-importance metrics, selections and bootstrap against the numpy float64 oracle
// (test/oracle/metrics_oracle.py -> golden/stories260K_metrics.json), on the reference backend
// (float64 inside) and on the onnxruntime fast path.

import assert from "node:assert/strict";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { OptionError } from "../src/errors.js";
import { readTextData, tokenizeDocuments } from "../src/data/documents.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { bootstrap, kendallTau, quantile } from "../src/metrics/bootstrap.js";
import { computeMetrics, METRIC_NAMES, type MetricScores, parseMetricList } from "../src/metrics/layerMetrics.js";
import { openModel } from "../src/load.js";
import { selectContiguous, selectIteratively, selectTopK } from "../src/prune/select.js";
import { repoRoot } from "../src/shared.js";
import { MODEL_BIN, TINYSTORIES, maxRelativeError, runCli, tempDir } from "./helpers.js";
import { sharedPath } from "../src/shared.js";

interface Golden {
  window: number; stride: number; documents: number; k: number; layers: number[];
  bi: number[]; bi_angular: number[]; relative_magnitude: number[]; ppl: number[];
  angular: { block: number; tokens: "last" | "all"; starts: number[]; distance: number[] }[];
  reverse_order: number[]; random: { seed: number; order: number[] };
  selections: { metric: string; keep_first: number; keep_last: number; top_k: number[]; contiguous: number[] }[];
  iterative: Record<"bi" | "ppl", { layers: number[]; steps: { removed: number; layers: number[]; scores: number[] }[] }>;
}
const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "stories260K_metrics.json"), "utf8")) as Golden;
const opened = openModel(MODEL_BIN);
const documents = tokenizeDocuments(opened.tokenizer, readTextData(TINYSTORIES, "blank-line").documents.slice(0, golden.documents));
const windows = {
  scoring: scoringWindows(documents, { seqLen: golden.window, stride: golden.stride }),
  perplexity: perplexityWindows(documents, { seqLen: golden.window, stride: golden.stride }),
};
const GOLDEN_KEY: Record<string, keyof Golden> = { "bi": "bi", "bi-angular": "bi_angular", "relative-magnitude": "relative_magnitude", "ppl": "ppl" };
const nLayers = golden.layers.length;
const referenceBackend = createReferenceBackend();
const fast = await createOrtBackend({ threads: 2, flavor: "node" });
after(() => fast.dispose());

function scoresOf(result: MetricScores): number[] {
  return result.scores.map((s) => s.score);
}

// The streaming engine keeps the residual stream in float32 between layers, so even the
// float64 reference kernels agree with the oracle to float32 rounding, not to 1e-12.
const REFERENCE_TOLERANCE = 1e-7;
const FAST_TOLERANCE = 1e-5;

test("every metric equals the oracle: onnxruntime within 1e-5, the reference kernels within 1e-7", async () => {
  for (const [backend, tolerance, metrics] of [
    [fast, FAST_TOLERANCE, ["bi", "bi-angular", "relative-magnitude", "ppl", "reverse-order", "random"]],
    [referenceBackend, REFERENCE_TOLERANCE, ["bi", "bi-angular", "relative-magnitude"]],
  ] as const) {
    const run = await computeMetrics(opened, windows, metrics, { backend, seed: golden.random.seed });
    assert.deepEqual(run.results.map((r) => r.metric), metrics);
    for (const result of run.results) {
      const key = GOLDEN_KEY[result.metric];
      if (key) {
        assert.deepEqual(result.scores.map((s) => s.layer), golden.layers);
        const error = maxRelativeError(scoresOf(result), golden[key] as number[]);
        assert.ok(error < tolerance, `${backend.name} ${result.metric}: relative error ${error}`);
      }
    }
  }
  const run = await computeMetrics(opened, windows, ["reverse-order", "random"], { backend: fast, seed: golden.random.seed });
  assert.deepEqual(run.results[0]!.ranking, golden.reverse_order);
  assert.deepEqual(run.results[1]!.ranking, golden.random.order);
  for (const c of golden.angular) {
    const result = (await computeMetrics(opened, windows, ["angular"], { backend: fast, block: c.block, tokens: c.tokens })).results[0]!;
    assert.equal(result.block, c.block);
    assert.deepEqual(result.scores.map((s) => s.layer), c.starts);
    const error = maxRelativeError(scoresOf(result), c.distance);
    assert.ok(error < FAST_TOLERANCE, `angular block ${c.block} ${c.tokens}: relative error ${error}`);
  }
});

test("top-k and contiguous selections, with and without protected ends, choose the oracle's layers", async () => {
  const run = await computeMetrics(opened, windows, ["bi", "bi-angular", "relative-magnitude", "ppl"], { backend: fast });
  for (const s of golden.selections) {
    const result = run.results.find((r) => GOLDEN_KEY[r.metric] === s.metric)!;
    const protection = { keepFirst: s.keep_first, keepLast: s.keep_last };
    assert.deepEqual(selectTopK(result, golden.k, nLayers, protection), s.top_k, `${s.metric} top-k ${JSON.stringify(protection)}`);
    assert.deepEqual(selectContiguous(result, golden.k, nLayers, protection), s.contiguous, `${s.metric} contiguous ${JSON.stringify(protection)}`);
  }
  // Angular with --block k picks its best block start directly (Gromov et al.).
  const angular = (await computeMetrics(opened, windows, ["angular"], { backend: fast, block: 2 })).results[0]!;
  const c = golden.angular.find((a) => a.block === 2 && a.tokens === "last")!;
  const best = c.starts[c.distance.indexOf(Math.min(...c.distance))]!;
  assert.deepEqual(selectTopK(angular, 2, nLayers), [best, best + 1]);
});

test("iterative selection rescoring after each removal: BI, and perplexity (SLEB), as the oracle", async () => {
  for (const metric of ["bi", "ppl"] as const) {
    const want = golden.iterative[metric];
    const { layers, steps } = await selectIteratively(
      async (skip) => (await computeMetrics(opened, windows, [metric], { backend: fast, skip })).results[0]!,
      metric, golden.k, nLayers, { keepFirst: 0, keepLast: 0 },
    );
    assert.deepEqual(layers, want.layers, metric);
    steps.forEach((step, i) => {
      assert.equal(step.removed, want.steps[i]!.removed);
      assert.deepEqual(step.scores.scores.map((s) => s.layer), want.steps[i]!.layers);
      assert.ok(maxRelativeError(scoresOf(step.scores), want.steps[i]!.scores) < FAST_TOLERANCE, `${metric} step ${i}`);
    });
  }
  // Iterating changes the answer here: one-shot BI would remove 2 and 3.
  assert.notDeepEqual(golden.iterative.bi.layers, [...golden.layers].sort((a, b) => golden.bi[a]! - golden.bi[b]!).slice(0, 2).sort());
});

test("bootstrap: reproducible with a seed, intervals around the full-data score, removal frequencies in [0, 1]", async () => {
  const run = await computeMetrics(opened, windows, ["bi", "relative-magnitude", "ppl", "reverse-order"], { backend: fast });
  const select = (scores: MetricScores): number[] => selectTopK(scores, 2, nLayers);
  const a = bootstrap(run, { resamples: 50, seed: 11, select });
  const b = bootstrap(run, { resamples: 50, seed: 11, select });
  const c = bootstrap(run, { resamples: 50, seed: 12, select });
  assert.deepEqual(a, b, "same seed, same result");
  assert.notDeepEqual(a.metrics, c.metrics, "another seed draws other resamples");
  for (const m of a.metrics) {
    for (const layer of m.layers) {
      assert.ok(layer.low <= layer.high && layer.removedFrequency! >= 0 && layer.removedFrequency! <= 1, `${m.metric} layer ${layer.layer}`);
      if (m.metric !== "reverse-order") assert.ok(layer.low < layer.high, `${m.metric} layer ${layer.layer}: resampling moves the score`);
    }
    const frequencies = m.layers.reduce((n, l) => n + l.removedFrequency!, 0);
    assert.ok(Math.abs(frequencies - 2) < 1e-12, "two layers are removed in every resample");
  }
  // BI's choice on this data is stable: layer 2 is removed in (nearly) every resample.
  assert.ok(a.metrics.find((m) => m.metric === "bi")!.layers.find((l) => l.layer === 2)!.removedFrequency! >= 0.9);
  const tau = a.kendallTau.find((t) => t.a === "bi" && t.b === "relative-magnitude")!;
  assert.equal(tau.tau, kendallTau(golden.bi, golden.relative_magnitude));
});

test("Kendall's tau and quantiles on hand-computed cases", () => {
  assert.equal(kendallTau([1, 2, 3, 4], [10, 20, 30, 40]), 1);
  assert.equal(kendallTau([1, 2, 3, 4], [4, 3, 2, 1]), -1);
  // Pairs: (1,2) C, (1,3) C, (2,3) D -> (2 - 1) / 3.
  assert.ok(Math.abs(kendallTau([1, 2, 3], [1, 3, 2]) - 1 / 3) < 1e-15);
  assert.equal(quantile([1, 2, 3, 4, 5], 0.5), 3);
  assert.equal(quantile([0, 10], 0.25), 2.5);
});

test("metric and selection options: unknown names list the known ones, impossible requests are clear errors", () => {
  assert.throws(() => parseMetricList("bi,cosine"), (err: unknown) => err instanceof OptionError && err.details.hint === `known metrics: ${METRIC_NAMES.join(", ")}`);
  const dir = tempDir();
  const cases: [string[], RegExp][] = [
    [["score", MODEL_BIN, "--data", TINYSTORIES, "--metric", "bogus"], /--metric bogus is not a known metric \(known metrics: bi, bi-angular/],
    [["score", MODEL_BIN, "--data", TINYSTORIES, "--metric", "angular", "--block", "6"], /--block 6 must be an integer from 1 to the number of layers \(5\)/],
    [["prune", MODEL_BIN, "--out", join(dir, "x.bin"), "--remove", "3", "--data", TINYSTORIES, "--keep-first", "2", "--keep-last", "2"], /leave 1 of 5 layers removable, fewer than --remove 3/],
    [["prune", MODEL_BIN, "--out", join(dir, "x.bin"), "--remove", "2", "--data", TINYSTORIES, "--metric", "angular", "--iterative"], /--iterative works with bi and ppl, not angular/],
    [["prune", MODEL_BIN, "--out", join(dir, "x.bin"), "--remove", "2", "--data", TINYSTORIES, "--select", "middle"], /--select middle is not a known strategy/],
  ];
  for (const [argv, message] of cases) {
    const r = runCli(argv);
    assert.equal(r.status, 2, `${argv.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  assert.deepEqual(readdirSync(dir), []);
});

test("prune --metric ppl --iterative (SLEB) and --metric angular remove the oracle's layers; PATH.json records the steps", () => {
  const dir = tempDir();
  const data = join(dir, "calibration.txt");
  writeFileSync(data, readTextData(TINYSTORIES, "blank-line").documents.slice(0, golden.documents).join("\n\n") + "\n");
  const common = ["--remove", "2", "--data", data, "--split", "blank-line", "--seq-len", String(golden.window), "--backend", "onnx"];
  const sleb = runCli(["prune", MODEL_BIN, "--out", join(dir, "sleb.bin"), ...common, "--metric", "ppl", "--iterative"]);
  assert.equal(sleb.status, 0, sleb.stderr);
  const record = JSON.parse(readFileSync(join(dir, "sleb.bin.json"), "utf8")) as { removed: number[]; selection: { method: string; select: string; steps: { removed: number }[] } };
  assert.deepEqual(record.removed, golden.iterative.ppl.layers);
  assert.deepEqual(record.selection.steps.map((s) => s.removed), golden.iterative.ppl.steps.map((s) => s.removed));
  assert.equal(record.selection.select, "iterative");

  const angular = runCli(["prune", MODEL_BIN, "--out", join(dir, "angular.bin"), ...common, "--metric", "angular"]);
  assert.equal(angular.status, 0, angular.stderr);
  const c = golden.angular.find((a) => a.block === 2 && a.tokens === "last")!;
  const best = c.starts[c.distance.indexOf(Math.min(...c.distance))]!;
  assert.deepEqual((JSON.parse(readFileSync(join(dir, "angular.bin.json"), "utf8")) as { removed: number[] }).removed, [best, best + 1]);
});

test("score --bootstrap with --seed writes the same JSON twice", () => {
  const dir = tempDir();
  const args = (out: string): string[] => ["score", MODEL_BIN, "--data", TINYSTORIES, "--max-tokens", "2048", "--seq-len", "128", "--metric", "bi,reverse-order", "--bootstrap", "20", "--remove", "2", "--seed", "3", "--json", out];
  for (const name of ["a.json", "b.json"]) assert.equal(runCli(args(join(dir, name))).status, 0);
  const strip = (path: string): unknown => {
    const json = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    delete json["seconds"];
    return json;
  };
  const a = strip(join(dir, "a.json")) as { bootstrap: { resamples: number; metrics: { layers: { removedFrequency: number }[] }[] } };
  assert.deepEqual(a, strip(join(dir, "b.json")));
  assert.equal(a.bootstrap.resamples, 20);
  assert.equal(a.bootstrap.metrics[0]!.layers.reduce((n, l) => n + l.removedFrequency, 0), 2);
});

test("compare: one table of perplexities, each equal to `eval --skip` of the layers that metric removes", () => {
  const dir = tempDir();
  const out = join(dir, "compare.json");
  const window = ["--seq-len", "128", "--max-tokens", "2048"];
  const run = runCli(["compare", MODEL_BIN, "--data", TINYSTORIES, ...window, "--metrics", "bi,random,angular", "--seed", "5", "--remove", "2", "--eval", `ppl:${TINYSTORIES}`, "--json", out]);
  assert.equal(run.status, 0, run.stderr);
  const json = JSON.parse(readFileSync(out, "utf8")) as { results: { metric: string; removed: number[]; evals: { value: number }[] }[]; overlap: { a: string; b: string; jaccard: number }[] };
  assert.deepEqual(json.results.map((r) => r.metric), ["none (full model)", "bi", "random", "angular"]);
  for (const r of json.results) {
    const evalOut = join(dir, `eval-${r.metric}.json`);
    const e = runCli(["eval", MODEL_BIN, "--ppl", TINYSTORIES, ...window, ...(r.removed.length ? ["--skip", r.removed.join(",")] : []), "--json", evalOut]);
    assert.equal(e.status, 0, e.stderr);
    assert.equal(r.evals[0]!.value, (JSON.parse(readFileSync(evalOut, "utf8")) as { perplexity: number }).perplexity, r.metric);
  }
  assert.equal(json.results.find((r) => r.metric === "random")!.removed.length, 2);
  assert.equal(json.overlap.length, 3);
  const bad = runCli(["compare", MODEL_BIN, "--data", TINYSTORIES, "--remove", "2", "--eval", "mmlux"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--eval mmlux is not a known task \(available tasks: mmlu, cmmlu, .*mmlu_<subject>/);
  const noDir = runCli(["compare", MODEL_BIN, "--data", TINYSTORIES, "--remove", "2", "--eval", "mmlu"]);
  assert.match(noDir.stderr, /missing --data-dir DIR for the benchmark tasks in --eval/);
});

test("sweep: k = 0..K removed by the metric, each row evaluated exactly as `eval --skip`, nested sets when iterative", () => {
  const dir = tempDir();
  const window = ["--seq-len", "128", "--max-tokens", "2048"];
  const out = join(dir, "sweep.json");
  const run = runCli(["sweep", MODEL_BIN, "--data", TINYSTORIES, ...window, "--max-remove", "3", "--eval", `ppl:${TINYSTORIES},piqa`, "--data-dir", sharedPath("data"), "--limit", "5", "--json", out]);
  assert.equal(run.status, 0, run.stderr);
  const json = JSON.parse(readFileSync(out, "utf8")) as { rows: { removed: number; layers: number[]; parametersKept: number; evals: { name: string; value: number }[] }[]; scores: MetricScores };
  assert.deepEqual(json.rows.map((r) => r.removed), [0, 1, 2, 3]);
  json.rows.forEach((r, k) => assert.deepEqual(r.layers, [...json.scores.ranking.slice(0, k)].sort((a, b) => a - b)));
  assert.equal(json.rows[0]!.parametersKept, 1);
  assert.ok(json.rows[3]!.parametersKept < json.rows[1]!.parametersKept);
  const last = json.rows[3]!;
  const evalOut = join(dir, "e.json");
  assert.equal(runCli(["eval", MODEL_BIN, "--ppl", TINYSTORIES, ...window, "--skip", last.layers.join(","), "--tasks", "piqa", "--data-dir", sharedPath("data"), "--limit", "5", "--json", evalOut]).status, 0);
  const e = JSON.parse(readFileSync(evalOut, "utf8")) as { perplexity: number; tasks: { metrics: { acc: { value: number } } }[] };
  assert.equal(last.evals[0]!.value, e.perplexity);
  assert.equal(last.evals[1]!.value, e.tasks[0]!.metrics.acc.value);

  const iterative = join(dir, "iterative.json");
  assert.equal(runCli(["sweep", MODEL_BIN, "--data", TINYSTORIES, ...window, "--max-remove", "2", "--iterative", "--eval", `ppl:${TINYSTORIES}`, "--json", iterative]).status, 0);
  const rows = (JSON.parse(readFileSync(iterative, "utf8")) as { rows: { layers: number[] }[] }).rows;
  assert.ok(rows[1]!.layers.every((l) => rows[2]!.layers.includes(l)), "each set contains the previous one");
});

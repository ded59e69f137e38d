// Width pruning (issue #16, RQ3): FFN-channel pruning and SliceGPT slicing write Hugging Face
// directories that transformers loads with the logits shortgpt computes (golden from
// test/oracle/width_oracle.py via make_width_golden.sh; Llama, GQA, Qwen2 biases, Qwen3 q/k norms), at the parameter count of depth pruning
// within one size step; SliceGPT at full width and FFN pruning of 0 channels change nothing.

import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { perplexityWindows, type Window } from "../src/data/windows.js";
import { OptionError, UnsupportedError } from "../src/errors.js";
import { loadModel, openModel, type OpenedModel } from "../src/load.js";
import { collectWidthStats, type WidthStats } from "../src/metrics/widthStats.js";
import { LlamaModel, loadLlamaWeights } from "../src/models/llama.js";
import { streamingPerplexity } from "../src/models/streaming.js";
import { symmetricEigen } from "../src/prune/symmetricEigen.js";
import { layerParameterCount, llamaParameterCount, widthOpenedModel } from "../src/prune/widthModel.js";
import { repoRoot } from "../src/shared.js";
import { checkWidthMatch, depthParameterCounts, widthPrune } from "../src/widthPipeline.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { WIDTH_CASES, writeWidthDirs, type WidthCase } from "./fixtures/widthDirs.js";
import { MODEL_BIN, runCli, tempDir, TINYSTORIES } from "./helpers.js";

interface GoldenCase {
  hidden_size: number;
  intermediate_size: number;
  head_dim: number;
  tie_word_embeddings: boolean;
  parameters: number;
  logits: Record<string, number[]>;
}
const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "width_pruned.json"), "utf8")) as { ids: number[]; positions: number[]; cases: Record<WidthCase, GoldenCase> };

let work: string;
let dirs: Record<WidthCase, string>;
before(async () => {
  work = tempDir("shortgpt-width-");
  dirs = await writeWidthDirs(join(work, "dirs"));
});
after(() => rmSync(work, { recursive: true, force: true }));

function randomWindows(n: number, seqLen: number, vocab: number, seed: number): Window[] {
  let s = seed;
  const next = (): number => (s = (s * 1103515245 + 12345) % 2147483648) % vocab;
  return Array.from({ length: n }, (_, document) => ({ document, begin: 0, tokens: Array.from({ length: seqLen }, next) }));
}

async function statsOf(opened: OpenedModel): Promise<WidthStats> {
  const backend = createReferenceBackend();
  try {
    return await collectWidthStats(opened, randomWindows(2, 16, opened.config.vocabSize, 5), { backend });
  } finally {
    await backend.dispose();
  }
}

function logitsOf(opened: OpenedModel, ids: readonly number[]): Float64Array {
  return new LlamaModel(opened.config, loadLlamaWeights(opened.provider, opened.config, opened.names)).forward(ids).logits;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test("symmetricEigen: A V = V diag(values), V orthonormal, values descending", () => {
  const n = 12;
  const a = new Float64Array(n * n);
  let s = 3;
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) a[i * n + j] = a[j * n + i] = ((s = (s * 69069 + 1) % 4294967296) / 4294967296) - 0.5;
  const { values, vectors: v } = symmetricEigen(a, n);
  for (let k = 1; k < n; k++) assert.ok(values[k - 1]! >= values[k]!);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < n; k++) {
      let av = 0;
      let vtv = 0;
      for (let j = 0; j < n; j++) {
        av += a[i * n + j]! * v[j * n + k]!;
        vtv += v[j * n + i]! * v[j * n + k]!;
      }
      assert.ok(Math.abs(av - values[k]! * v[i * n + k]!) < 1e-12, `(A V)[${i}][${k}]`);
      assert.ok(Math.abs(vtv - (i === k ? 1 : 0)) < 1e-12, `(V^T V)[${i}][${k}]`);
    }
  }
});

test("width-pruned HF directories load in transformers with the logits shortgpt computes (1e-4) and the same sizes and parameter counts", () => {
  for (const name of WIDTH_CASES) {
    const want = golden.cases[name];
    const opened = openModel(dirs[name]);
    try {
      assert.equal(opened.config.dim, want.hidden_size, `${name} hidden_size`);
      assert.equal(opened.config.hiddenDim, want.intermediate_size, `${name} intermediate_size`);
      assert.equal(opened.config.headDim, want.head_dim, `${name} head_dim`);
      const logits = logitsOf(opened, golden.ids);
      const vocab = opened.config.vocabSize;
      for (const pos of golden.positions) {
        const row = logits.subarray(pos * vocab, (pos + 1) * vocab);
        const err = maxAbsDiff(row, want.logits[String(pos)]!);
        assert.ok(err < 1e-4, `${name} position ${pos}: logits differ from transformers by ${err}`);
      }
      const loaded = loadModel(dirs[name]);
      assert.equal(loaded.model.parameterCount(), want.parameters, `${name}: parameters as transformers counts them`);
    } finally {
      opened.close();
    }
  }
});

test("the parameters removed equal those of depth pruning within one size step (FFN: one channel per layer; SliceGPT: one head's worth of dims)", () => {
  for (const base of ["stories", "tiny", "qwen2", "qwen3"] as const) {
    const opened = openModel(dirs[`${base}-hf`]);
    try {
      const { config } = opened;
      const { depth } = depthParameterCounts(opened, 1);
      assert.equal(depth, golden.cases[`${base}-hf`].parameters - layerParameterCount(config));
      const ffn = golden.cases[`${base}-ffn`].parameters;
      const slice = golden.cases[`${base}-slicegpt`].parameters;
      const ffnStep = 3 * config.dim * config.nLayers;
      const sliceStep = config.nHeads * (llamaParameterCount({ ...config, dim: 1 }, false) - llamaParameterCount({ ...config, dim: 0 }, false));
      assert.ok(Math.abs(ffn - depth) <= ffnStep / 2, `${base} ffn-channels: ${ffn} vs depth ${depth} (step ${ffnStep})`);
      assert.ok(Math.abs(slice - depth) <= sliceStep / 2, `${base} slicegpt: ${slice} vs depth ${depth} (step ${sliceStep})`);
      assert.ok(ffn < golden.cases[`${base}-hf`].parameters && slice < golden.cases[`${base}-hf`].parameters);
    } finally {
      opened.close();
    }
  }
});

test("FFN pruning of 0 channels leaves every tensor and the logits unchanged; SliceGPT at full width keeps the logits within 1e-5", async () => {
  for (const path of [MODEL_BIN, join(work, "tiny-gqa")]) {
    if (path !== MODEL_BIN) writeHfLlamaFixture(path, { dtype: "F32" });
    const opened = openModel(path);
    try {
      const stats = await statsOf(opened);
      const ids = golden.ids;
      const original = logitsOf(opened, ids);
      const weights = loadLlamaWeights(opened.provider, opened.config, opened.names);
      const ffn0 = widthPrune(opened, stats, "ffn-channels", { channelsRemoved: 0 });
      const pruned = widthOpenedModel(opened, ffn0);
      const prunedWeights = loadLlamaWeights(pruned.provider, pruned.config, pruned.names);
      assert.deepEqual(prunedWeights.layers, weights.layers);
      assert.deepEqual(prunedWeights.embedding, weights.embedding);
      assert.deepEqual(prunedWeights.classifier, weights.classifier);
      assert.deepEqual(logitsOf(pruned, ids), original);
      const full = widthPrune(opened, stats, "slicegpt", { hiddenSize: opened.config.dim });
      const err = maxAbsDiff(logitsOf(widthOpenedModel(opened, full), ids), original);
      assert.ok(err < 1e-5, `${path}: SliceGPT at d' = d moved the logits by ${err}`);
      // A real slice changes them (the test above could not pass by doing nothing).
      const half = widthPrune(opened, stats, "slicegpt", { hiddenSize: opened.config.dim / 2 });
      assert.ok(maxAbsDiff(logitsOf(widthOpenedModel(opened, half), ids).subarray(0, 10), original.subarray(0, 10)) > 1e-3);
    } finally {
      opened.close();
    }
  }
});

test("the in-memory pruned model evaluates exactly as its written directory (what compare --width reports)", async () => {
  const opened = openModel(dirs["stories-hf"]);
  const backend = createReferenceBackend();
  try {
    const stats = await collectWidthStats(opened, randomWindows(2, 16, 512, 9), { backend });
    const windows = perplexityWindows([golden.ids.concat(golden.ids)], { seqLen: 16, stride: 8 });
    for (const method of ["ffn-channels", "slicegpt"] as const) {
      const model = widthPrune(opened, stats, method, { matchLayers: 1 });
      const out = join(work, `eval-${method}`);
      const { writeWidthHf } = await import("../src/prune/writeWidthHf.js");
      writeWidthHf(model, dirs["stories-hf"], out);
      const written = openModel(out);
      try {
        const a = await streamingPerplexity(widthOpenedModel(opened, model), windows, { backend });
        const b = await streamingPerplexity(written, windows, { backend });
        assert.equal(a.perplexity, b.perplexity, method);
      } finally {
        written.close();
      }
    }
  } finally {
    await backend.dispose();
    opened.close();
  }
});

test("bad input: families width pruning cannot rewrite, sizes transformers refuses, non-HF output requests", async () => {
  const gpt2 = join(work, "gpt2");
  writeHfLlamaFixture(gpt2, { dtype: "F32", family: "gpt2" });
  const g = openModel(gpt2);
  try {
    assert.throws(() => widthPrune(g, { channelSquares: [], covariance: new Float64Array(0), tokens: 0 }, "ffn-channels", { matchLayers: 1 }), UnsupportedError);
  } finally {
    g.close();
  }
  // A recurrent model (Mamba-2) has no heads or FFN channels to slice: refused with a typed error, naming the kind.
  const mamba2 = openModel(join(repoRoot(), "test", "fixtures", "mamba2_tiny"));
  try {
    assert.throws(() => widthPrune(mamba2, { channelSquares: [], covariance: new Float64Array(0), tokens: 0 }, "ffn-channels", { matchLayers: 1 }), (e: unknown) => e instanceof UnsupportedError && /recurrent mamba2 blocks/.test(e.message));
  } finally {
    mamba2.close();
  }
  const opened = openModel(MODEL_BIN);
  try {
    const stats = await statsOf(opened);
    assert.throws(() => widthPrune(opened, stats, "slicegpt", { hiddenSize: 60 }), (e: unknown) => e instanceof OptionError && /multiple of the 8 attention heads/.test(e.message));
    assert.throws(() => widthPrune(opened, stats, "ffn-channels", { channelsRemoved: 172 }), OptionError);
    // compare --width refuses a K no width baseline can match before any work: 4 layers' parameters exceed the FFN's.
    assert.throws(() => checkWidthMatch(opened, 4, "--remove"), (e: unknown) => e instanceof OptionError && e.details.option === "--remove");
    checkWidthMatch(opened, 2, "--remove");
  } finally {
    opened.close();
  }
});

test("CLI: `width` writes the directory and its record; `compare --width` rows equal `eval` of those directories, with parameter counts", () => {
  const window = ["--split", "blank-line", "--seq-len", "64", "--max-tokens", "256", "--backend", "reference"];
  const input = dirs["stories-hf"];
  const cmp = join(work, "compare.json");
  const run = runCli(["compare", input, "--data", TINYSTORIES, ...window, "--metrics", "bi", "--remove", "1", "--width", "--eval", `ppl:${TINYSTORIES}`, "--json", cmp, "--report", join(work, "report")]);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /parameters/);
  // The report's depth-vs-width bars: one chart per evaluation, every row labelled with its parameters.
  const page = readFileSync(join(work, "report", "index.html"), "utf8");
  assert.match(page, /depth-vs-width-0/);
  assert.match(page, /slicegpt \(hidden 48\) \[219600\]/);
  const json = JSON.parse(readFileSync(cmp, "utf8")) as { parameters: { full: number; depth: number }; width: { method: string; parameters: number; evals: { value: number }[] }[] };
  assert.deepEqual(json.parameters, { full: golden.cases["stories-hf"].parameters, depth: golden.cases["stories-hf"].parameters - 45440 });
  assert.equal(json.width.length, 2);
  for (const [i, method] of (["ffn-channels", "slicegpt"] as const).entries()) {
    const out = join(work, `cli-${method}`);
    const w = runCli(["width", input, "--out", out, "--method", method, "--match-layers", "1", "--data", TINYSTORIES, ...window]);
    assert.equal(w.status, 0, w.stderr);
    const record = JSON.parse(readFileSync(`${out}.json`, "utf8")) as { parameters: { after: number; depthPruned: number } };
    assert.equal(record.parameters.after, json.width[i]!.parameters);
    const evalOut = join(work, `eval-${method}.json`);
    const e = runCli(["eval", out, "--ppl", TINYSTORIES, "--split", "blank-line", "--seq-len", "64", "--max-tokens", "256", "--backend", "reference", "--json", evalOut]);
    assert.equal(e.status, 0, e.stderr);
    assert.equal(json.width[i]!.evals[0]!.value, (JSON.parse(readFileSync(evalOut, "utf8")) as { perplexity: number }).perplexity, method);
  }
  const bin = runCli(["width", MODEL_BIN, "--out", join(work, "x"), "--method", "ffn", "--match-layers", "1", "--data", TINYSTORIES]);
  assert.notEqual(bin.status, 0);
  assert.match(bin.stderr, /convert it first/);
});

// Benchmark tasks: prefix packing against plain windows, the request split, metric and group
// arithmetic, perplexity variants by hand, the CLI, and bad input. The numbers themselves are
// checked against lm-evaluation-harness in lmEvalHarness.test.ts.

import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { OptionError } from "../src/errors.js";
import { evaluateTask, meanWithStderr, weightedBySize } from "../src/eval/evaluateTasks.js";
import { encodePair, layerWindowCost, planRequests, scoreRequests } from "../src/eval/loglikelihood.js";
import { countWords, perplexityVariants, textSize } from "../src/eval/perplexityVariants.js";
import { findTask, type LoglikelihoodRequest, parseTaskList, TASK_NAMES, TASKS } from "../src/eval/tasks/tasks.js";
import type { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { openModel } from "../src/load.js";
import { sharedPath } from "../src/shared.js";
import { writeBpeTokenizer } from "./fixtures/bpeTokenizer.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { MODEL_BIN, runCli, tempDir } from "./helpers.js";

const DATA = sharedPath("data");
const opened = openModel(MODEL_BIN);
const fast = await createOrtBackend({ threads: 2, flavor: "node" });
after(() => fast.dispose());

test("prefix sharing: an item's inputs are packed behind their common prefix, fewer tokens, the same log-likelihoods", async (t) => {
  for (const name of ["hellaswag", "piqa", "arc_challenge", "winogrande", "copa"]) {
    const items = TASKS.find((task) => task.name === name)!.load(DATA, { shots: 0, limit: 12 });
    const requests = items.flatMap((i) => i.requests);
    const groupSizes = items.map((i) => i.requests.length);
    const options = { maxLength: opened.config.contextLength, bos: false, groupSizes, windowCost: layerWindowCost(opened.config) };
    const packed = planRequests(opened.tokenizer, requests, options);
    const plain = planRequests(opened.tokenizer, requests, { ...options, sharePrefixes: false });
    const tokens = (plan: typeof packed): number => plan.windows.reduce((n, w) => n + w.tokens.length, 0);
    t.diagnostic(`${name}: ${tokens(packed)} tokens in ${packed.windows.length} windows packed, ${tokens(plain)} in ${plain.windows.length} plain`);
    assert.ok(packed.windows.some((w) => w.layout), `${name}: some windows are packed`);
    assert.ok(tokens(packed) < 0.8 * tokens(plain), `${name}: packing saves tokens`);
    const got = await scoreRequests(opened, opened.tokenizer, requests, { backend: fast, groupSizes });
    const want = await scoreRequests(opened, opened.tokenizer, requests, { backend: fast, groupSizes, sharePrefixes: false });
    got.forEach((g, i) => {
      assert.ok(Math.abs(g.loglikelihood - want[i]!.loglikelihood) <= 1e-5 * Math.max(1, Math.abs(want[i]!.loglikelihood)), `${name} request ${i}: ${g.loglikelihood} vs ${want[i]!.loglikelihood}`);
      assert.equal(g.greedy, want[i]!.greedy);
      assert.equal(g.tokens, want[i]!.tokens);
    });
  }
});

test("packing plans: every target row sees exactly its request's input, across several packs, truncated requests and empty branches", () => {
  // One token per character, so requests are easy to build; a context of 24 tokens forces several packs and truncation.
  const chars: Tokenizer = {
    vocabSize: 256, bosId: 1, eosId: 2, addsBos: false, description: "characters",
    encode: (text, options = {}) => [...(options.bos ? [1] : []), ...[...text].map((c) => c.charCodeAt(0) % 256)],
    decode: (ids) => String.fromCharCode(...ids), decodeToken: (id) => Uint8Array.of(id),
  };
  const requests: LoglikelihoodRequest[] = [
    // 4 choices behind a 10-token prefix: two packs of 24 tokens at the most
    { context: "question:", continuation: " alpha!" }, { context: "question:", continuation: " bravo!" },
    { context: "question:", continuation: " charl!" }, { context: "question:", continuation: " delta!" },
    { context: "short", continuation: " one" }, { context: "short", continuation: " two two" }, { context: "short", continuation: " three" },
    // longer than the window: cut from the left, never packed
    { context: "a context much longer than the window", continuation: " tail" }, { context: "a context much longer than the window", continuation: " t" },
    { context: "", continuation: "empty context" },
    // WinoGrande-style: different contexts, one continuation
    { context: "the left half", continuation: " same end" }, { context: "the right half", continuation: " same end" },
    // an input equal to the shared prefix (an empty branch) beside two others
    { context: "abc", continuation: " d" }, { context: "abc", continuation: " de" }, { context: "abc", continuation: " ef" },
  ];
  const maxLength = 24;
  const plan = planRequests(chars, requests, { maxLength, bos: false, groupSizes: [4, 3, 2, 1, 2, 3] });
  assert.equal(plan.jobs[0]!.window + 1, plan.jobs[3]!.window, "the question's choices fill two packed windows");
  assert.equal(plan.windows.filter((w) => w.layout).length, 4, "packed windows: the question (2), \"short\", \"abc\"");
  requests.forEach((request, j) => {
    const { context, continuation } = encodePair(chars, request, false);
    const all = [...context, ...continuation];
    const input = all.slice(Math.max(0, all.length - 1 - maxLength), all.length - 1);
    const first = input.length - continuation.length;
    const job = plan.jobs[j]!;
    const window = plan.windows[job.window]!;
    assert.ok(window.tokens.length <= maxLength);
    // Every continuation token is a target (none of these is longer than the window), one row each.
    assert.deepEqual(job.targets, continuation, `request ${j}: targets`);
    assert.equal(job.rows.length, continuation.length, `request ${j}: rows`);
    job.rows.forEach((row, k) => {
      // What the row attends to: earlier tokens of the prefix and of its own branch, at consecutive positions.
      const seen = window.tokens.flatMap((token, i) => {
        const branch = window.layout?.branches[i] ?? 0;
        return i <= row && (branch === 0 || branch === (window.layout?.branches[row] ?? 0)) ? [{ token, position: window.layout?.positions[i] ?? i }] : [];
      });
      assert.deepEqual(seen.map((s) => s.position), seen.map((_, i) => i), `request ${j} target ${k}: positions`);
      const offset = Math.max(0, first) + k;
      assert.deepEqual(seen.map((s) => s.token), input.slice(0, offset + 1), `request ${j} target ${k}: tokens`);
    });
  });
  // The left truncation, written out: the 37-token context + " tail" keeps the last 24 of its first 41 tokens.
  const truncated = plan.windows[plan.jobs[7]!.window]!;
  assert.equal(truncated.layout, undefined);
  assert.equal(chars.decode(truncated.tokens), "nger than the window tai");
});

test("prefix sharing with learned positions (GPT-2): packed windows give each branch its own position rows", async () => {
  const dir = join(tempDir(), "gpt2");
  writeHfLlamaFixture(dir, { family: "gpt2" });
  writeBpeTokenizer(dir, readFileSync(sharedPath("data", "tinystories", "tinystories_val.txt"), "utf8").slice(0, 30_000), 512, "gpt-2");
  const gpt2 = openModel(dir);
  try {
    const items = TASKS.find((task) => task.name === "hellaswag")!.load(DATA, { shots: 0, limit: 6 });
    const requests = items.flatMap((i) => i.requests);
    const groupSizes = items.map((i) => i.requests.length);
    const plan = planRequests(gpt2.tokenizer, requests, { maxLength: gpt2.config.contextLength, bos: false, groupSizes, windowCost: layerWindowCost(gpt2.config) });
    assert.ok(plan.windows.some((w) => w.layout), "packed");
    const got = await scoreRequests(gpt2, gpt2.tokenizer, requests, { backend: fast, groupSizes });
    const want = await scoreRequests(gpt2, gpt2.tokenizer, requests, { backend: fast, groupSizes, sharePrefixes: false });
    got.forEach((g, i) => assert.ok(Math.abs(g.loglikelihood - want[i]!.loglikelihood) <= 1e-5 * Math.max(1, Math.abs(want[i]!.loglikelihood)), `request ${i}: ${g.loglikelihood} vs ${want[i]!.loglikelihood}`));
  } finally {
    gpt2.close();
  }
});

test("lm-eval's request split: trailing context spaces move to the continuation; an empty context is BOS", () => {
  const t = opened.tokenizer;
  const split = encodePair(t, { context: "Once upon a time ", continuation: "there" }, false);
  assert.deepEqual(split.context, t.encode("Once upon a time", { bos: false }));
  assert.deepEqual([...split.context, ...split.continuation], t.encode("Once upon a time there", { bos: false }));
  assert.deepEqual(encodePair(t, { context: "", continuation: "Hello" }, false), { context: [t.bosId], continuation: t.encode("Hello", { bos: false }) });
  assert.equal(encodePair(t, { context: "Hi", continuation: " x" }, true).context[0], t.bosId);
});

test("task metrics: acc, acc_norm and their standard errors; MMLU's subjects and categories aggregated as lm-eval's groups", async () => {
  assert.deepEqual(meanWithStderr([1, 0, 1, 1]), { value: 0.75, stderr: 0.25 });
  // Pooled by hand: two parts of 4 and 2 items, stderrs 0.25 and 0.5.
  const pooled = weightedBySize([{ items: 4, value: { value: 0.75, stderr: 0.25 } }, { items: 2, value: { value: 0.5, stderr: 0.5 } }]);
  assert.ok(Math.abs(pooled.value - (0.75 * 4 + 0.5 * 2) / 6) < 1e-15);
  assert.ok(Math.abs(pooled.stderr - Math.sqrt((3 * 4 * 0.0625 + 1 * 2 * 0.25) / (6 - 2) / 6)) < 1e-15);
  const result = await evaluateTask(opened, opened.tokenizer, findTask("mmlu")!, { dataDir: DATA, shots: 0, limit: 3, backend: fast });
  assert.equal(result.items, 57 * 3);
  assert.equal(result.subtasks!.length, 57);
  assert.deepEqual(result.groups!.map((g) => g.name), ["mmlu_humanities", "mmlu_other", "mmlu_social_sciences", "mmlu_stem"]);
  assert.deepEqual(result.groups!.map((g) => g.items), [13 * 3, 13 * 3, 12 * 3, 19 * 3]);
  assert.deepEqual(Object.keys(result.metrics), ["acc"], "mmlu reports acc only");
  // Weighted by size, the group's acc is the mean over every item; so is each category's.
  const accuracy = result.results.filter((r) => r.predicted === r.gold).length / result.items;
  assert.ok(Math.abs(result.metrics["acc"]!.value - accuracy) < 1e-12);
  const stem = result.results.filter((r) => findTask("mmlu_stem")!.group!.subtasks.includes(r.subtask!));
  assert.ok(Math.abs(result.groups![3]!.metrics["acc"]!.value - stem.filter((r) => r.correct).length / stem.length) < 1e-12);
  // lm-eval 0.4.13 aggregates a nested group over its leaf subtasks: the pooled stderr is over the 57 subjects.
  const overSubjects = weightedBySize(result.subtasks!.map((s) => ({ items: s.items, value: s.metrics["acc"]! })));
  assert.ok(Math.abs(result.metrics["acc"]!.stderr - overSubjects.stderr) < 1e-15);
  const overCategories = weightedBySize(result.groups!.map((g) => ({ items: g.items, value: g.metrics["acc"]! })));
  assert.ok(Math.abs(overCategories.stderr - overSubjects.stderr) > 1e-9, "pooling over the categories would differ");
  // A subject by its lm-eval name is the same items, ungrouped.
  const anatomy = await evaluateTask(opened, opened.tokenizer, findTask("mmlu_anatomy")!, { dataDir: DATA, shots: 0, limit: 3, backend: fast });
  assert.deepEqual(anatomy.results.map((r) => r.loglikelihoods), result.results.filter((r) => r.subtask === "mmlu_anatomy").map((r) => r.loglikelihoods));
  assert.equal(anatomy.subtasks, undefined);
  assert.ok(result.itemsPerSecond > 0);
});

test("--bos on a tokenizer without a BOS token is refused, not ignored", async () => {
  const t = opened.tokenizer;
  const noBos: Tokenizer = { vocabSize: t.vocabSize, bosId: -1, eosId: t.eosId, addsBos: false, description: "no BOS", encode: (text) => t.encode(text, { bos: false }), decode: (ids) => t.decode(ids), decodeToken: (id, prev) => t.decodeToken(id, prev) };
  await assert.rejects(evaluateTask(opened, noBos, findTask("piqa")!, { dataDir: DATA, shots: 0, limit: 2, backend: fast, bos: true }), (err: unknown) => err instanceof OptionError && /--bos: this model's tokenizer has no BOS token/.test(err.message));
});

test("perplexity variants on a short text, by hand", () => {
  assert.equal(countWords("a b  c"), 3);
  assert.equal(countWords(" leading"), 2, "re.split keeps the empty first piece, as lm-eval counts");
  const size = textSize(["héllo wörld", "x"]);
  assert.deepEqual(size, { words: 3, bytes: 14 });
  const v = perplexityVariants(7, size);
  assert.equal(v.wordPerplexity, Math.exp(7 / 3));
  assert.equal(v.bytePerplexity, Math.exp(7 / 14));
  assert.equal(v.bitsPerByte, 7 / 14 / Math.LN2);
  // eval --ppl reports them over the whole text, consistent with its token perplexity.
  const dir = tempDir();
  const text = join(dir, "t.txt");
  writeFileSync(text, "Once upon a time, there was a little girl named Lily.\n");
  const out = join(dir, "e.json");
  assert.equal(runCli(["eval", MODEL_BIN, "--ppl", text, "--seq-len", "17", "--json", out]).status, 0);
  const e = JSON.parse(readFileSync(out, "utf8")) as { nll: number; tokens: number; wordPerplexity: number; bitsPerByte: number; words: number; bytes: number };
  assert.equal(e.words, 12, "11 words and the empty piece after the final newline, as re.split counts");
  assert.ok(Math.abs(e.wordPerplexity - Math.exp((e.nll * e.tokens) / e.words)) < 1e-9 * e.wordPerplexity);
  assert.ok(Math.abs(e.bitsPerByte - (e.nll * e.tokens) / e.bytes / Math.LN2) < 1e-12);
});

test("eval --tasks: the harness's names and metrics, a table and JSON with per-item results, deterministic; --no-bos", () => {
  const dir = tempDir();
  const run = (name: string, extra: string[] = []): Record<string, unknown> => {
    const out = join(dir, name);
    const r = runCli(["eval", MODEL_BIN, "--tasks", "piqa,lambada,winogrande", "--limit", "4", "--data-dir", DATA, "--json", out, ...extra]);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /piqa\s+4\s+0\s+acc/);
    const json = JSON.parse(readFileSync(out, "utf8")) as { tasks: { seconds?: number; itemsPerSecond?: number }[] };
    for (const t of json.tasks) {
      delete t.seconds;
      delete t.itemsPerSecond;
    }
    return json;
  };
  type Run = { bos: boolean; bosFrom: string; tasks: { task: string; results: { loglikelihoods: number[] }[]; metrics: Record<string, unknown> }[] };
  const a = run("a.json") as Run;
  assert.deepEqual(a, run("b.json"));
  assert.deepEqual(a.tasks.map((t) => t.task), ["piqa", "lambada_openai", "winogrande"], "the alias lambada is lambada_openai");
  assert.equal(a.tasks[0]!.results.length, 4);
  assert.deepEqual(a.tasks.map((t) => Object.keys(t.metrics)), [["acc", "acc_norm"], ["perplexity", "acc"], ["acc"]]);
  assert.deepEqual([a.bos, a.bosFrom], [true, "tokenizer"], "llama2.c's tokenizer adds BOS, so contexts start with it");
  const noBos = run("c.json", ["--no-bos"]) as Run;
  assert.deepEqual([noBos.bos, noBos.bosFrom], [false, "option"]);
  assert.notDeepEqual(noBos.tasks[0]!.results[0]!.loglikelihoods, a.tasks[0]!.results[0]!.loglikelihoods, "without BOS the log-likelihoods change");
});

test("bad task input: unknown task, malformed row, --limit 0, --shots beyond the dev split, missing --data-dir", () => {
  assert.throws(() => parseTaskList("mmlu,hellaswagg"), (err: unknown) => err instanceof OptionError && err.details.hint!.startsWith(`available tasks: ${TASK_NAMES.join(", ")}, mmlu_<subject>`));
  assert.throws(() => parseTaskList("mmlu_astrology"), /--tasks mmlu_astrology is not a known task/);
  assert.deepEqual(parseTaskList("siqa,mmlu_anatomy,cmmlu_agronomy,mmlu_stem").map((t) => t.name), ["social_iqa", "mmlu_anatomy", "cmmlu_agronomy", "mmlu_stem"]);
  const dir = tempDir();
  mkdirSync(join(dir, "multiple-choice"));
  writeFileSync(join(dir, "multiple-choice", "piqa.jsonl"), '{"query": "Question: Q\\n", "choices": ["a", "b"], "gold": 0}\n{"query": "Question: Q2\\n", "choices": ["a"], "gold": 0}\n');
  writeFileSync(join(dir, "multiple-choice", "copa.jsonl"), '{"query": "The man turned on the faucet, therefore", "choices": ["a.", "b."], "gold": 0}\n{"query": "The man turned on the faucet", "choices": ["a.", "b."], "gold": 0}\n');
  const cases: [string[], number, RegExp][] = [
    [["eval", MODEL_BIN, "--tasks", "mmlu,hellaswagg", "--data-dir", DATA], 2, /--tasks hellaswagg is not a known task \(available tasks: mmlu, cmmlu, hellaswag/],
    [["eval", MODEL_BIN, "--tasks", "piqa", "--data-dir", dir], 1, /piqa\.jsonl:2: field "choices" must be a list of at least 2 strings/],
    [["eval", MODEL_BIN, "--tasks", "copa", "--data-dir", dir], 1, /copa\.jsonl:2: the query does not end with ", because" or ", therefore"/],
    [["eval", MODEL_BIN, "--tasks", "piqa", "--data-dir", DATA, "--bos", "--no-bos"], 2, /give --bos or --no-bos, not both/],
    [["eval", MODEL_BIN, "--tasks", "piqa", "--data-dir", DATA, "--limit", "0"], 2, /--limit 0 must be between 1/],
    [["eval", MODEL_BIN, "--tasks", "mmlu", "--data-dir", DATA, "--shots", "6"], 2, /--shots 6: mmlu has 5 dev examples per subject/],
    [["eval", MODEL_BIN, "--tasks", "piqa", "--data-dir", DATA, "--shots", "1"], 2, /--shots 1: piqa has no few-shot split in the data/],
    [["eval", MODEL_BIN, "--tasks", "piqa"], 2, /missing --data-dir DIR/],
    [["eval", MODEL_BIN, "--tasks", "piqa", "--data-dir", join(dir, "nowhere")], 1, /benchmark file not found: .*nowhere\/multiple-choice\/piqa\.jsonl/],
  ];
  for (const [argv, status, message] of cases) {
    const r = runCli(argv);
    assert.equal(r.status, status, `${argv.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  }
});

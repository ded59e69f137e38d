// Benchmark numbers against lm-evaluation-harness 0.4.13 itself: test/oracle/lm_eval/ ran the
// harness (HF backend, float64, transformers) on stories260K converted to Hugging Face
// directories by `shortgpt convert`, with task YAMLs that read the same shared files through the
// harness's own templates, and logged every request. For every task (MMLU and CMMLU subjects at
// 0 and 5 shots) shortgpt must build the same prompt strings and token ids (BOS included), give
// each request's log-likelihood within 1e-4, and the same acc / acc_norm per item and per task,
// on both the llama2.c .bin and the GGUF file (context 512 and 2048: truncation differs).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { evaluateTask, weightedBySize } from "../src/eval/evaluateTasks.js";
import { encodePair } from "../src/eval/loglikelihood.js";
import { findTask } from "../src/eval/tasks/tasks.js";
import { openModel } from "../src/load.js";
import { repoRoot, sharedPath } from "../src/shared.js";
import { MODEL_BIN, MODEL_GGUF } from "./helpers.js";

/** [loglik, is_greedy, context tokens, continuation tokens, continuation (literal or "sha256:..."), context sha256 (WinoGrande)]. */
type GoldenRequest = [number, number, number, number, string, string?];
interface GoldenItem {
  doc_id: number;
  ctx_sha256?: string;
  tokens_sha256: string;
  acc: number;
  acc_norm?: number;
  requests: GoldenRequest[];
}
interface GoldenTask {
  task: string;
  num_fewshot: number;
  metrics: Record<string, number>;
  items: GoldenItem[];
}
interface Golden {
  model: { max_length: number; bos: { tokenizer_adds_bos: boolean } };
  groups: { group: string; num_fewshot: number; subtasks: string[]; metrics: Record<string, number> }[];
  tasks: GoldenTask[];
}

const DATA = sharedPath("data");
const fast = await createOrtBackend({ threads: 2, flavor: "node" });
after(() => fast.dispose());

const sha256 = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex");
const close = (got: number, want: number, tolerance: number): boolean => Math.abs(got - want) <= tolerance * Math.max(1, Math.abs(want));

function readGolden(name: string): Golden {
  return JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", name), "utf8")) as Golden;
}

const MODELS = [
  { name: "stories260K.bin", path: MODEL_BIN, golden: readGolden("lm_eval_stories260K_bin.json") },
  { name: "stories260K.gguf", path: MODEL_GGUF, golden: readGolden("lm_eval_stories260K_gguf.json") },
];

const EVERY_TASK = ["arc_easy", "arc_challenge", "piqa", "boolq", "copa", "openbookqa", "social_iqa", "commonsense_qa", "hellaswag", "winogrande", "lambada_openai"];

for (const { name, path, golden } of MODELS) {
  test(`lm-evaluation-harness 0.4.13 on ${name}: same prompts, token ids, log-likelihoods (1e-4), acc and acc_norm for every task`, async (t) => {
    const opened = openModel(path);
    try {
      assert.equal(opened.config.contextLength, golden.model.max_length, "the harness's max_length is the model's context");
      assert.equal(opened.tokenizer.addsBos, true, "a Llama SentencePiece tokenizer adds BOS");
      assert.equal(golden.model.bos.tokenizer_adds_bos, true, "so does the converted tokenizer in transformers");
      const covered = new Set(golden.tasks.map((g) => g.task));
      for (const task of EVERY_TASK) assert.ok(covered.has(task), `the golden covers ${task}`);
      for (const shots of [0, 5]) {
        assert.ok(golden.tasks.filter((g) => g.task.startsWith("mmlu_") && g.num_fewshot === shots).length >= 3, `MMLU subjects at ${shots} shots`);
        assert.ok(golden.tasks.filter((g) => g.task.startsWith("cmmlu_") && g.num_fewshot === shots).length >= 3, `CMMLU subjects at ${shots} shots`);
      }
      const results = new Map<string, Awaited<ReturnType<typeof evaluateTask>>>();
      for (const want of golden.tasks) {
        const key = `${want.task}@${want.num_fewshot}`;
        const task = findTask(want.task);
        assert.ok(task, `${key}: a shortgpt task of the harness's name`);
        assert.ok(want.items.length >= 20, `${key}: at least 20 items`);
        const items = task.load(DATA, { shots: want.num_fewshot, limit: want.items.length });
        assert.equal(items.length, want.items.length, key);
        items.forEach((item, i) => {
          const w = want.items[i]!;
          assert.equal(item.requests.length, w.requests.length, `${key} item ${i}: choices`);
          // The prompt strings, exactly as the harness built them.
          if (w.ctx_sha256 !== undefined) assert.equal(sha256(item.requests[0]!.context), w.ctx_sha256, `${key} item ${i}: context`);
          item.requests.forEach((r, c) => {
            const [, , , , continuation, contextSha] = w.requests[c]!;
            const mine = continuation.startsWith("sha256:") ? `sha256:${sha256(r.continuation)}` : r.continuation;
            assert.equal(mine, continuation, `${key} item ${i} choice ${c}: continuation`);
            if (contextSha !== undefined) assert.equal(sha256(r.context), contextSha, `${key} item ${i} choice ${c}: context`);
          });
          // The token ids, BOS included, before truncation.
          const tokens = item.requests.map((r) => {
            const pair = encodePair(opened.tokenizer, r, opened.tokenizer.addsBos);
            return `${pair.context.join(",")},+,${pair.continuation.join(",")}`;
          }).join("|");
          assert.equal(sha256(tokens), w.tokens_sha256, `${key} item ${i}: token ids`);
        });
        const result = await evaluateTask(opened, opened.tokenizer, task, { dataDir: DATA, shots: want.num_fewshot, limit: want.items.length, backend: fast });
        results.set(key, result);
        let worst = 0;
        result.results.forEach((r, i) => {
          const w = want.items[i]!;
          r.loglikelihoods.forEach((ll, c) => {
            const [wantLl, greedy] = w.requests[c]!;
            worst = Math.max(worst, Math.abs(ll - wantLl) / Math.max(1, Math.abs(wantLl)));
            assert.ok(close(ll, wantLl, 1e-4), `${key} item ${i} choice ${c}: ${ll} vs the harness's ${wantLl}`);
            if (task.kind === "cloze") assert.equal(r.greedy, greedy === 1, `${key} item ${i}: is_greedy`);
          });
          assert.equal(r.correct ? 1 : 0, w.acc, `${key} item ${i}: acc`);
          if (w.acc_norm !== undefined) assert.equal(r.correctNorm ? 1 : 0, w.acc_norm, `${key} item ${i}: acc_norm`);
        });
        // The task's metrics: exactly those the harness reports, the same values.
        assert.deepEqual(Object.keys(result.metrics).sort(), task.metrics.slice().sort(), key);
        for (const [metric, value] of Object.entries(result.metrics)) {
          assert.ok(metric in want.metrics, `${key}: the harness reports ${metric}`);
          const tolerance = metric === "perplexity" ? 1e-3 : 1e-12;
          assert.ok(close(value.value, want.metrics[metric]!, tolerance), `${key} ${metric}: ${value.value} vs ${want.metrics[metric]}`);
          if (metric !== "perplexity") assert.ok(close(value.stderr, want.metrics[`${metric}_stderr`]!, 1e-12), `${key} ${metric} stderr`);
        }
        t.diagnostic(`${key}: ${result.items} items, max relative |dll| ${worst.toExponential(2)}, ${Object.entries(result.metrics).map(([m, v]) => `${m} ${v.value.toFixed(4)}`).join(", ")}`);
      }
      // Groups: the harness's weight_by_size mean and pooled stderr over the subjects.
      for (const group of golden.groups) {
        const parts = group.subtasks.map((s) => results.get(`${s}@${group.num_fewshot}`)!);
        for (const metric of Object.keys(parts[0]!.metrics)) {
          const got = weightedBySize(parts.map((p) => ({ items: p.items, value: p.metrics[metric]! })));
          assert.ok(close(got.value, group.metrics[metric]!, 1e-12), `${group.group}@${group.num_fewshot} ${metric}`);
          assert.ok(close(got.stderr, group.metrics[`${metric}_stderr`]!, 1e-12), `${group.group}@${group.num_fewshot} ${metric} stderr`);
        }
      }
    } finally {
      opened.close();
    }
  });
}

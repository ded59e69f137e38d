// Benchmark tasks end to end: items -> log-likelihood requests -> scores -> lm-eval's metrics
// (acc: highest summed log-likelihood; acc_norm: highest log-likelihood per character of the
// choice; cloze tasks: greedy-match accuracy and perplexity), with standard errors, per-subject
// results for MMLU/CMMLU, and every item's scores so two runs compare item by item.

import type { DecoderBackend } from "../backend/backend.js";
import type { StreamingSource } from "../models/streaming.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { scoreRequests } from "./loglikelihood.js";
import type { TaskDefinition, TaskItem } from "./tasks/tasks.js";

export interface ItemResult {
  id: string;
  gold: number;
  /** Summed log-likelihood of each choice (or of the continuation, for cloze tasks). */
  loglikelihoods: number[];
  predicted: number;
  predictedNorm: number;
  correct: boolean;
  correctNorm: boolean;
  /** Cloze tasks: the continuation is the greedy one. */
  greedy?: boolean;
  group?: string;
}

export interface MetricValue {
  value: number;
  stderr: number;
}

export interface TaskResult {
  task: string;
  follows: string;
  kind: "choice" | "cloze";
  shots: number;
  items: number;
  metrics: Record<string, MetricValue>;
  /** MMLU/CMMLU: per subject, and the mean over subjects (macro) beside the mean over items. */
  groups?: { group: string; items: number; acc: number; accNorm: number }[];
  seconds: number;
  itemsPerSecond: number;
  results: ItemResult[];
}

export interface EvaluateOptions {
  dataDir: string;
  shots: number;
  limit?: number;
  backend: DecoderBackend;
  bos?: boolean;
  /** Layers left out (the pruned model, without writing it). */
  skip?: ReadonlySet<number>;
  onProgress?: (done: number, total: number) => void;
}

/** Mean and its standard error (sample standard deviation / sqrt(n)), as lm-eval's mean_stderr. */
export function meanWithStderr(values: readonly number[]): MetricValue {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (n < 2) return { value: mean, stderr: NaN };
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1);
  return { value: mean, stderr: Math.sqrt(variance / n) };
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

export async function evaluateTask(source: StreamingSource, tokenizer: Tokenizer, task: TaskDefinition, options: EvaluateOptions): Promise<TaskResult> {
  const started = Date.now();
  const items: TaskItem[] = task.load(options.dataDir, { shots: options.shots, ...(options.limit === undefined ? {} : { limit: options.limit }) });
  const requests = items.flatMap((item) => item.requests);
  const scored = await scoreRequests(source, tokenizer, requests, {
    backend: options.backend, groupSizes: items.map((item) => item.requests.length), ...(options.bos === undefined ? {} : { bos: options.bos }), ...(options.skip ? { skip: options.skip } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  });
  let at = 0;
  const results: ItemResult[] = items.map((item) => {
    const mine = scored.slice(at, at + item.requests.length);
    at += item.requests.length;
    const loglikelihoods = mine.map((s) => s.loglikelihood);
    const predicted = argmax(loglikelihoods);
    const predictedNorm = argmax(loglikelihoods.map((ll, i) => ll / item.choiceLengths[i]!));
    const result: ItemResult = {
      id: item.id, gold: item.gold, loglikelihoods, predicted, predictedNorm,
      correct: task.kind === "cloze" ? mine[0]!.greedy : predicted === item.gold,
      correctNorm: predictedNorm === item.gold,
      ...(task.kind === "cloze" ? { greedy: mine[0]!.greedy } : {}),
      ...(item.group === undefined ? {} : { group: item.group }),
    };
    return result;
  });
  const metrics: Record<string, MetricValue> = { acc: meanWithStderr(results.map((r) => (r.correct ? 1 : 0))) };
  if (task.kind === "choice") {
    metrics["acc_norm"] = meanWithStderr(results.map((r) => (r.correctNorm ? 1 : 0)));
  } else {
    // lm-eval's perplexity aggregation: exp(-mean log-likelihood) over items.
    const mean = meanWithStderr(results.map((r) => r.loglikelihoods[0]!));
    metrics["perplexity"] = { value: Math.exp(-mean.value), stderr: Math.exp(-mean.value) * mean.stderr };
  }
  const groups = groupResults(results);
  if (groups) metrics["acc_macro"] = { value: groups.reduce((n, g) => n + g.acc, 0) / groups.length, stderr: NaN };
  const seconds = (Date.now() - started) / 1000;
  return {
    task: task.name, follows: task.follows, kind: task.kind, shots: options.shots, items: results.length, metrics,
    ...(groups ? { groups } : {}), seconds, itemsPerSecond: results.length / seconds, results,
  };
}

function groupResults(results: readonly ItemResult[]): TaskResult["groups"] {
  if (!results.some((r) => r.group !== undefined)) return undefined;
  const byGroup = new Map<string, ItemResult[]>();
  for (const r of results) byGroup.set(r.group!, [...(byGroup.get(r.group!) ?? []), r]);
  return [...byGroup].map(([group, rs]) => ({
    group, items: rs.length, acc: rs.filter((r) => r.correct).length / rs.length, accNorm: rs.filter((r) => r.correctNorm).length / rs.length,
  }));
}

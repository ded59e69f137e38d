// Benchmark tasks end to end: items -> log-likelihood requests -> scores -> lm-eval's metrics
// (acc: highest summed log-likelihood; acc_norm: highest log-likelihood per character of the
// choice; cloze tasks: greedy-match accuracy and perplexity), with standard errors, per-subject
// results for MMLU/CMMLU, and every item's scores so two runs compare item by item.

import type { DecoderBackend } from "../backend/backend.js";
import type { StreamingSource } from "../models/streaming.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { OptionError } from "../errors.js";
import { checkShardNotEmpty, type Shard, shardIndices } from "../shards/shard.js";
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
  subtask?: string;
}

export interface MetricValue {
  value: number;
  stderr: number;
}

/** A subtask's or a group's metrics, as lm-eval reports them. */
export interface PartResult {
  name: string;
  items: number;
  metrics: Record<string, MetricValue>;
}

export interface TaskResult {
  task: string;
  follows: string;
  kind: "choice" | "cloze";
  shots: number;
  items: number;
  /** Exactly the metrics lm-eval reports for the task (for a group: its aggregate). */
  metrics: Record<string, MetricValue>;
  /** A group's subtasks (mmlu_anatomy, ...), and its subgroups (mmlu_stem, ...). */
  subtasks?: PartResult[];
  groups?: PartResult[];
  seconds: number;
  itemsPerSecond: number;
  results: ItemResult[];
}

export interface EvaluateOptions {
  dataDir: string;
  shots: number;
  limit?: number;
  backend: DecoderBackend;
  /** Put BOS before every context; default: as the model's tokenizer does (Tokenizer.addsBos), as lm-eval's HFLM. */
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

/**
 * A group's metric from its parts', as lm-eval aggregates with weight_by_size: the mean weighted
 * by item count, and the pooled standard error sqrt(sum((n_i - 1) n_i se_i^2) / (N - k) / N).
 */
export function weightedBySize(parts: readonly { items: number; value: MetricValue }[]): MetricValue {
  const total = parts.reduce((n, p) => n + p.items, 0);
  const value = parts.reduce((s, p) => s + p.items * p.value.value, 0) / total;
  const pooled = parts.reduce((s, p) => s + (p.items - 1) * p.items * p.value.stderr ** 2, 0) / (total - parts.length);
  return { value, stderr: Math.sqrt(pooled / total) };
}

function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

/** Per-item values of each metric the task reports, and their means. */
function itemMetrics(task: TaskDefinition, results: readonly ItemResult[]): Record<string, MetricValue> {
  const metrics: Record<string, MetricValue> = {};
  for (const name of task.metrics) {
    if (name === "perplexity") {
      // lm-eval's perplexity aggregation: exp(-mean log-likelihood) over items; the standard
      // error by the delta method (the harness bootstraps it).
      const mean = meanWithStderr(results.map((r) => r.loglikelihoods[0]!));
      metrics[name] = { value: Math.exp(-mean.value), stderr: Math.exp(-mean.value) * mean.stderr };
    } else {
      metrics[name] = meanWithStderr(results.map((r) => ((name === "acc" ? r.correct : r.correctNorm) ? 1 : 0)));
    }
  }
  return metrics;
}

function aggregate(task: TaskDefinition, parts: readonly PartResult[]): Record<string, MetricValue> {
  return Object.fromEntries(task.metrics.map((name) => [name, weightedBySize(parts.map((p) => ({ items: p.items, value: p.metrics[name]! })))]));
}

/**
 * A group's subtasks and subgroups, and its metrics as lm-eval 0.4.13 aggregates them: over its
 * leaf subtasks (a nested group's categories are reported, not used), so the pooled standard error
 * is over every subject.
 */
function groupParts(task: TaskDefinition, results: readonly ItemResult[]): Pick<TaskResult, "metrics" | "subtasks" | "groups"> {
  const group = task.group!;
  const subtasks = group.subtasks.map((name) => {
    const mine = results.filter((r) => r.subtask === name);
    return { name, items: mine.length, metrics: itemMetrics(task, mine) };
  }).filter((s) => s.items > 0);
  if (!group.subgroupOf) return { metrics: aggregate(task, subtasks), subtasks };
  const names = [...new Set(subtasks.map((s) => group.subgroupOf!(s.name)))].sort();
  const groups = names.map((name) => {
    const parts = subtasks.filter((s) => group.subgroupOf!(s.name) === name);
    return { name, items: parts.reduce((n, p) => n + p.items, 0), metrics: aggregate(task, parts) };
  });
  return { metrics: aggregate(task, subtasks), subtasks, groups };
}

export async function evaluateTask(source: StreamingSource, tokenizer: Tokenizer, task: TaskDefinition, options: EvaluateOptions): Promise<TaskResult> {
  return (await evaluateTaskShard(source, tokenizer, task, options)).result;
}

/** What one shard of a task scored: its items' results, their indices among all the task's items, and their number. */
export interface TaskShardResult {
  result: TaskResult;
  indices: number[];
  totalItems: number;
}

/** The task on every item, or with `shard` on that part of the items (after --limit), as evaluateTask. */
export async function evaluateTaskShard(source: StreamingSource, tokenizer: Tokenizer, task: TaskDefinition, options: EvaluateOptions, shard?: Shard): Promise<TaskShardResult> {
  const started = Date.now();
  if (options.bos === true && tokenizer.bosId < 0) {
    throw new OptionError("--bos: this model's tokenizer has no BOS token", { option: "--bos", hint: "leave --bos out: contexts then start as the tokenizer starts texts" });
  }
  const all: TaskItem[] = task.load(options.dataDir, { shots: options.shots, ...(options.limit === undefined ? {} : { limit: options.limit }) });
  if (shard) checkShardNotEmpty(all.length, shard, `${task.name} items`);
  const indices = shard ? shardIndices(all.length, shard) : all.map((_, i) => i);
  const items = shard ? indices.map((i) => all[i]!) : all;
  const requests = items.flatMap((item) => item.requests);
  const scored = await scoreRequests(source, tokenizer, requests, {
    backend: options.backend, groupSizes: items.map((item) => item.requests.length), bos: options.bos ?? tokenizer.addsBos, ...(options.skip ? { skip: options.skip } : {}),
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
      ...(item.subtask === undefined ? {} : { subtask: item.subtask }),
    };
    return result;
  });
  return { result: taskResult(task, options.shots, results, (Date.now() - started) / 1000), indices, totalItems: all.length };
}

/** A task's result from its items' results (in item order), as lm-eval reports it: also how merged shards are summarized. */
export function taskResult(task: TaskDefinition, shots: number, results: ItemResult[], seconds: number): TaskResult {
  const parts = task.group ? groupParts(task, results) : { metrics: itemMetrics(task, results) };
  return {
    task: task.name, follows: task.follows, kind: task.kind, shots, items: results.length, ...parts,
    seconds, itemsPerSecond: results.length / seconds, results,
  };
}

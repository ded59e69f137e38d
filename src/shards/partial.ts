// Partial results of a sharded run and their merge. A part holds the run's identity (model,
// data, every option that changes a number), which shard it is, and the exact per-window or
// per-item sums of its share; merge checks that the parts are one run's, each shard once, and
// recomputes the results with the same arithmetic a single run uses (sums per window, then over
// windows in window order), so a merged run equals a single one.

import { readFileSync } from "node:fs";
import { DataError } from "../errors.js";
import { type ItemResult, type TaskResult, taskResult } from "../eval/evaluateTasks.js";
import { perplexityFromWindows } from "../eval/perplexity.js";
import { findTask } from "../eval/tasks/tasks.js";
import { type MetricName, type MetricScores, type MetricsRun, orderScores, scoresFromSums, type WindowSumsTable } from "../metrics/layerMetrics.js";
import type { Shard } from "./shard.js";

export const PARTIAL_KIND = "shortgpt-partial";
export const PARTIAL_VERSION = 1;

/** A data metric's sums for the shard's windows: sums[k][j] for row k and the shard's j-th window of that kind. */
export interface PartialTable {
  metric: MetricName;
  block: number;
  kind: WindowSumsTable["kind"];
  layers: number[];
  sums: number[][];
  counts: number[][];
}

export interface ScorePart {
  metrics: MetricName[];
  /** The running layers and the seed, for the order-based metrics. */
  running: number[];
  seed: number;
  totals: { scoring: number; perplexity: number };
  /** Indices of the shard's scoring and perplexity windows among the run's, and the tokens of each scoring window. */
  scoringWindows: number[];
  scoringTokens: number[];
  perplexityWindows: number[];
  tables: PartialTable[];
}

export interface PerplexityPart {
  totalWindows: number;
  windows: number[];
  nll: number[];
  tokens: number[];
}

export interface TasksPart {
  tasks: { task: string; totalItems: number; indices: number[]; seconds: number; results: ItemResult[] }[];
}

export interface PartialResult {
  kind: typeof PARTIAL_KIND;
  version: number;
  command: "score" | "eval";
  shard: Shard;
  /** Everything that must be equal across the parts of one run: model identity, data hash, options. */
  run: Record<string, unknown>;
  /** Fields of the single run's JSON that do not depend on the shard (model path, data, options, backend). */
  common: Record<string, unknown>;
  seconds: number;
  score?: ScorePart;
  perplexity?: PerplexityPart;
  tasks?: TasksPart;
}

/** The score part of a partial: the shard's columns of each data metric's sums. */
export function scorePart(run: MetricsRun, metrics: MetricName[], running: number[], seed: number, totals: ScorePart["totals"], scoringWindows: number[], scoringTokens: number[], perplexityWindows: number[]): ScorePart {
  const tables = run.tables.map((t): PartialTable => {
    const rows = (a: Float64Array): number[][] => t.layers.map((_, k) => Array.from(a.subarray(k * t.windows, (k + 1) * t.windows)));
    return { metric: t.metric, block: t.block, kind: t.kind, layers: t.layers, sums: rows(t.sums), counts: rows(t.counts) };
  });
  return { metrics, running, seed, totals, scoringWindows, scoringTokens, perplexityWindows, tables };
}

export function readPartial(path: string): PartialResult {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new DataError(`${path}: not a readable JSON file (${(err as Error).message})`, { file: path, hint: "pass the --json files written by score or eval with --shard i/n" });
  }
  const v = value as Partial<PartialResult> | null;
  if (typeof v !== "object" || v === null || v.kind !== PARTIAL_KIND) {
    throw new DataError(`${path} is not a partial result (no "kind": "${PARTIAL_KIND}")`, { file: path, hint: "merge takes the --json files of runs with --shard i/n" });
  }
  if (v.version !== PARTIAL_VERSION) throw new DataError(`${path}: partial format version ${String(v.version)}, this shortgpt reads ${PARTIAL_VERSION}`, { file: path, hint: "run every shard with the same shortgpt version" });
  const shard = v.shard as Partial<Shard> | undefined;
  const validShard = Number.isInteger(shard?.index) && Number.isInteger(shard?.count) && shard!.count! >= 1 && shard!.index! >= 1 && shard!.index! <= shard!.count!;
  if (!validShard || (v.command !== "score" && v.command !== "eval") || typeof v.run !== "object" || v.run === null || typeof v.common !== "object" || v.common === null || typeof v.seconds !== "number") {
    throw new DataError(`${path}: the partial result is damaged (shard, command, run or common missing or malformed)`, { file: path, hint: "rerun this shard" });
  }
  return v as PartialResult;
}

/** Where two JSON values first differ, as "path: a vs b"; undefined when equal. */
export function firstDifference(a: unknown, b: unknown, path = ""): string | undefined {
  if (typeof a === "object" && a !== null && typeof b === "object" && b !== null && Array.isArray(a) === Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
    for (const key of keys) {
      const d = firstDifference((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key], path ? `${path}.${key}` : key);
      if (d !== undefined) return d;
    }
    return undefined;
  }
  const show = (x: unknown): string => (x === undefined ? "(absent)" : JSON.stringify(x).slice(0, 80));
  return a === b ? undefined : `${path || "(value)"}: ${show(a)} vs ${show(b)}`;
}

export interface NamedPartial {
  path: string;
  partial: PartialResult;
}

/** Checks that the parts are the n shards of one run, each once; returns them in shard order. */
export function checkParts(parts: readonly NamedPartial[]): NamedPartial[] {
  const first = parts[0];
  if (!first) throw new DataError("merge needs at least one part", { hint: "shortgpt merge PART.json... --json OUT" });
  for (const p of parts.slice(1)) {
    const diff = firstDifference({ command: first.partial.command, parts: first.partial.shard.count, ...first.partial.run }, { command: p.partial.command, parts: p.partial.shard.count, ...p.partial.run });
    if (diff !== undefined) {
      throw new DataError(`${p.path} is not part of the same run as ${first.path}: ${diff}`, { file: p.path, hint: "merge only the parts of one run (same model, data and options)" });
    }
  }
  const n = first.partial.shard.count;
  const byIndex = new Map<number, NamedPartial>();
  for (const p of parts) {
    const other = byIndex.get(p.partial.shard.index);
    if (other) throw new DataError(`shard ${p.partial.shard.index}/${n} is given twice: ${other.path} and ${p.path}`, { file: p.path, hint: "give each part once" });
    byIndex.set(p.partial.shard.index, p);
  }
  const missing = Array.from({ length: n }, (_, i) => i + 1).filter((i) => !byIndex.has(i));
  if (missing.length > 0) throw new DataError(`missing shard${missing.length > 1 ? "s" : ""} ${missing.map((i) => `${i}/${n}`).join(", ")} of the run (${parts.length} of ${n} parts given)`, { hint: "run the missing shards with --shard i/n and merge all the parts" });
  return Array.from({ length: n }, (_, i) => byIndex.get(i + 1)!);
}

/** For each of `total` positions, the part and its column that hold it; refuses overlaps and holes. */
function placeColumns(total: number, parts: readonly NamedPartial[], ids: (p: NamedPartial) => readonly number[], what: string): { part: number; column: number }[] {
  const place: ({ part: number; column: number } | undefined)[] = new Array(total).fill(undefined);
  parts.forEach((p, part) => ids(p).forEach((id, column) => {
    if (!Number.isInteger(id) || id < 0 || id >= total) throw new DataError(`${p.path}: ${what} ${id} is outside 0..${total - 1}`, { file: p.path });
    if (place[id]) throw new DataError(`${p.path}: ${what} ${id} is also in ${parts[place[id]!.part]!.path}`, { file: p.path, hint: "the parts overlap: were they cut with the same --shard n?" });
    place[id] = { part, column };
  }));
  const hole = place.findIndex((x) => x === undefined);
  if (hole >= 0) throw new DataError(`no part holds ${what} ${hole} of ${total}`, { hint: "a part is incomplete: rerun its shard" });
  return place as { part: number; column: number }[];
}

function need<T>(p: NamedPartial, value: T | undefined, what: string): T {
  if (value === undefined) throw new DataError(`${p.path} has no ${what} results`, { file: p.path });
  return value;
}

/** Refuses a part whose arrays do not fit together (a damaged or hand-edited file) before any number is read. */
function checkShape(p: NamedPartial, ok: boolean, what: string): void {
  if (!ok) throw new DataError(`${p.path}: the partial result is damaged (${what})`, { file: p.path, hint: "rerun this shard" });
}

const isNumbers = (a: unknown, length: number): boolean => Array.isArray(a) && a.length === length && a.every((x) => typeof x === "number");

export interface MergedScore {
  results: MetricScores[];
  tables: WindowSumsTable[];
  tokens: number;
  windows: { scoring: number; perplexity: number };
}

export function mergeScore(parts: readonly NamedPartial[]): MergedScore {
  const scores = parts.map((p) => need(p, p.partial.score, "score"));
  const head = scores[0]!;
  parts.forEach((p, i) => {
    const s = scores[i]!;
    checkShape(p, Array.isArray(s.scoringWindows) && Array.isArray(s.perplexityWindows) && isNumbers(s.scoringTokens, s.scoringWindows.length), "window lists");
    checkShape(p, Array.isArray(s.tables) && s.tables.length === head.tables.length, "number of metric tables");
    s.tables.forEach((t, ti) => {
      const columns = t.kind === "scoring" ? s.scoringWindows.length : s.perplexityWindows.length;
      const rows = head.tables[ti]!.layers.length;
      checkShape(p, t.metric === head.tables[ti]!.metric && t.kind === head.tables[ti]!.kind && Array.isArray(t.sums) && Array.isArray(t.counts) && t.sums.length === rows && t.counts.length === rows
        && t.sums.every((r) => isNumbers(r, columns)) && t.counts.every((r) => isNumbers(r, columns)), `${t.metric} sums`);
    });
  });
  const placeOf = {
    scoring: placeColumns(head.totals.scoring, parts, (p) => p.partial.score!.scoringWindows, "scoring window"),
    perplexity: placeColumns(head.totals.perplexity, parts, (p) => p.partial.score!.perplexityWindows, "perplexity window"),
  };
  let tokens = 0;
  for (const place of placeOf.scoring) tokens += scores[place.part]!.scoringTokens[place.column]!;
  const tables = head.tables.map((t, ti): WindowSumsTable => {
    const place = placeOf[t.kind];
    const windows = place.length;
    const sums = new Float64Array(t.layers.length * windows);
    const counts = new Float64Array(t.layers.length * windows);
    for (let k = 0; k < t.layers.length; k++) {
      place.forEach(({ part, column }, w) => {
        const mine = scores[part]!.tables[ti]!;
        sums[k * windows + w] = mine.sums[k]![column]!;
        counts[k * windows + w] = mine.counts[k]![column]!;
      });
    }
    return { metric: t.metric, block: t.block, kind: t.kind, layers: t.layers, windows, sums, counts };
  });
  const results = head.metrics.map((metric) => (metric === "reverse-order" || metric === "random" ? orderScores(metric, head.running, head.seed) : scoresFromSums(tables.find((t) => t.metric === metric)!)));
  return { results, tables, tokens, windows: { ...head.totals } };
}

export function mergePerplexity(parts: readonly NamedPartial[]): { perplexity: number; nll: number; tokens: number; windows: number } {
  const ppl = parts.map((p) => need(p, p.partial.perplexity, "perplexity"));
  parts.forEach((p, i) => {
    const x = ppl[i]!;
    checkShape(p, Array.isArray(x.windows) && isNumbers(x.nll, x.windows.length) && isNumbers(x.tokens, x.windows.length), "perplexity sums");
  });
  const place = placeColumns(ppl[0]!.totalWindows, parts, (p) => p.partial.perplexity!.windows, "perplexity window");
  const nll = Float64Array.from(place, ({ part, column }) => ppl[part]!.nll[column]!);
  const tokens = Float64Array.from(place, ({ part, column }) => ppl[part]!.tokens[column]!);
  return { ...perplexityFromWindows({ nll, tokens }), windows: place.length };
}

export function mergeTasks(parts: readonly NamedPartial[], shots: number): TaskResult[] {
  const all = parts.map((p) => need(p, p.partial.tasks, "task"));
  parts.forEach((p, i) => {
    const tasks = all[i]!.tasks;
    checkShape(p, Array.isArray(tasks) && tasks.length === all[0]!.tasks.length && tasks.every((t, ti) => t.task === all[0]!.tasks[ti]!.task
      && Array.isArray(t.indices) && Array.isArray(t.results) && t.results.length === t.indices.length && typeof t.seconds === "number"), "task results");
  });
  return all[0]!.tasks.map((t, ti) => {
    const task = findTask(t.task);
    if (!task) throw new DataError(`${parts[0]!.path}: unknown task ${t.task}`, { file: parts[0]!.path });
    const place = placeColumns(t.totalItems, parts, (p) => p.partial.tasks!.tasks[ti]!.indices, `${t.task} item`);
    const results = place.map(({ part, column }) => all[part]!.tasks[ti]!.results[column]!);
    return taskResult(task, shots, results, all.reduce((s, p) => s + p.tasks[ti]!.seconds, 0));
  });
}

// The layer-importance metrics the literature compares, computed on calibration windows with
// as few passes as possible: every residual-stream metric comes from one streaming pass; `ppl`
// needs one perplexity pass per layer; the order-based ones need no data.
//
//   bi                  1 - mean_t cos(x_l, x_{l+1})                  (ShortGPT, Eq. 1)
//   bi-angular          mean_t arccos(cos(x_l, x_{l+1})) / pi           (the angular option of
//                       the public ShortGPT code: the angle is taken per token, then averaged)
//   angular             mean arccos(cos(x_l, x_{l+n})) / pi over each window's last token, or all
//                       tokens, for the block of n layers starting at l  (Gromov et al.)
//   relative-magnitude  mean_t ||f(x)|| / ||x + f(x)||, f(x) = x_{l+1} - x_l  (Weight Subcloning)
//   ppl                 calibration perplexity with layer l removed      (Shortened LLaMA)
//   reverse-order       remove from the second-to-last layer backwards, keeping the last
//   random              a seeded random order
// Every score is "lower = remove first"; rankings break ties by layer index.

import type { PerplexityWindow, Window } from "../data/windows.js";
import { OptionError } from "../errors.js";
import { releaseBatches, runLayersStreaming, type StreamingOptions, type StreamingSource, streamingPerplexity } from "../models/streaming.js";
import { seededPermutation } from "../util/random.js";
import { type BlockTokens, LayerStats, weightedMean } from "./layerStats.js";

export const METRIC_NAMES = ["bi", "bi-angular", "angular", "relative-magnitude", "ppl", "reverse-order", "random"] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

export interface MetricScores {
  metric: MetricName;
  /** Layers per scored unit: 1, or the block size for `angular` (then `layer` is the block's first layer). */
  block: number;
  scores: { layer: number; score: number }[];
  /** Scored units, least important first. */
  ranking: number[];
}

export function parseMetricList(text: string, option = "--metric"): MetricName[] {
  const names = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  if (names.length === 0) throw new OptionError(`${option} is empty`, { option, hint: `known metrics: ${METRIC_NAMES.join(", ")}` });
  for (const name of names) {
    if (!(METRIC_NAMES as readonly string[]).includes(name)) {
      throw new OptionError(`${option} ${name} is not a known metric`, { option, got: name, hint: `known metrics: ${METRIC_NAMES.join(", ")}` });
    }
  }
  if (new Set(names).size !== names.length) throw new OptionError(`${option} names a metric twice`, { option, got: text });
  return names as MetricName[];
}

export interface MetricsOptions extends Omit<StreamingOptions, "hooks"> {
  /** Block size n for `angular` (default 1). */
  block?: number;
  /** Tokens `angular` compares: each window's last (default, as Gromov et al.) or all. */
  tokens?: BlockTokens;
  /** Seed for `random` (default 0). */
  seed?: number;
}

export interface CalibrationWindows {
  /** Windows for the residual-stream metrics. */
  scoring: readonly Window[];
  /** Windows for `ppl` (strided perplexity windows over the same text). */
  perplexity: readonly PerplexityWindow[];
}

/**
 * A data metric's exact per-window sums: row k (a running layer, or a block start) and window w at
 * k * windows + w. Every score is a function of the mean over windows (summed per window first,
 * then over windows in window order), so sums gathered on several machines give the same scores.
 */
export interface WindowSumsTable {
  metric: MetricName;
  block: number;
  /** Which calibration windows the columns are: scoring windows, or perplexity windows (`ppl`). */
  kind: "scoring" | "perplexity";
  /** The layer (or block start) of each row. */
  layers: number[];
  windows: number;
  sums: Float64Array;
  counts: Float64Array;
}

/** The score from a mean over windows: bi is 1 - mean cosine, ppl is exp(mean nll), the others are the mean. */
function scoreOfMean(metric: MetricName, mean: number): number {
  if (metric === "bi") return 1 - mean;
  if (metric === "ppl") return Math.exp(mean);
  return mean;
}

/** A data metric's scores from its per-window sums; `weights` counts each window (a bootstrap resample). */
export function scoresFromSums(table: WindowSumsTable, weights?: ArrayLike<number>): MetricScores {
  const w = table.windows;
  return fromScores(table.metric, table.block, table.layers.map((layer, k) => ({
    layer, score: scoreOfMean(table.metric, weightedMean(table.sums.subarray(k * w, (k + 1) * w), table.counts.subarray(k * w, (k + 1) * w), weights)),
  })));
}

/** The order-based metrics: reverse-order and seeded random, from the running layers alone. */
export function orderScores(metric: "reverse-order" | "random", running: readonly number[], seed: number): MetricScores {
  if (metric === "reverse-order") return fromOrder(metric, [...running.slice(0, -1).reverse(), running[running.length - 1]!]);
  return fromOrder(metric, seededPermutation(running.length, seed).map((i) => running[i]!));
}

export function isDataMetric(metric: MetricName): boolean {
  return metric !== "reverse-order" && metric !== "random";
}

export interface MetricsRun {
  results: MetricScores[];
  /** The per-window sums behind each data metric, in the order of `results` (order metrics have none). */
  tables: WindowSumsTable[];
  /** The same metrics with each window counted `weights[w]` times (a bootstrap resample); order metrics unchanged. */
  resample(scoringWeights: ArrayLike<number>, perplexityWeights: ArrayLike<number>): MetricScores[];
  tokens: number;
  windows: { scoring: number; perplexity: number };
}

function rankingOf(scores: readonly { layer: number; score: number }[]): number[] {
  return [...scores].sort((a, b) => a.score - b.score || a.layer - b.layer).map((s) => s.layer);
}

function fromScores(metric: MetricName, block: number, scores: { layer: number; score: number }[]): MetricScores {
  return { metric, block, scores, ranking: rankingOf(scores) };
}

/** A removal order as scores: position 0 is removed first. */
function fromOrder(metric: MetricName, order: readonly number[]): MetricScores {
  const scores = order.map((layer, position) => ({ layer, score: position })).sort((a, b) => a.layer - b.layer);
  return { metric, block: 1, scores, ranking: [...order] };
}

/** The running layers (not skipped), in order. */
export function runningLayers(nLayers: number, skip?: ReadonlySet<number>): number[] {
  return Array.from({ length: nLayers }, (_, l) => l).filter((l) => !skip?.has(l));
}

export function checkBlock(block: number, running: number): void {
  if (!Number.isInteger(block) || block < 1 || block > running) {
    throw new OptionError(`--block ${block} must be an integer from 1 to the number of layers (${running})`, { option: "--block", expected: `1..${running}`, got: block });
  }
}

export async function computeMetrics(source: StreamingSource, windows: CalibrationWindows, metrics: readonly MetricName[], options: MetricsOptions): Promise<MetricsRun> {
  const running = runningLayers(source.config.nLayers, options.skip);
  const block = options.block ?? 1;
  checkBlock(block, running.length);
  const wantsStats = metrics.some((m) => m === "bi" || m === "bi-angular" || m === "relative-magnitude" || m === "angular");
  let stats: LayerStats | undefined;
  if (wantsStats) {
    const want = { cosine: metrics.includes("bi"), angle: metrics.includes("bi-angular"), magnitude: metrics.includes("relative-magnitude") };
    stats = new LayerStats(running.length, windows.scoring.length, want, metrics.includes("angular") ? { block, tokens: options.tokens ?? "last" } : undefined);
    releaseBatches(await runLayersStreaming(source, windows.scoring, { ...options, hooks: stats }), options.backend);
  }
  // ppl: one perplexity pass per layer, that layer skipped (on top of any skipped already).
  const pplRuns: { layer: number; nll: Float64Array; tokens: Float64Array }[] = [];
  if (metrics.includes("ppl")) {
    for (const layer of running) {
      const skip = new Set(options.skip ?? []);
      skip.add(layer);
      const r = await streamingPerplexity(source, windows.perplexity, { ...options, skip });
      pplRuns.push({ layer, nll: r.perWindow!.nll, tokens: r.perWindow!.tokens });
    }
  }
  const table = (metric: MetricName, sums: { sums: Float64Array; counts: Float64Array }, layers: number[], kind: WindowSumsTable["kind"] = "scoring", tableBlock = 1): WindowSumsTable => ({
    metric, block: tableBlock, kind, layers, windows: kind === "scoring" ? windows.scoring.length : windows.perplexity.length, sums: sums.sums, counts: sums.counts,
  });
  const tables = metrics.filter(isDataMetric).map((metric): WindowSumsTable => {
    switch (metric) {
      case "bi":
        return table(metric, stats!.cosine!, running);
      case "bi-angular":
        return table(metric, stats!.angle!, running);
      case "relative-magnitude":
        return table(metric, stats!.magnitude!, running);
      case "angular": {
        // Only the first blockStarts rows are block starts; the rest were never filled.
        const rows = stats!.blockStarts;
        const n = windows.scoring.length;
        const angle = stats!.blockAngle!;
        return table(metric, { sums: angle.sums.slice(0, rows * n), counts: angle.counts.slice(0, rows * n) }, running.slice(0, rows), "scoring", block);
      }
      default: {
        const concat = (part: "nll" | "tokens"): Float64Array => {
          const out = new Float64Array(pplRuns.length * windows.perplexity.length);
          pplRuns.forEach((r, k) => out.set(r[part], k * windows.perplexity.length));
          return out;
        };
        return table(metric, { sums: concat("nll"), counts: concat("tokens") }, pplRuns.map((r) => r.layer), "perplexity");
      }
    }
  });
  const seed = options.seed ?? 0;
  const aggregate = (scoringWeights?: ArrayLike<number>, perplexityWeights?: ArrayLike<number>): MetricScores[] => metrics.map((metric) => {
    if (metric === "reverse-order" || metric === "random") return orderScores(metric, running, seed);
    const t = tables.find((x) => x.metric === metric)!;
    return scoresFromSums(t, t.kind === "scoring" ? scoringWeights : perplexityWeights);
  });
  return {
    results: aggregate(),
    tables,
    resample: (scoringWeights, perplexityWeights) => aggregate(scoringWeights, perplexityWeights),
    tokens: windows.scoring.reduce((n, w) => n + w.tokens.length, 0),
    windows: { scoring: windows.scoring.length, perplexity: windows.perplexity.length },
  };
}

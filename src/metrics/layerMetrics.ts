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

export interface MetricsRun {
  results: MetricScores[];
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
function runningLayers(nLayers: number, skip?: ReadonlySet<number>): number[] {
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
  const orderMetrics = new Map<MetricName, MetricScores>();
  orderMetrics.set("reverse-order", fromOrder("reverse-order", [...running.slice(0, -1).reverse(), running[running.length - 1]!]));
  orderMetrics.set("random", fromOrder("random", seededPermutation(running.length, options.seed ?? 0).map((i) => running[i]!)));

  const aggregate = (scoringWeights?: ArrayLike<number>, perplexityWeights?: ArrayLike<number>): MetricScores[] => metrics.map((metric) => {
    const perLayer = (score: (k: number) => number): { layer: number; score: number }[] => running.map((layer, k) => ({ layer, score: score(k) }));
    switch (metric) {
      case "bi":
        return fromScores(metric, 1, perLayer((k) => 1 - stats!.cosine!.mean(k, scoringWeights)));
      case "bi-angular":
        return fromScores(metric, 1, perLayer((k) => stats!.angle!.mean(k, scoringWeights)));
      case "relative-magnitude":
        return fromScores(metric, 1, perLayer((k) => stats!.magnitude!.mean(k, scoringWeights)));
      case "angular": {
        const starts = Array.from({ length: stats!.blockStarts }, (_, k) => ({ layer: running[k]!, score: stats!.blockAngle!.mean(k, scoringWeights) }));
        return fromScores(metric, block, starts);
      }
      case "ppl":
        return fromScores(metric, 1, pplRuns.map((r) => ({ layer: r.layer, score: Math.exp(weightedMean(r.nll, r.tokens, perplexityWeights)) })));
      default:
        return orderMetrics.get(metric)!;
    }
  });
  return {
    results: aggregate(),
    resample: (scoringWeights, perplexityWeights) => aggregate(scoringWeights, perplexityWeights),
    tokens: windows.scoring.reduce((n, w) => n + w.tokens.length, 0),
    windows: { scoring: windows.scoring.length, perplexity: windows.perplexity.length },
  };
}

// How stable is the choice? Resample the calibration windows with replacement R times (seeded),
// re-aggregate every metric from the per-window sums (no model re-runs), and report for each
// layer a 95% interval of its score and how often it lands in the removed set; plus Kendall's
// tau between the rankings different metrics give on the full data.

import { mulberry32 } from "../util/random.js";
import type { MetricScores, MetricsRun } from "./layerMetrics.js";

export interface BootstrapLayer {
  layer: number;
  score: number;
  low: number;
  high: number;
  /** Share of resamples in which the layer (or, for a block metric, the block starting here) is selected, when a removal count was given. */
  removedFrequency?: number;
}

export interface BootstrapResult {
  resamples: number;
  seed: number;
  confidence: number;
  metrics: { metric: string; block: number; layers: BootstrapLayer[] }[];
  kendallTau: { a: string; b: string; tau: number }[];
}

export interface BootstrapOptions {
  resamples: number;
  seed: number;
  /** Picks the removed set from one resample's scores; absent: no frequencies. */
  select?: (scores: MetricScores) => number[];
}

/** Multinomial counts: n draws with replacement from n items. */
function drawCounts(n: number, rand: () => number): Float64Array {
  const counts = new Float64Array(n);
  for (let i = 0; i < n; i++) counts[Math.floor(rand() * n)]! += 1;
  return counts;
}

/** The q-quantile of sorted values, linearly interpolated (the common "type 7" definition). */
export function quantile(sorted: readonly number[], q: number): number {
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

/** Kendall's tau-b between two score lists over the same items (ties allowed). */
export function kendallTau(x: readonly number[], y: readonly number[]): number {
  let concordant = 0;
  let discordant = 0;
  let tiesX = 0;
  let tiesY = 0;
  for (let i = 0; i < x.length; i++) {
    for (let j = i + 1; j < x.length; j++) {
      const dx = Math.sign(x[i]! - x[j]!);
      const dy = Math.sign(y[i]! - y[j]!);
      if (dx === 0 && dy === 0) continue;
      if (dx === 0) tiesX++;
      else if (dy === 0) tiesY++;
      else if (dx === dy) concordant++;
      else discordant++;
    }
  }
  const denominator = Math.sqrt((concordant + discordant + tiesX) * (concordant + discordant + tiesY));
  return denominator === 0 ? 0 : (concordant - discordant) / denominator;
}

export function bootstrap(run: MetricsRun, options: BootstrapOptions): BootstrapResult {
  const rand = mulberry32(options.seed);
  const samples = run.results.map((r) => r.scores.map(() => [] as number[]));
  const selected = run.results.map((r) => new Map(r.scores.map((s) => [s.layer, 0])));
  for (let r = 0; r < options.resamples; r++) {
    const scoringWeights = drawCounts(run.windows.scoring, rand);
    const perplexityWeights = drawCounts(run.windows.perplexity, rand);
    run.resample(scoringWeights, perplexityWeights).forEach((result, m) => {
      result.scores.forEach((s, i) => samples[m]![i]!.push(s.score));
      if (options.select) {
        // For a block metric the unit is the block: count how often each block start is chosen.
        const chosen = options.select(result);
        for (const layer of result.block > 1 ? chosen.slice(0, 1) : chosen) selected[m]!.set(layer, (selected[m]!.get(layer) ?? 0) + 1);
      }
    });
  }
  const metrics = run.results.map((result, m) => ({
    metric: result.metric,
    block: result.block,
    layers: result.scores.map((s, i): BootstrapLayer => {
      const sorted = [...samples[m]![i]!].sort((a, b) => a - b);
      const layer: BootstrapLayer = { layer: s.layer, score: s.score, low: quantile(sorted, 0.025), high: quantile(sorted, 0.975) };
      if (options.select) layer.removedFrequency = selected[m]!.get(s.layer)! / options.resamples;
      return layer;
    }),
  }));
  return { resamples: options.resamples, seed: options.seed, confidence: 0.95, metrics, kendallTau: rankCorrelations(run.results) };
}

/** Kendall's tau between every pair of per-layer metrics, over the layers both score. */
export function rankCorrelations(results: readonly MetricScores[]): { a: string; b: string; tau: number }[] {
  const perLayer = results.filter((r) => r.block === 1);
  const pairs: { a: string; b: string; tau: number }[] = [];
  for (let i = 0; i < perLayer.length; i++) {
    for (let j = i + 1; j < perLayer.length; j++) {
      const a = new Map(perLayer[i]!.scores.map((s) => [s.layer, s.score]));
      const b = new Map(perLayer[j]!.scores.map((s) => [s.layer, s.score]));
      const common = [...a.keys()].filter((layer) => b.has(layer));
      pairs.push({ a: perLayer[i]!.metric, b: perLayer[j]!.metric, tau: kendallTau(common.map((l) => a.get(l)!), common.map((l) => b.get(l)!)) });
    }
  }
  return pairs;
}

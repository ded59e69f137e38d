// Which layers a metric's scores remove: the k lowest (top-k), or the best block of k
// consecutive layers (contiguous), with the first and last layers optionally protected; and
// iterative selection, which rescores the model after every removal (ShortGPT's BI rescored,
// or SLEB's greedy perplexity search).

import { OptionError } from "../errors.js";
import type { MetricName, MetricScores } from "../metrics/layerMetrics.js";
import { checkRemoveCount } from "./plan.js";

export const SELECT_STRATEGIES = ["top-k", "contiguous"] as const;
export type SelectStrategy = (typeof SELECT_STRATEGIES)[number];

export interface Protection {
  /** Never remove layers 0..keepFirst-1. */
  keepFirst: number;
  /** Never remove the last keepLast layers. */
  keepLast: number;
}

export const NO_PROTECTION: Protection = { keepFirst: 0, keepLast: 0 };

export function parseStrategy(text: string): SelectStrategy {
  if (!(SELECT_STRATEGIES as readonly string[]).includes(text)) {
    throw new OptionError(`--select ${text} is not a known strategy`, { option: "--select", got: text, hint: `choose one of: ${SELECT_STRATEGIES.join(", ")}` });
  }
  return text as SelectStrategy;
}

/** Refuses a removal count the protected layers leave no room for (and one that would leave no layer). */
export function checkSelection(k: number, nLayers: number, protection: Protection): void {
  checkRemoveCount(k, nLayers);
  const free = nLayers - protection.keepFirst - protection.keepLast;
  if (free < k) {
    throw new OptionError(`--keep-first ${protection.keepFirst} and --keep-last ${protection.keepLast} leave ${Math.max(0, free)} of ${nLayers} layers removable, fewer than --remove ${k}`, {
      option: "--keep-first", expected: `at most ${nLayers - k} protected layers`, got: protection.keepFirst + protection.keepLast,
    });
  }
}

function removable(layer: number, nLayers: number, protection: Protection): boolean {
  return layer >= protection.keepFirst && layer < nLayers - protection.keepLast;
}

/** The k lowest-scoring removable layers, sorted by index. */
export function selectTopK(scores: MetricScores, k: number, nLayers: number, protection: Protection = NO_PROTECTION): number[] {
  checkSelection(k, nLayers, protection);
  if (scores.block !== 1) return selectContiguous(scores, k, nLayers, protection);
  const chosen = scores.ranking.filter((layer) => removable(layer, nLayers, protection)).slice(0, k);
  if (chosen.length < k) throw new OptionError(`${scores.metric} scored only ${chosen.length} removable layers, fewer than --remove ${k}`, { option: "--remove" });
  return chosen.sort((a, b) => a - b);
}

/**
 * The block of k consecutive removable layers with the lowest total score (for per-layer
 * metrics), or the block the metric scored directly (angular with --block k); ties: earliest.
 */
export function selectContiguous(scores: MetricScores, k: number, nLayers: number, protection: Protection = NO_PROTECTION): number[] {
  checkSelection(k, nLayers, protection);
  if (scores.block !== 1 && scores.block !== k) {
    throw new OptionError(`${scores.metric} scored blocks of ${scores.block} layers but --remove is ${k}`, { option: "--block", expected: k, got: scores.block, hint: "give --block equal to --remove" });
  }
  const byLayer = new Map(scores.scores.map((s) => [s.layer, s.score]));
  let best: { start: number; total: number } | undefined;
  for (let start = protection.keepFirst; start + k <= nLayers - protection.keepLast; start++) {
    let total = 0;
    if (scores.block === k) {
      total = byLayer.get(start) ?? NaN;
    } else {
      for (let l = start; l < start + k; l++) total += byLayer.get(l) ?? NaN;
    }
    if (Number.isNaN(total)) continue; // a block touching a layer that was not scored
    if (!best || total < best.total) best = { start, total };
  }
  if (!best) throw new OptionError(`no block of ${k} scored, removable consecutive layers`, { option: "--remove" });
  return Array.from({ length: k }, (_, i) => best!.start + i);
}

export function selectLayers(strategy: SelectStrategy, scores: MetricScores, k: number, nLayers: number, protection: Protection): number[] {
  return strategy === "contiguous" ? selectContiguous(scores, k, nLayers, protection) : selectTopK(scores, k, nLayers, protection);
}

export const ITERATIVE_METRICS: readonly MetricName[] = ["bi", "ppl"];

export interface IterativeStep {
  removed: number;
  scores: MetricScores;
}

/**
 * Removes one layer at a time: score the model with the layers removed so far skipped, remove
 * the lowest-scoring removable layer, repeat k times. With `ppl` this is SLEB's greedy search.
 */
export async function selectIteratively(
  score: (skip: ReadonlySet<number>) => Promise<MetricScores>, metric: MetricName, k: number, nLayers: number, protection: Protection,
): Promise<{ layers: number[]; steps: IterativeStep[] }> {
  if (!ITERATIVE_METRICS.includes(metric)) {
    throw new OptionError(`--iterative works with ${ITERATIVE_METRICS.join(" and ")}, not ${metric}`, { option: "--iterative", got: metric });
  }
  checkSelection(k, nLayers, protection);
  const removed = new Set<number>();
  const steps: IterativeStep[] = [];
  for (let step = 0; step < k; step++) {
    const scores = await score(removed);
    const next = scores.ranking.find((layer) => !removed.has(layer) && removable(layer, nLayers, protection));
    if (next === undefined) throw new OptionError(`no removable layer left after ${step} removals`, { option: "--remove" });
    removed.add(next);
    steps.push({ removed: next, scores });
  }
  return { layers: [...removed].sort((a, b) => a - b), steps };
}

// Options for choosing layers by a metric, shared by `score` and `prune`: --metric, --block,
// --tokens, --seed (metric), --select, --keep-first, --keep-last, --iterative (selection).

import type { DecoderBackend } from "../backend/backend.js";
import { OptionError } from "../errors.js";
import type { OpenedModel } from "../load.js";
import { type CalibrationWindows, computeMetrics, METRIC_NAMES, type MetricName, type MetricScores, type MetricsOptions, type MetricsRun, parseMetricList } from "../metrics/layerMetrics.js";
import type { BlockTokens } from "../metrics/layerStats.js";
import { calibrationWindows, type TokenizedData, type WindowChoice } from "../pipeline.js";
import { parseStrategy, type Protection, type SelectStrategy } from "../prune/select.js";
import { flag, int, type OptionSpec, type Parsed, str } from "./args.js";
import { barChart } from "./format.js";
import { Progress } from "./progress.js";

export const METRIC_OPTIONS: OptionSpec = {
  metric: { type: "string" },
  block: { type: "string" },
  tokens: { type: "string" },
  seed: { type: "string" },
};

export const SELECTION_OPTIONS: OptionSpec = {
  select: { type: "string" },
  "keep-first": { type: "string" },
  "keep-last": { type: "string" },
  iterative: { type: "boolean" },
};

export interface MetricChoice {
  metrics: MetricName[];
  block?: number;
  tokens: BlockTokens;
  seed: number;
}

export function metricsFromArgs(p: Parsed, defaultMetric = "bi"): MetricChoice {
  const metrics = parseMetricList(str(p, "metric") ?? defaultMetric);
  const tokens = str(p, "tokens") ?? "last";
  if (tokens !== "last" && tokens !== "all") throw new OptionError(`--tokens ${tokens}: expected last or all`, { option: "--tokens", got: tokens });
  const block = int(p, "block", 1);
  if (block !== undefined && !metrics.includes("angular")) throw new OptionError("--block applies to the angular metric only", { option: "--block", hint: "add --metric angular" });
  return { metrics, tokens, seed: int(p, "seed", 0, 2 ** 32 - 1) ?? 0, ...(block === undefined ? {} : { block }) };
}

export interface SelectionChoice {
  strategy: SelectStrategy;
  protection: Protection;
  iterative: boolean;
}

export function selectionFromArgs(p: Parsed): SelectionChoice {
  return {
    strategy: parseStrategy(str(p, "select") ?? "top-k"),
    protection: { keepFirst: int(p, "keep-first", 0) ?? 0, keepLast: int(p, "keep-last", 0) ?? 0 },
    iterative: flag(p, "iterative"),
  };
}

/** Runs the chosen metrics on the calibration data with a progress bar. */
export function metricsWithProgress(
  opened: OpenedModel, data: TokenizedData, windows: WindowChoice, choice: MetricChoice, backend: DecoderBackend, skip?: ReadonlySet<number>,
): Promise<MetricsRun> {
  return metricsOnWindows(opened, calibrationWindows(data, windows), choice, backend, skip);
}

/** Runs the chosen metrics on windows already cut (a shard's share of them) with a progress bar. */
export async function metricsOnWindows(
  opened: OpenedModel, calibration: CalibrationWindows, choice: MetricChoice, backend: DecoderBackend, skip?: ReadonlySet<number>,
): Promise<MetricsRun> {
  const progress = new Progress("scoring", "token-layers");
  const options: MetricsOptions = {
    backend, tokens: choice.tokens, seed: choice.seed, onProgress: progress.callback,
    ...(choice.block === undefined ? {} : { block: choice.block }),
    ...(skip ? { skip } : {}),
  };
  try {
    return await computeMetrics(opened, calibration, choice.metrics, options);
  } finally {
    progress.done();
  }
}

/** One metric's scores as a bar chart, the removed layers marked. */
export function metricChart(result: MetricScores, removed: readonly number[] = []): string {
  const label = (layer: number): string => (result.block === 1 ? `layer ${layer}` : `layers ${layer}-${layer + result.block - 1}`);
  return `${result.metric}${result.block > 1 ? ` (blocks of ${result.block})` : ""}\n` + barChart(result.scores.map((s) => ({
    label: label(s.layer), value: s.score, ...((result.block === 1 ? removed.includes(s.layer) : removed[0] === s.layer) ? { mark: "<- remove" } : {}),
  })));
}

export const METRICS_HELP = `metrics: ${METRIC_NAMES.join(", ")}`;

// The report's charts as Vega-Lite specs: scores per layer with the removed layers marked,
// every metric per layer, the overlap of chosen sets, bootstrap intervals, and quality against
// layers removed.

import type { VegaLiteSpec } from "./render.js";

const SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";
const REMOVED_COLOR = { domain: ["removed", "kept"], range: ["#d95f02", "#7570b3"] };

/** One metric's score per layer (or per block start), removed layers in another color. */
export function layerScoresChart(metric: string, scores: readonly { layer: number; score: number }[], removed: readonly number[]): VegaLiteSpec {
  return {
    $schema: SCHEMA, title: `${metric} per layer`, width: Math.max(240, 22 * scores.length), height: 200,
    data: { values: scores.map((s) => ({ layer: s.layer, score: s.score, status: removed.includes(s.layer) ? "removed" : "kept" })) },
    mark: "bar",
    encoding: {
      x: { field: "layer", type: "ordinal", title: "layer" },
      y: { field: "score", type: "quantitative", title: metric },
      color: { field: "status", type: "nominal", scale: REMOVED_COLOR, title: null },
      tooltip: [{ field: "layer" }, { field: "score", format: ".5f" }],
    },
  };
}

/** Every metric per layer, one panel each (their scales differ). */
export function metricsPerLayerChart(results: readonly { metric: string; scores: readonly { layer: number; score: number }[] }[], chosen: ReadonlyMap<string, readonly number[]>): VegaLiteSpec {
  return {
    $schema: SCHEMA, title: "Each metric per layer (removed layers marked)",
    data: { values: results.flatMap((r) => r.scores.map((s) => ({ metric: r.metric, layer: s.layer, score: s.score, status: chosen.get(r.metric)?.includes(s.layer) ? "removed" : "kept" }))) },
    facet: { row: { field: "metric", type: "nominal", title: null } },
    spec: {
      width: 320, height: 90, mark: "bar",
      encoding: {
        x: { field: "layer", type: "ordinal" },
        y: { field: "score", type: "quantitative", title: null },
        color: { field: "status", type: "nominal", scale: REMOVED_COLOR, title: null },
      },
    },
    resolve: { scale: { y: "independent" } },
  };
}

/** Which layers each metric removes: a metric x layer grid. */
export function overlapChart(chosen: readonly { metric: string; layers: readonly number[] }[], nLayers: number): VegaLiteSpec {
  return {
    $schema: SCHEMA, title: "Layers each metric removes", width: Math.max(240, 18 * nLayers), height: 24 * chosen.length,
    data: { values: chosen.flatMap((c) => Array.from({ length: nLayers }, (_, layer) => ({ metric: c.metric, layer, status: c.layers.includes(layer) ? "removed" : "kept" }))) },
    mark: { type: "rect", stroke: "white" },
    encoding: {
      x: { field: "layer", type: "ordinal" },
      y: { field: "metric", type: "nominal", title: null },
      color: { field: "status", type: "nominal", scale: REMOVED_COLOR, title: null },
    },
  };
}

/** Bootstrap 95% intervals of one metric per layer. */
export function intervalsChart(metric: string, layers: readonly { layer: number; score: number; low: number; high: number }[]): VegaLiteSpec {
  return {
    $schema: SCHEMA, title: `${metric}: 95% bootstrap intervals`, width: Math.max(240, 22 * layers.length), height: 180,
    data: { values: layers.map((l) => ({ ...l })) },
    layer: [
      { mark: "rule", encoding: { x: { field: "layer", type: "ordinal" }, y: { field: "low", type: "quantitative", title: metric, scale: { zero: false } }, y2: { field: "high" } } },
      { mark: { type: "point", filled: true }, encoding: { x: { field: "layer", type: "ordinal" }, y: { field: "score", type: "quantitative" } } },
    ],
  };
}

/** Quality against layers removed, one panel per evaluation. */
export function qualityCurveChart(rows: readonly { removed: number; evaluation: string; value: number }[]): VegaLiteSpec {
  return {
    $schema: SCHEMA, title: "Quality against layers removed",
    data: { values: rows.map((r) => ({ ...r })) },
    facet: { column: { field: "evaluation", type: "nominal", title: null } },
    spec: {
      width: 220, height: 180, mark: { type: "line", point: true },
      encoding: { x: { field: "removed", type: "quantitative", title: "layers removed" }, y: { field: "value", type: "quantitative", title: null, scale: { zero: false } } },
    },
    resolve: { scale: { y: "independent" } },
  };
}

/** A bar per task (or text), one value each. */
export function valuesChart(title: string, rows: readonly { name: string; value: number }[]): VegaLiteSpec {
  return {
    $schema: SCHEMA, title, width: Math.max(200, 40 * rows.length), height: 180,
    data: { values: rows.map((r) => ({ ...r })) },
    mark: "bar",
    encoding: { x: { field: "name", type: "nominal", title: null }, y: { field: "value", type: "quantitative", title: null } },
  };
}

// The study report's chart: quality against size for every cell of the pruning x quantization
// grid, one panel per evaluation, original and pruned models in two colors, each point labelled
// with its quantization.

import type { VegaLiteSpec } from "./render.js";

const SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json";
const MODEL_COLOR = { domain: ["original", "pruned"], range: ["#7570b3", "#d95f02"] };

export function qualitySizeChart(points: readonly { model: "original" | "pruned"; quant: string; megabytes: number; evaluation: string; value: number }[]): VegaLiteSpec {
  const x = { field: "megabytes", type: "quantitative", title: "tensor MB", scale: { zero: false } } as const;
  const y = { field: "value", type: "quantitative", title: null, scale: { zero: false } } as const;
  return {
    $schema: SCHEMA, title: "Quality against size: pruning x quantization",
    data: { values: points.map((p) => ({ ...p })) },
    facet: { column: { field: "evaluation", type: "nominal", title: null } },
    spec: {
      width: 220, height: 200,
      layer: [
        { mark: { type: "point", filled: true, size: 60 }, encoding: { x, y, color: { field: "model", type: "nominal", scale: MODEL_COLOR, title: null }, tooltip: [{ field: "model" }, { field: "quant" }, { field: "megabytes", format: ".3f" }, { field: "value", format: ".4f" }] } },
        { mark: { type: "text", dx: 6, align: "left", fontSize: 9 }, encoding: { x, y, text: { field: "quant" }, color: { field: "model", type: "nominal", scale: MODEL_COLOR, title: null } } },
      ],
    },
    resolve: { scale: { y: "independent" } },
  };
}

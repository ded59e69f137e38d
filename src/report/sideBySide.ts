// The paper's cross-architecture figure: Block Influence per layer of several models side by side
// (a Transformer beside a recurrent model such as RWKV or Mamba), from their score results.

import { CheckpointError } from "../errors.js";
import type { ReportPage, ReportSection } from "./page.js";
import type { VegaLiteSpec } from "./render.js";

/** One model's Block Influence per layer, as `shortgpt score --metric bi --json` writes it. */
export interface ModelBlockInfluence {
  /** The model as the score run named it (its path or Hub id). */
  model: string;
  layers: { layer: number; bi: number }[];
}

/** The Block Influence part of a score JSON (its top-level model and layers fields); `source` names the file in errors. */
export function blockInfluenceOfScoreJson(json: unknown, source: string): ModelBlockInfluence {
  const o = (json ?? {}) as { model?: unknown; metric?: unknown; layers?: unknown };
  const layers = Array.isArray(o.layers) ? o.layers : undefined;
  const valid = typeof o.model === "string" && o.metric === "bi" && layers !== undefined && layers.length > 0
    && layers.every((l: unknown) => typeof (l as { layer?: unknown }).layer === "number" && typeof (l as { bi?: unknown }).bi === "number");
  if (!valid) {
    throw new CheckpointError(`${source} is not a score result with Block Influence (model, metric "bi" and layers with layer and bi)`, {
      file: source, hint: "write one with shortgpt score MODEL --data FILE --metric bi --json FILE",
    });
  }
  return { model: o.model as string, layers: (layers as { layer: number; bi: number }[]).map((l) => ({ layer: l.layer, bi: l.bi })) };
}

/** One panel per model, BI against layer (models of different depths keep their own x axis). */
export function sideBySideBlockInfluenceChart(models: readonly ModelBlockInfluence[]): VegaLiteSpec {
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: "Block Influence per layer",
    data: { values: models.flatMap((m) => m.layers.map((l) => ({ model: m.model, layer: l.layer, bi: l.bi }))) },
    facet: { column: { field: "model", type: "nominal", title: null, sort: models.map((m) => m.model) } },
    spec: {
      width: 260, height: 180, mark: "bar",
      encoding: {
        x: { field: "layer", type: "ordinal", title: "layer" },
        y: { field: "bi", type: "quantitative", title: "BI" },
        tooltip: [{ field: "model" }, { field: "layer" }, { field: "bi", format: ".5f" }],
      },
    },
    resolve: { scale: { x: "independent", y: "independent" } },
  };
}

/** The page: the side-by-side chart, then each model's scores, least influential first. */
export function sideBySidePage(models: readonly ModelBlockInfluence[], provenance: ReportPage["provenance"]): ReportPage {
  const sections: ReportSection[] = [{
    title: "Block Influence per layer, side by side",
    text: "BI = 1 - mean cos(stream entering the layer, stream leaving it); a low bar is a layer that barely changes the residual stream. The paper finds the same redundancy in non-Transformer models.",
    chart: { name: "bi-side-by-side", spec: sideBySideBlockInfluenceChart(models) },
  }];
  for (const m of models) {
    const ranking = [...m.layers].sort((a, b) => a.bi - b.bi || a.layer - b.layer).map((l) => l.layer);
    sections.push({
      title: m.model,
      text: `least influential first: ${ranking.join(", ")}`,
      table: { header: ["layer", "BI"], rows: m.layers.map((l) => [l.layer, l.bi.toFixed(5)]) },
    });
  }
  return { title: `Block Influence of ${models.map((m) => m.model).join(" and ")}`, sections, provenance };
}

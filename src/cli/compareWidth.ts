// compare --width: the width baselines beside the depth rows (RQ3, depth vs width at equal
// parameters). FFN-channel pruning and SliceGPT, each sized to the parameters of the K layers the
// depth rows remove, are built in memory from one calibration pass over the --data windows and
// evaluated like the depth rows (the same numbers as their written directories, tests prove it).

import type { DecoderBackend } from "../backend/backend.js";
import type { OpenedModel } from "../load.js";
import type { TokenizedData, WindowChoice } from "../pipeline.js";
import { widthOpenedModel } from "../prune/widthModel.js";
import { valuesChart } from "../report/charts.js";
import type { ReportSection } from "../report/page.js";
import { WIDTH_METHODS, depthParameterCounts, widthPrune, widthStatsOf } from "../widthPipeline.js";
import { type EvalSettings, type EvalSpec, type EvalValue, runEvals } from "./evalSpecs.js";
import { Progress } from "./progress.js";

export interface WidthRow {
  method: string;
  parameters: number;
  detail: Record<string, unknown>;
  evals: EvalValue[];
}

export interface WidthComparison {
  /** Parameters of the full model and of the model without K layers. */
  parameters: { full: number; depth: number };
  rows: WidthRow[];
}

export async function compareWidth(
  opened: OpenedModel, data: TokenizedData, windows: WindowChoice, k: number, evals: readonly EvalSpec[], texts: Map<string, TokenizedData>, settings: EvalSettings, backend: DecoderBackend,
): Promise<WidthComparison> {
  const progress = new Progress("width calibration", "token-layers");
  let stats;
  try {
    stats = await widthStatsOf(opened, data, windows, backend, progress.callback);
  } finally {
    progress.done();
  }
  const rows: WidthRow[] = [];
  for (const method of WIDTH_METHODS) {
    const model = widthPrune(opened, stats, method, { matchLayers: k });
    const { removedChannels: _r, ...detail } = model.detail; // per-channel lists belong to `shortgpt width`'s record, not the table
    const label = method === "slicegpt" ? `slicegpt (hidden ${model.config.dim})` : `ffn-channels (ffn ${model.config.hiddenDim})`;
    rows.push({ method: label, parameters: model.parameters, detail, evals: await runEvals(widthOpenedModel(opened, model), evals, texts, windows, settings, backend, new Set(), label) });
  }
  return { parameters: depthParameterCounts(opened, k), rows };
}

/** One bar chart per evaluation: every depth row and width row, with its parameter count in the label. */
export function depthVsWidthSections(rows: readonly { label: string; parameters: number; evals: readonly EvalValue[] }[]): ReportSection[] {
  const names = rows[0]?.evals.map((e) => e.name) ?? [];
  return names.map((name, i) => ({
    title: `Depth vs width at equal parameters: ${name}`,
    chart: {
      name: `depth-vs-width-${i}`,
      spec: valuesChart(`${name} (${rows[0]!.evals[i]!.metric})`, rows.map((r) => ({ name: `${r.label} [${r.parameters}]`, value: r.evals[i]!.value }))),
    },
  }));
}

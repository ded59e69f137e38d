// shortgpt compare MODEL --data CALIB --metrics a,b,... --remove K --eval ppl:FILE[,ppl:FILE2]:
// prune by each metric, evaluate each pruned model, and print one table like the paper's metric
// ablation, with the overlap of the chosen layer sets. The pruned models are evaluated by
// skipping their layers, which gives exactly the numbers of the written files (tests prove it).

import { OptionError } from "../../errors.js";
import type { MetricScores } from "../../metrics/layerMetrics.js";
import { checkSelection, selectLayers } from "../../prune/select.js";
import { DATA_OPTIONS, EVAL_OPTIONS, evalSettingsFromArgs, flag, int, MODEL_OPTIONS, onePositional, parse, split, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, windowsFromArgs, modelPathFromArgs } from "../common.js";
import { table } from "../format.js";
import { metricChart, metricsFromArgs, metricsWithProgress, selectionFromArgs } from "../metricOptions.js";
import { evalCells, evalColumns, type EvalValue, parseEvalSpecs, readEvalTexts, runEvals } from "../evalSpecs.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { metricsPerLayerChart, overlapChart } from "../../report/charts.js";
import { compareWidth, depthVsWidthSections, type WidthComparison } from "../compareWidth.js";
import { checkWidthMatch } from "../../widthPipeline.js";
import { scoringWindows } from "../../data/windows.js";
import { HEAL_OPTIONS, healChoiceFromArgs, healedVariant } from "../healOptions.js";

const usage = "shortgpt compare MODEL --data CALIB --metrics bi,angular,relative-magnitude,ppl,reverse-order --remove K --eval ppl:FILE,mmlu,... [--data-dir DIR] [--shots K] [--limit N] [--bos|--no-bos] "
  + "[--select top-k|contiguous] [--keep-first N] [--keep-last N] [--tokens last|all] [--seed S] [--width] [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] "
  + "[--backend B] [--threads N] [--precision bf16|fp32] [--heal none|linear [--heal-ridge R|auto]] [--json FILE]";

function jaccard(a: readonly number[], b: readonly number[]): number {
  const union = new Set([...a, ...b]).size;
  return union === 0 ? 1 : a.filter((x) => b.includes(x)).length / union;
}

export const compareCommand: Command = {
  name: "compare",
  usage,
  summary: "prune by several metrics and evaluate each: the metric ablation table on your model",
  async run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, metrics: { type: "string" }, remove: { type: "string" },
      select: { type: "string" }, "keep-first": { type: "string" }, "keep-last": { type: "string" }, tokens: { type: "string" }, seed: { type: "string" }, width: { type: "boolean" },
      ...EVAL_OPTIONS, ...HEAL_OPTIONS, ...REPORT_OPTIONS,
    }, usage);
    const heal = healChoiceFromArgs(p);
    checkReportOption(p);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const evalText = str(p, "eval");
    if (evalText === undefined) throw new OptionError("missing --eval ppl:FILE,task,...", { option: "--eval", hint: `usage: ${usage}` });
    const settings = evalSettingsFromArgs(p);
    const evals = parseEvalSpecs(evalText, settings);
    const choice = metricsFromArgs({ ...p, values: { ...p.values, metric: str(p, "metrics") ?? "bi,angular,relative-magnitude,ppl,reverse-order" } });
    const selection = selectionFromArgs(p);
    const opened = openFromArgs(p, path);
    try {
      const nLayers = opened.config.nLayers;
      const k = int(p, "remove", 1, nLayers - 1);
      if (k === undefined) throw new OptionError("missing --remove K", { option: "--remove", hint: `usage: ${usage}` });
      checkSelection(k, nLayers, selection.protection);
      if (flag(p, "width")) checkWidthMatch(opened, k, "--remove");
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const texts = readEvalTexts(opened, evals, split(p));
      const backend = await backendFromArgs(p, opened);
      try {
        // Angular scores blocks of K (Gromov et al.); the other metrics score single layers.
        const perLayer = choice.metrics.filter((m) => m !== "angular");
        const runs: MetricScores[] = [];
        if (perLayer.length > 0) runs.push(...(await metricsWithProgress(opened, data, windows, { ...choice, metrics: perLayer }, backend)).results);
        if (choice.metrics.includes("angular")) runs.push(...(await metricsWithProgress(opened, data, windows, { ...choice, metrics: ["angular"], block: k }, backend)).results);
        const chosen = runs.map((r) => ({ metric: r.metric, layers: selectLayers(selection.strategy, r, k, nLayers, selection.protection) }));
        const variants = [{ metric: "none (full model)", layers: [] as number[] }, ...chosen];
        const results: { metric: string; removed: number[]; evals: EvalValue[]; heal?: unknown }[] = [];
        // --heal linear: each metric's pruned model also healed (fitted on the calibration windows), on the row after it.
        const fitWindows = heal.method === "linear" ? scoringWindows(data.documents, windows) : [];
        for (const v of variants) {
          results.push({ metric: v.metric, removed: v.layers, evals: await runEvals(opened, evals, texts, windows, settings, backend, new Set(v.layers), v.metric) });
          if (heal.method !== "linear" || v.layers.length === 0) continue;
          const variant = await healedVariant(opened, v.layers, fitWindows, backend, heal, v.metric);
          if ("skipped" in variant) results.push({ metric: `${v.metric} + heal linear`, removed: v.layers, evals: [], heal: variant });
          else results.push({ metric: `${v.metric} + heal linear`, removed: v.layers, evals: await runEvals(variant.model, evals, texts, windows, settings, backend, new Set(v.layers), `${v.metric} healed`), heal: variant.record });
        }
        // --width: FFN-channel and SliceGPT rows at the parameters of K layers (RQ3).
        const width: WidthComparison | undefined = flag(p, "width") ? await compareWidth(opened, data, windows, k, evals, texts, settings, backend) : undefined;
        const overlap = chosen.flatMap((a, i) => chosen.slice(i + 1).map((b) => ({ a: a.metric, b: b.metric, jaccard: jaccard(a.layers, b.layers) })));
        const json = {
          model: path, remove: k, select: selection.strategy, protection: selection.protection,
          data: { path: data.path, sha256: data.sha256 }, evals: evals.map((e) => e.name), texts: [...texts.values()].map((d) => ({ path: d.path, sha256: d.sha256 })), evalSettings: settings,
          options: { ...windows, ...choice }, backend: { name: backend.name, threads: backend.threads },
          metrics: runs, results, overlap,
          ...(width ? { parameters: width.parameters, width: width.rows } : {}),
        };
        const parametersOf = (removed: readonly number[]): number[] => (width ? [removed.length === 0 ? width.parameters.full : width.parameters.depth] : []);
        const qualityHeader = ["pruned by", "removed layers", ...(width ? ["parameters"] : []), ...evalColumns(evals)];
        const qualityRows = [
          ...results.map((r) => [r.metric, r.removed.join(",") || "-", ...parametersOf(r.removed), ...(r.evals.length > 0 ? evalCells(r.evals) : evals.map(() => "-"))]),
          ...(width?.rows ?? []).map((r) => [r.method, "- (width)", r.parameters, ...evalCells(r.evals)]),
        ];
        const barRows = [
          ...results.filter((r) => r.evals.length > 0).map((r) => ({ label: r.metric, parameters: parametersOf(r.removed)[0] ?? 0, evals: r.evals })),
          ...(width?.rows ?? []).map((r) => ({ label: r.method, parameters: r.parameters, evals: r.evals })),
        ];
        const text = [
          ...runs.map((r) => metricChart(r, chosen.find((c) => c.metric === r.metric)!.layers)),
          table(qualityHeader, qualityRows),
          overlap.length > 0 ? `overlap of the removed sets (Jaccard): ${overlap.map((o) => `${o.a}/${o.b} ${o.jaccard.toFixed(2)}`).join(", ")}` : "",
        ].join("\n\n");
        const perLayerResults = runs.filter((r) => r.block === 1);
        const report = await writeReportIfAsked(p, () => ({
          title: `Metric comparison on ${path}: removing ${k} layers`,
          sections: [
            { title: "Each metric per layer", chart: { name: "metrics", spec: metricsPerLayerChart(perLayerResults, new Map(chosen.map((c) => [c.metric, c.layers]))) } },
            { title: "Overlap of the removed sets", chart: { name: "overlap", spec: overlapChart(chosen, nLayers) }, table: { header: ["metric", "metric", "Jaccard"], rows: overlap.map((o) => [o.a, o.b, o.jaccard.toFixed(2)]) } },
            { title: "Quality after pruning by each metric", table: { header: qualityHeader, rows: qualityRows } },
            ...(width ? depthVsWidthSections(barRows) : []),
          ],
          provenance: provenance("compare", { model: path, data: data.path, "data sha256": data.sha256, options: JSON.stringify({ ...windows, ...choice }), backend: backend.name }),
        }), json);
        return { json, text: text + report };
      } finally {
        await backend.dispose();
      }
    } finally {
      opened.close();
    }
  },
};

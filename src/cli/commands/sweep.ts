// shortgpt sweep MODEL --data CALIB [--metric bi] --max-remove K --eval ppl:FILE,mmlu,...:
// for k = 0..K remove the k layers the metric chooses and evaluate: quality against layers
// removed and parameters kept (the paper's main figure, on the user's model). Each pruned
// model is evaluated by skipping its layers, which gives exactly the written file's numbers.

import { OptionError } from "../../errors.js";
import type { MetricScores } from "../../metrics/layerMetrics.js";
import { checkSelection, ITERATIVE_METRICS, selectIteratively, selectLayers } from "../../prune/select.js";
import { DATA_OPTIONS, EVAL_OPTIONS, evalSettingsFromArgs, int, MODEL_OPTIONS, onePositional, parse, split, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, windowsFromArgs, modelPathFromArgs } from "../common.js";
import { evalCells, evalColumns, type EvalValue, parseEvalSpecs, readEvalTexts, runEvals } from "../evalSpecs.js";
import { table } from "../format.js";
import { METRIC_OPTIONS, metricChart, metricsFromArgs, metricsWithProgress, SELECTION_OPTIONS, selectionFromArgs } from "../metricOptions.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { layerScoresChart, qualityCurveChart } from "../../report/charts.js";
import type { ReportSection } from "../../report/page.js";
import { scoringWindows } from "../../data/windows.js";
import { HEAL_OPTIONS, healChoiceFromArgs, healedVariant } from "../healOptions.js";
import type { HealRecord } from "../../heal/healLinear.js";

const usage = "shortgpt sweep MODEL --data CALIB --max-remove K --eval ppl:FILE,mmlu,... [--metric bi] [--select top-k|contiguous] [--keep-first N] [--keep-last N] [--iterative] "
  + "[--data-dir DIR] [--shots K] [--limit N] [--bos|--no-bos] [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--backend B] [--threads N] [--precision bf16|fp32] [--heal none|linear [--heal-ridge R|auto]] [--json FILE]";

export const sweepCommand: Command = {
  name: "sweep",
  usage,
  summary: "quality against layers removed: remove 0..K layers by a metric and evaluate each",
  async run(argv) {
    const p = parse(argv, { ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, ...METRIC_OPTIONS, ...SELECTION_OPTIONS, ...EVAL_OPTIONS, "max-remove": { type: "string" }, ...HEAL_OPTIONS, ...REPORT_OPTIONS }, usage);
    const heal = healChoiceFromArgs(p);
    checkReportOption(p);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const evalText = str(p, "eval");
    if (evalText === undefined) throw new OptionError("missing --eval ppl:FILE,task,...", { option: "--eval", hint: `usage: ${usage}` });
    const settings = evalSettingsFromArgs(p);
    const evals = parseEvalSpecs(evalText, settings);
    const choice = metricsFromArgs(p);
    if (choice.metrics.length !== 1) throw new OptionError("sweep takes one --metric", { option: "--metric", hint: "use shortgpt compare to set metrics side by side" });
    const metric = choice.metrics[0]!;
    const selection = selectionFromArgs(p);
    const opened = openFromArgs(p, path);
    try {
      const nLayers = opened.config.nLayers;
      const maxRemove = int(p, "max-remove", 1, nLayers - 1);
      if (maxRemove === undefined) throw new OptionError("missing --max-remove K", { option: "--max-remove", hint: `usage: ${usage}` });
      checkSelection(maxRemove, nLayers, selection.protection);
      if (selection.iterative && !ITERATIVE_METRICS.includes(metric)) throw new OptionError(`--iterative works with ${ITERATIVE_METRICS.join(" and ")}, not ${metric}`, { option: "--iterative" });
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const texts = readEvalTexts(opened, evals, split(p));
      const backend = await backendFromArgs(p, opened);
      try {
        // The removal set for each k: nested prefixes when iterative, else chosen from the scores
        // (angular rescored for blocks of k, since it scores the block being removed).
        const sets: number[][] = [[]];
        let chart = "";
        let scores: MetricScores | undefined;
        if (selection.iterative) {
          const score = async (skip: ReadonlySet<number>): Promise<MetricScores> => (await metricsWithProgress(opened, data, windows, choice, backend, skip)).results[0]!;
          const { steps } = await selectIteratively(score, metric, maxRemove, nLayers, selection.protection);
          steps.forEach((_, k) => sets.push(steps.slice(0, k + 1).map((s) => s.removed).sort((a, b) => a - b)));
          scores = steps[0]!.scores;
        } else {
          for (let k = 1; k <= maxRemove; k++) {
            if (scores === undefined || metric === "angular") scores = (await metricsWithProgress(opened, data, windows, metric === "angular" ? { ...choice, block: k } : choice, backend)).results[0]!;
            sets.push(selectLayers(selection.strategy, scores, k, nLayers, selection.protection));
          }
        }
        if (scores && metric !== "angular") chart = metricChart(scores) + "\n\n";
        const entries = opened.provider.entries().filter((e) => !opened.names.ignored.has(e.name));
        const total = entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
        const perLayer = entries.filter((e) => Object.values(opened.names.layer(0)).includes(e.name)).reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0);
        type Healed = { evals: EvalValue[]; heal: HealRecord } | { skipped: string };
        const rows: { removed: number; layers: number[]; parametersKept: number; evals: EvalValue[]; healed?: Healed }[] = [];
        // --heal linear: each removal set is also healed (fitted on the calibration windows) and evaluated beside plain.
        const fitWindows = heal.method === "linear" ? scoringWindows(data.documents, windows) : [];
        for (const layers of sets) {
          const skip = new Set(layers);
          const row: (typeof rows)[number] = { removed: layers.length, layers, parametersKept: (total - layers.length * perLayer) / total, evals: await runEvals(opened, evals, texts, windows, settings, backend, skip, `k=${layers.length}`) };
          if (heal.method === "linear" && layers.length > 0) {
            const variant = await healedVariant(opened, layers, fitWindows, backend, heal, `k=${layers.length}`);
            row.healed = "skipped" in variant ? variant : { evals: await runEvals(variant.model, evals, texts, windows, settings, backend, skip, `k=${layers.length} healed`), heal: variant.record };
          }
          rows.push(row);
        }
        const json = {
          model: path, metric, select: selection.iterative ? "iterative" : selection.strategy, protection: selection.protection, maxRemove,
          data: { path: data.path, sha256: data.sha256 }, evals: evals.map((e) => e.name), evalSettings: settings, options: { ...windows, ...choice },
          backend: { name: backend.name, threads: backend.threads }, heal: heal.method, parameters: total, parametersPerLayer: perLayer, rows,
          ...(scores ? { scores } : {}),
        };
        const healing = heal.method === "linear";
        const healedCells = (r: (typeof rows)[number]): string[] => (!healing ? [] : r.healed && "evals" in r.healed ? evalCells(r.healed.evals) : evals.map(() => "-"));
        const header = ["removed", "layers", "params kept", ...evalColumns(evals), ...(healing ? evalColumns(evals).map((c) => `${c} healed`) : [])];
        const tableRows = rows.map((r) => [r.removed, r.layers.join(",") || "-", `${(r.parametersKept * 100).toFixed(1)}%`, ...evalCells(r.evals), ...healedCells(r)]);
        const text = chart + table(header, tableRows);
        const sections: ReportSection[] = [
          { title: "Quality against layers removed", text: "perplexity for text files (lower is better), accuracy for tasks", chart: { name: "quality", spec: qualityCurveChart(rows.flatMap((r) => [
            ...r.evals.map((e) => ({ removed: r.removed, evaluation: e.metric === "acc" ? `${e.name} acc` : e.name, value: e.value })),
            ...(r.healed && "evals" in r.healed ? r.healed.evals.map((e) => ({ removed: r.removed, evaluation: `${e.metric === "acc" ? `${e.name} acc` : e.name} healed`, value: e.value })) : []),
          ])) }, table: { header, rows: tableRows } },
        ];
        if (healing) sections.push({ title: "Healing gain per k", text: "healed minus plain (perplexity: lower is better; accuracy: higher is better)", table: healingGainTable(rows) });
        if (scores && metric !== "angular") sections.unshift({ title: `${metric} per layer`, text: `marked: the ${maxRemove} layers removed at the last step`, chart: { name: `scores-${metric}`, spec: layerScoresChart(metric, scores.scores, sets[sets.length - 1]!) } });
        const report = await writeReportIfAsked(p, () => ({
          title: `Sweep of ${path}: removing up to ${maxRemove} layers by ${metric}`, sections,
          provenance: provenance("sweep", { model: path, data: data.path, "data sha256": data.sha256, options: JSON.stringify({ ...windows, ...choice }), backend: backend.name }),
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

/** Per k and evaluation: plain, healed, and the difference. */
function healingGainTable(rows: readonly { removed: number; evals: EvalValue[]; healed?: { evals: EvalValue[] } | { skipped: string } }[]): { header: string[]; rows: (string | number)[][] } {
  const out: (string | number)[][] = [];
  for (const r of rows) {
    if (!r.healed) continue;
    const healed = r.healed;
    r.evals.forEach((e, i) => {
      const h = "evals" in healed ? healed.evals[i]! : undefined;
      const digits = e.metric === "acc" ? 4 : 3;
      out.push([r.removed, e.metric === "acc" ? `${e.name} acc` : e.name, e.value.toFixed(digits), h ? h.value.toFixed(digits) : "-", h ? (h.value - e.value).toFixed(digits) : "skipped" in healed ? healed.skipped : "-"]);
    });
  }
  return { header: ["removed", "evaluation", "plain", "healed", "gain"], rows: out };
}

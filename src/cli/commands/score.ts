// shortgpt score MODEL --data FILE [--metric bi,...]: layer importance on calibration text, by
// Block Influence (ShortGPT Eq. 1, the default) or the other metrics the literature compares,
// optionally with bootstrap intervals over the calibration windows.

import { bootstrap, type BootstrapResult, rankCorrelations } from "../../metrics/bootstrap.js";
import type { MetricScores } from "../../metrics/layerMetrics.js";
import { selectLayers } from "../../prune/select.js";
import { DATA_OPTIONS, int, MODEL_OPTIONS, onePositional, parse } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, windowsFromArgs, modelPathFromArgs } from "../common.js";
import { table } from "../format.js";
import { METRIC_OPTIONS, metricChart, metricsFromArgs, metricsWithProgress, SELECTION_OPTIONS, selectionFromArgs } from "../metricOptions.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { intervalsChart, layerScoresChart } from "../../report/charts.js";
import type { ReportSection } from "../../report/page.js";

const usage = "shortgpt score MODEL --data FILE [--metric bi,bi-angular,angular,relative-magnitude,ppl,reverse-order,random] [--block N] [--tokens last|all] [--seed S] "
  + "[--bootstrap R [--remove K] [--select top-k|contiguous] [--keep-first N] [--keep-last N]] [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] "
  + "[--backend auto|onnx|wasm|reference] [--threads N] [--json FILE]";

function bootstrapTable(result: BootstrapResult): string {
  return result.metrics.map((m) => `${m.metric} (${result.resamples} resamples, ${result.confidence * 100}% intervals, seed ${result.seed})\n` + table(
    [m.block === 1 ? "layer" : "block start", "score", "low", "high", ...(m.layers[0]?.removedFrequency === undefined ? [] : ["removed"])],
    m.layers.map((l) => [l.layer, l.score.toFixed(5), l.low.toFixed(5), l.high.toFixed(5), ...(l.removedFrequency === undefined ? [] : [`${(l.removedFrequency * 100).toFixed(0)}%`])]),
  )).join("\n\n");
}

export const scoreCommand: Command = {
  name: "score",
  usage,
  summary: "layer importance on calibration text: Block Influence and the metrics it is compared with",
  async run(argv) {
    const p = parse(argv, { ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, ...METRIC_OPTIONS, ...SELECTION_OPTIONS, bootstrap: { type: "string" }, remove: { type: "string" }, ...REPORT_OPTIONS }, usage);
    checkReportOption(p);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const choice = metricsFromArgs(p);
    const selection = selectionFromArgs(p);
    const resamples = int(p, "bootstrap", 1, 100_000);
    const opened = openFromArgs(p, path);
    try {
      const remove = int(p, "remove", 1, opened.config.nLayers - 1);
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const backend = await backendFromArgs(p);
      const started = Date.now();
      const run = await metricsWithProgress(opened, data, windows, choice, backend).finally(() => backend.dispose());
      const nLayers = opened.config.nLayers;
      const boot = resamples === undefined ? undefined : bootstrap(run, {
        resamples, seed: choice.seed,
        ...(remove === undefined ? {} : { select: (scores: MetricScores) => selectLayers(selection.strategy, scores, remove, nLayers, selection.protection) }),
      });
      const seconds = (Date.now() - started) / 1000;
      const bi = run.results.find((r) => r.metric === "bi");
      const json = {
        // The Block Influence fields of earlier versions, when bi is among the metrics.
        ...(bi ? { metric: "bi", layers: bi.scores.map((s) => ({ layer: s.layer, bi: s.score, cosine: 1 - s.score })), ranking: bi.ranking } : {}),
        tokens: run.tokens,
        windows: run.windows.scoring,
        metrics: run.results,
        kendallTau: rankCorrelations(run.results),
        ...(boot ? { bootstrap: boot } : {}),
        model: path,
        data: { path: data.path, sha256: data.sha256, split: data.split },
        options: { ...windows, ...choice },
        backend: { name: backend.name, threads: backend.threads },
        seconds,
      };
      const text = [
        `Layer importance of ${path} on ${run.tokens} tokens (${run.windows.scoring} windows of <= ${windows.seqLen}, stride ${windows.stride}) in ${seconds.toFixed(1)} s on ${backend.name}`,
        ...run.results.map((r) => `${metricChart(r)}\nleast important first: ${r.ranking.join(", ")}`),
        ...(json.kendallTau.length > 0 ? [`Kendall's tau between rankings: ${json.kendallTau.map((t) => `${t.a}/${t.b} ${t.tau.toFixed(2)}`).join(", ")}`] : []),
        ...(boot ? [bootstrapTable(boot)] : []),
      ].join("\n\n");
      const removedBy = (r: MetricScores): number[] => (remove === undefined ? [] : selectLayers(selection.strategy, r, remove, nLayers, selection.protection));
      const sections: ReportSection[] = run.results.flatMap((r): ReportSection[] => [{
        title: `${r.metric}${r.block > 1 ? ` (blocks of ${r.block}; a bar is the block's first layer)` : ""}`,
        text: `least important first: ${r.ranking.join(", ")}${remove === undefined ? "" : `; removing ${remove} takes ${removedBy(r).join(", ")}`}`,
        chart: { name: `scores-${r.metric}`, spec: layerScoresChart(r.metric, r.scores, r.block > 1 ? removedBy(r).slice(0, 1) : removedBy(r)) },
      }]);
      for (const m of boot?.metrics ?? []) {
        sections.push({
          title: `${m.metric}: bootstrap over ${boot!.resamples} resamples of the windows`, chart: { name: `intervals-${m.metric}`, spec: intervalsChart(m.metric, m.layers) },
          table: { header: ["layer", "score", "low", "high", ...(remove === undefined ? [] : ["removed in"])], rows: m.layers.map((l) => [l.layer, l.score.toFixed(5), l.low.toFixed(5), l.high.toFixed(5), ...(l.removedFrequency === undefined ? [] : [`${(l.removedFrequency * 100).toFixed(0)}%`])]) },
        });
      }
      if (json.kendallTau.length > 0) sections.push({ title: "Kendall's tau between the metrics' rankings", table: { header: ["metric", "metric", "tau"], rows: json.kendallTau.map((t) => [t.a, t.b, t.tau.toFixed(3)]) } });
      const report = await writeReportIfAsked(p, () => ({
        title: `Layer importance of ${path}`, sections,
        provenance: provenance("score", { model: path, data: data.path, "data sha256": data.sha256, tokens: run.tokens, windows: run.windows.scoring, options: JSON.stringify({ ...windows, ...choice }), backend: backend.name }),
      }), json);
      return { json, text: text + report };
    } finally {
      opened.close();
    }
  },
};

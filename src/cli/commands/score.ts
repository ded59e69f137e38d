// shortgpt score MODEL --data FILE [--metric bi,...]: layer importance on calibration text, by
// Block Influence (ShortGPT Eq. 1, the default) or the other metrics the literature compares,
// optionally with bootstrap intervals over the calibration windows.

import { OptionError } from "../../errors.js";
import { bootstrap, type BootstrapResult, rankCorrelations } from "../../metrics/bootstrap.js";
import { type MetricScores, runningLayers } from "../../metrics/layerMetrics.js";
import { calibrationWindows } from "../../pipeline.js";
import { selectLayers } from "../../prune/select.js";
import { backendIdentity, modelIdentity } from "../../shards/identity.js";
import { PARTIAL_KIND, PARTIAL_VERSION, type PartialResult, scorePart } from "../../shards/partial.js";
import { checkShardNotEmpty, parseShard, type Shard, shardIndices } from "../../shards/shard.js";
import { DATA_OPTIONS, int, MODEL_OPTIONS, onePositional, parse, str } from "../args.js";
import type { DecoderBackend } from "../../backend/backend.js";
import type { OpenedModel } from "../../load.js";
import type { CalibrationWindows } from "../../metrics/layerMetrics.js";
import type { Command, CommandResult } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, modelPathFromArgs, openFromArgs, windowsFromArgs } from "../common.js";
import { table } from "../format.js";
import { type MetricChoice, METRIC_OPTIONS, metricChart, metricsFromArgs, metricsOnWindows, SELECTION_OPTIONS, selectionFromArgs } from "../metricOptions.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { intervalsChart, layerScoresChart } from "../../report/charts.js";
import type { ReportSection } from "../../report/page.js";

const usage = "shortgpt score MODEL --data FILE [--metric bi,bi-angular,angular,relative-magnitude,ppl,reverse-order,random] [--block N] [--tokens last|all] [--seed S] "
  + "[--bootstrap R [--remove K] [--select top-k|contiguous] [--keep-first N] [--keep-last N]] [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] "
  + "[--backend auto|cuda|onnx|wasm|reference] [--threads N] [--precision bf16|fp32] [--shard i/n] [--json FILE]";

function bootstrapTable(result: BootstrapResult): string {
  return result.metrics.map((m) => `${m.metric} (${result.resamples} resamples, ${result.confidence * 100}% intervals, seed ${result.seed})\n` + table(
    [m.block === 1 ? "layer" : "block start", "score", "low", "high", ...(m.layers[0]?.removedFrequency === undefined ? [] : ["removed"])],
    m.layers.map((l) => [l.layer, l.score.toFixed(5), l.low.toFixed(5), l.high.toFixed(5), ...(l.removedFrequency === undefined ? [] : [`${(l.removedFrequency * 100).toFixed(0)}%`])]),
  )).join("\n\n");
}

/** What the score JSON says besides the results: the same for a single run and for merged shards. */
export interface ScoreCommon {
  model: string;
  modelIdentity: string;
  data: { path: string; sha256: string; split: string };
  options: Record<string, unknown>;
  backend: { name: string; threads: number };
}

/** The score JSON, from a run or from merged shards. */
export function scoreJson(run: { results: MetricScores[]; tokens: number; windows: { scoring: number } }, common: ScoreCommon, seconds: number, boot?: BootstrapResult): Record<string, unknown> {
  const bi = run.results.find((r) => r.metric === "bi");
  return {
    // The Block Influence fields of earlier versions, when bi is among the metrics.
    ...(bi ? { metric: "bi", layers: bi.scores.map((s) => ({ layer: s.layer, bi: s.score, cosine: 1 - s.score })), ranking: bi.ranking } : {}),
    tokens: run.tokens,
    windows: run.windows.scoring,
    metrics: run.results,
    kendallTau: rankCorrelations(run.results),
    ...(boot ? { bootstrap: boot } : {}),
    ...common,
    seconds,
  };
}

/** The lines the terminal shows for a score run, single or merged. */
export function scoreText(run: { results: MetricScores[]; tokens: number; windows: { scoring: number } }, common: ScoreCommon, seconds: number, what = "in"): string {
  const o = common.options as { seqLen: number; stride: number };
  const tau = rankCorrelations(run.results);
  return [
    `Layer importance of ${common.model} on ${run.tokens} tokens (${run.windows.scoring} windows of <= ${o.seqLen}, stride ${o.stride}) ${what} ${seconds.toFixed(1)} s on ${common.backend.name}`,
    ...run.results.map((r) => `${metricChart(r)}\nleast important first: ${r.ranking.join(", ")}`),
    ...(tau.length > 0 ? [`Kendall's tau between rankings: ${tau.map((t) => `${t.a}/${t.b} ${t.tau.toFixed(2)}`).join(", ")}`] : []),
  ].join("\n\n");
}

export const scoreCommand: Command = {
  name: "score",
  usage,
  summary: "layer importance on calibration text: Block Influence and the metrics it is compared with",
  async run(argv) {
    const p = parse(argv, { ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, ...METRIC_OPTIONS, ...SELECTION_OPTIONS, bootstrap: { type: "string" }, remove: { type: "string" }, shard: { type: "string" }, ...REPORT_OPTIONS }, usage);
    checkReportOption(p);
    const named = onePositional(p, "MODEL", usage);
    const choice = metricsFromArgs(p);
    const selection = selectionFromArgs(p);
    const resamples = int(p, "bootstrap", 1, 100_000);
    const shardText = str(p, "shard");
    const shard = shardText === undefined ? undefined : parseShard(shardText);
    if (shard && (resamples !== undefined || str(p, "report") !== undefined)) {
      throw new OptionError(`--shard writes a partial result: --${resamples !== undefined ? "bootstrap" : "report"} belongs to the whole run`, { option: "--shard", hint: "merge the parts with shortgpt merge, then report on the merged JSON" });
    }
    // Every option is checked before a Hub model is downloaded.
    const path = await modelPathFromArgs(named);
    const opened = openFromArgs(p, path);
    try {
      const remove = int(p, "remove", 1, opened.config.nLayers - 1);
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const calibration = calibrationWindows(data, windows);
      if (shard) checkShard(calibration, choice, shard); // before a backend is started
      const backend = await backendFromArgs(p, opened);
      const common: ScoreCommon = {
        model: path, modelIdentity: modelIdentity(opened), data: { path: data.path, sha256: data.sha256, split: data.split }, options: { ...windows, ...choice }, backend: { name: backend.name, threads: backend.threads },
      };
      if (shard) return await scoreShard(opened, calibration, choice, backend, common, shard);
      const started = Date.now();
      const run = await metricsOnWindows(opened, calibration, choice, backend).finally(() => backend.dispose());
      const nLayers = opened.config.nLayers;
      const boot = resamples === undefined ? undefined : bootstrap(run, {
        resamples, seed: choice.seed,
        ...(remove === undefined ? {} : { select: (scores: MetricScores) => selectLayers(selection.strategy, scores, remove, nLayers, selection.protection) }),
      });
      const seconds = (Date.now() - started) / 1000;
      const json = scoreJson(run, common, seconds, boot);
      const kendallTau = rankCorrelations(run.results);
      const text = [scoreText(run, common, seconds), ...(boot ? [bootstrapTable(boot)] : [])].join("\n\n");
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
      if (kendallTau.length > 0) sections.push({ title: "Kendall's tau between the metrics' rankings", table: { header: ["metric", "metric", "tau"], rows: kendallTau.map((t) => [t.a, t.b, t.tau.toFixed(3)]) } });
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

function checkShard(calibration: CalibrationWindows, choice: MetricChoice, shard: Shard): void {
  checkShardNotEmpty(calibration.scoring.length, shard, "scoring windows");
  if (choice.metrics.includes("ppl")) checkShardNotEmpty(calibration.perplexity.length, shard, "perplexity windows");
}

/** One shard of the run: its share of the windows (round-robin), written as a partial with exact per-window sums. */
async function scoreShard(opened: OpenedModel, calibration: CalibrationWindows, choice: MetricChoice, backend: DecoderBackend, common: ScoreCommon, shard: Shard): Promise<CommandResult> {
  const scoringIds = shardIndices(calibration.scoring.length, shard);
  const perplexityIds = shardIndices(calibration.perplexity.length, shard);
  const mine: CalibrationWindows = { scoring: scoringIds.map((i) => calibration.scoring[i]!), perplexity: perplexityIds.map((i) => calibration.perplexity[i]!) };
  const started = Date.now();
  const run = await metricsOnWindows(opened, mine, choice, backend).finally(() => backend.dispose());
  const seconds = (Date.now() - started) / 1000;
  const { model: _path, data, options, backend: used } = common;
  const json: PartialResult = {
    kind: PARTIAL_KIND, version: PARTIAL_VERSION, command: "score", shard,
    run: { model: common.modelIdentity, data: { sha256: data.sha256, split: data.split }, options, backend: backendIdentity(backend) },
    common: { ...common }, seconds,
    score: scorePart(run, choice.metrics, runningLayers(opened.config.nLayers), choice.seed, { scoring: calibration.scoring.length, perplexity: calibration.perplexity.length },
      scoringIds, mine.scoring.map((w) => w.tokens.length), perplexityIds),
  };
  return {
    json,
    text: `shard ${shard.index}/${shard.count} of ${common.model}: ${run.windows.scoring} of ${calibration.scoring.length} scoring windows, ${run.tokens} tokens in ${seconds.toFixed(1)} s on ${used.name}; a partial result: merge the ${shard.count} parts with shortgpt merge`,
  };
}

// shortgpt prune MODEL --out PATH (--layers i,j | --remove K --data FILE): removes layers and
// writes the same format, plus PATH.json recording what was removed and why.

import { OptionError } from "../../errors.js";
import type { OpenedModel } from "../../load.js";
import { type MetricScores, parseMetricList } from "../../metrics/layerMetrics.js";
import { modelIdentity } from "../../shards/identity.js";
import { checkScoresFit, readScoresFile } from "../../shards/scoresFile.js";
import { checkRemovable, parseLayerList } from "../../prune/plan.js";
import { checkSelection, ITERATIVE_METRICS, selectIteratively, selectLayers } from "../../prune/select.js";
import { removeLayers } from "../../prune/removeLayers.js";
import { checkOutputPath, writeJsonAtomically } from "../../util/atomicWrite.js";
import { DATA_OPTIONS, MODEL_OPTIONS, flag, int, onePositional, parse, type Parsed, split, str } from "../args.js";
import { healRidgeFromArgs } from "../healOptions.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, windowsFromArgs, modelPathFromArgs } from "../common.js";
import { METRIC_OPTIONS, metricChart, metricsFromArgs, metricsWithProgress, SELECTION_OPTIONS, selectionFromArgs } from "../metricOptions.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { layerScoresChart } from "../../report/charts.js";
import type { ReportSection } from "../../report/page.js";
import { requireOneWindow, scoringWindows } from "../../data/windows.js";
import { tokenizeFile } from "../../pipeline.js";
import { fitLinearHeal, type HealRecord, parseHealMethod } from "../../heal/healLinear.js";
import { Progress } from "../progress.js";

const usage = "shortgpt prune MODEL --out PATH (--layers i,j,... | --remove K --from-scores SCORE.json [--metric m] [--select ...] [--keep-first N] [--keep-last N] | --remove K --data FILE [--metric bi|bi-angular|angular|relative-magnitude|ppl|reverse-order|random] "
  + "[--select top-k|contiguous] [--keep-first N] [--keep-last N] [--iterative] [--block N] [--tokens last|all] [--seed S] "
  + "[--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--backend B] [--threads N] [--precision bf16|fp32]) [--heal none|linear [--heal-data FILE] [--heal-ridge R|auto]] [--force] [--json FILE]";

/** The fitted healing maps of the chosen layers, on --heal-data (default --data), or nothing with --heal none. */
async function healFromArgs(p: Parsed, opened: OpenedModel, layers: readonly number[]): Promise<{ replacedTensors: Map<string, Uint8Array>; record: HealRecord } | undefined> {
  const method = parseHealMethod(str(p, "heal"));
  if (method === "none") {
    for (const option of ["heal-data", "heal-ridge"]) if (p.values[option] !== undefined) throw new OptionError(`--${option} only applies with --heal linear`, { option: `--${option}` });
    return undefined;
  }
  const path = str(p, "heal-data") ?? str(p, "data");
  if (path === undefined) throw new OptionError("--heal linear fits on calibration text: give --data FILE or --heal-data FILE", { option: "--heal", hint: `usage: ${usage}` });
  const data = tokenizeFile(opened, path, split(p));
  const windows = windowsFromArgs(p, opened);
  requireOneWindow(data.documents, windows.seqLen, path);
  const ridge = healRidgeFromArgs(p);
  const backend = await backendFromArgs(p); // fp32 unless asked: the fit's sums want the full precision
  const progress = new Progress("healing", "token-layers");
  try {
    const fitted = await fitLinearHeal(opened, layers, scoringWindows(data.documents, windows), { backend, ...(ridge === undefined ? {} : { ridge }), onProgress: progress.callback });
    return { replacedTensors: fitted.replacedTensors, record: { ...fitted.record, data: { path, sha256: data.sha256, split: data.split }, options: windows, backend: backend.name } };
  } finally {
    progress.done();
    await backend.dispose();
  }
}

interface Selection {
  layers: number[];
  record: Record<string, unknown>;
  chart: string;
  scores?: MetricScores;
}

/** The K layers the metric and strategy choose, scored on the data the options name. */
async function selectByScore(p: Parsed, opened: OpenedModel, k: number): Promise<Selection> {
  const nLayers = opened.config.nLayers;
  const choice = metricsFromArgs(p);
  if (choice.metrics.length !== 1) throw new OptionError("prune takes one --metric", { option: "--metric", got: choice.metrics.join(","), hint: "use shortgpt compare to prune by several metrics" });
  const metric = choice.metrics[0]!;
  const selection = selectionFromArgs(p);
  checkSelection(k, nLayers, selection.protection); // before the data is read
  if (selection.iterative && !ITERATIVE_METRICS.includes(metric)) {
    throw new OptionError(`--iterative works with ${ITERATIVE_METRICS.join(" and ")}, not ${metric}`, { option: "--iterative", got: metric });
  }
  // Gromov et al.'s angular distance scores the block being removed: blocks of K by default.
  if (metric === "angular" && choice.block === undefined) choice.block = k;
  const data = dataFromArgs(p, opened, "data", usage);
  const windows = windowsFromArgs(p, opened);
  const backend = await backendFromArgs(p, opened); // the precision score uses on this model, so both rank alike
  const common = { data: { path: data.path, sha256: data.sha256, split: data.split }, options: { ...windows, ...choice }, backend: backend.name };
  try {
    if (selection.iterative) {
      const score = async (skip: ReadonlySet<number>): Promise<MetricScores> => (await metricsWithProgress(opened, data, windows, choice, backend, skip)).results[0]!;
      const { layers, steps } = await selectIteratively(score, metric, k, nLayers, selection.protection);
      return {
        layers,
        chart: metricChart(steps[0]!.scores, layers) + "\n", scores: steps[0]!.scores,
        record: { method: metric, k, select: "iterative", protection: selection.protection, steps: steps.map((s) => ({ removed: s.removed, scores: s.scores.scores, ranking: s.scores.ranking })), ...common },
      };
    }
    const scores = (await metricsWithProgress(opened, data, windows, choice, backend)).results[0]!;
    const layers = selectLayers(selection.strategy, scores, k, nLayers, selection.protection);
    return {
      layers,
      chart: metricChart(scores, layers) + "\n", scores,
      record: { method: metric, k, select: selection.strategy, protection: selection.protection, block: scores.block, scores: scores.scores, ranking: scores.ranking, ...common },
    };
  } finally {
    await backend.dispose();
  }
}

/** The K layers the strategy chooses by the scores of a score JSON (a single run or merged shards), with no scoring. */
function selectFromFile(p: Parsed, opened: OpenedModel, k: number, path: string): Selection {
  const nLayers = opened.config.nLayers;
  const metricText = str(p, "metric");
  const metrics = metricText === undefined ? undefined : parseMetricList(metricText);
  if (metrics && metrics.length !== 1) throw new OptionError("prune takes one --metric", { option: "--metric", got: metrics.join(",") });
  for (const option of ["data", "iterative", "block", "tokens", "seed"]) {
    if (p.values[option] !== undefined) throw new OptionError(`--from-scores takes the scores as they are: --${option} belongs to the run that made them`, { option: `--${option}`, hint: "leave it out, or score again" });
  }
  const selection = selectionFromArgs(p);
  checkSelection(k, nLayers, selection.protection);
  const file = readScoresFile(path, metrics?.[0]);
  checkScoresFit(file, path, modelIdentity(opened), nLayers);
  const scores = file.scores;
  const layers = selectLayers(selection.strategy, scores, k, nLayers, selection.protection);
  return {
    layers, chart: metricChart(scores, layers) + "\n", scores,
    record: {
      method: scores.metric, k, select: selection.strategy, protection: selection.protection, block: scores.block, scores: scores.scores, ranking: scores.ranking,
      data: file.data, options: file.options, backend: file.backend, fromScores: path,
    },
  };
}

export const pruneCommand: Command = {
  name: "prune",
  usage,
  summary: "remove the listed layers, or the K a metric ranks lowest, and write the same format",
  async run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, ...METRIC_OPTIONS, ...SELECTION_OPTIONS, out: { type: "string" }, layers: { type: "string" }, remove: { type: "string" }, "from-scores": { type: "string" }, force: { type: "boolean" }, heal: { type: "string" }, "heal-data": { type: "string" }, "heal-ridge": { type: "string" }, ...REPORT_OPTIONS,
    }, usage);
    checkReportOption(p);
    const named = onePositional(p, "MODEL", usage);
    const out = str(p, "out");
    if (out === undefined) throw new OptionError("missing --out PATH", { option: "--out", hint: `usage: ${usage}` });
    const input = await modelPathFromArgs(named);
    const force = flag(p, "force");
    // Refuse unsafe outputs before any work is done.
    checkOutputPath(out, { inputs: [input], force, option: "--out" });
    checkOutputPath(`${out}.json`, { inputs: [input], force, option: "--out" });
    const layersText = str(p, "layers");
    const removeText = str(p, "remove");
    if (layersText !== undefined && str(p, "from-scores") !== undefined) throw new OptionError("--from-scores chooses the layers: give --remove K, not --layers", { option: "--from-scores" });
    if ((layersText === undefined) === (removeText === undefined)) {
      throw new OptionError("give exactly one of --layers i,j,... or --remove K", { option: "--layers", hint: `usage: ${usage}` });
    }
    const opened = openFromArgs(p, input);
    const nLayers = opened.config.nLayers;
    let selection: Selection;
    let heal: Awaited<ReturnType<typeof healFromArgs>>;
    parseHealMethod(str(p, "heal")); // a bad method is refused before any work
    try {
      if (layersText !== undefined) {
        const layers = parseLayerList(layersText, nLayers, "--layers");
        checkRemovable(layers, nLayers, "--layers");
        selection = { layers, record: { method: "layers" }, chart: "" };
      } else if (str(p, "from-scores") !== undefined) {
        selection = selectFromFile(p, opened, int(p, "remove", 0)!, str(p, "from-scores")!);
      } else {
        selection = await selectByScore(p, opened, int(p, "remove", 0)!);
      }
      heal = await healFromArgs(p, opened, selection.layers);
    } finally {
      opened.close();
    }
    const result = removeLayers(input, out, selection.layers, { force, ...(heal ? { replacedTensors: heal.replacedTensors } : {}) });
    const record = { ...result, selection: selection.record, heal: heal ? heal.record : { method: "none" }, tool: "shortgpt", version: "0.1.0" };
    writeJsonAtomically(`${out}.json`, record);
    const sections: ReportSection[] = [];
    if (selection.scores) {
      const scores = selection.scores;
      sections.push({ title: `${scores.metric} per layer`, text: `removed: ${selection.layers.join(", ")}`, chart: { name: `scores-${scores.metric}`, spec: layerScoresChart(scores.metric, scores.scores, scores.block > 1 ? selection.layers.slice(0, 1) : selection.layers) } });
    }
    sections.push({
      title: "Before and after",
      table: { header: ["", "before", "after"], rows: [["file", input, out], ["format", result.format, result.format], ["layers", result.layersBefore, result.layersAfter], ["removed layers", "", selection.layers.join(", ")], ["tensor bytes written", "", result.bytesWritten], ...healRows(heal?.record)] },
    });
    const report = await writeReportIfAsked(p, () => ({
      title: `Pruned ${input}`, sections,
      provenance: provenance("prune", { model: input, output: out, selection: JSON.stringify(selection.record["method"] ?? "layers"), ...(typeof (selection.record["data"] as { sha256?: string } | undefined)?.sha256 === "string" ? { "data sha256": (selection.record["data"] as { sha256: string }).sha256 } : {}) }),
    }), record);
    return {
      json: record,
      text: `${selection.chart}removed layers ${selection.layers.join(", ")} of ${nLayers}: ${result.layersAfter} layers left\n${changesText(result.changes)}${healText(heal?.record)}wrote ${out} and ${out}.json${report}`,
    };
  },
};

/** What llama.cpp computes differently for the kept layers of a pruned GGUF file (gemma2/gemma3). */
function changesText(changes: readonly string[]): string {
  if (changes.length === 0) return "";
  return `note: the pruned file cannot keep every kept layer as it was in llama.cpp's format; llama.cpp (and shortgpt, reading the file) will compute:\n${changes.map((c) => `  ${c}\n`).join("")}`;
}

/** The report's rows for the healing fit: relative residual of each cut before and after. */
function healRows(heal: HealRecord | undefined): string[][] {
  return (heal?.cuts ?? []).map((c) => [`healed ${c.removed.join(",")} into layer ${c.foldedInto}`, `residual ${c.relativeResidualBefore.toFixed(4)}`, `residual ${c.relativeResidualAfter.toFixed(4)}`]);
}

function healText(heal: HealRecord | undefined): string {
  return (heal?.cuts ?? []).map((c) => `healed layers ${c.removed.join(", ")} into layer ${c.foldedInto}'s down projection on ${c.tokens} tokens: relative residual ${c.relativeResidualBefore.toFixed(4)} -> ${c.relativeResidualAfter.toFixed(4)}\n`).join("");
}

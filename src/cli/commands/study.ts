// shortgpt study MODEL --data CALIB --remove K --quant F16,Q8_0,Q4_K --eval ppl:FILE,TASKS: the
// pruning x quantization grid of ShortGPT's RQ4 on the user's model. Score, choose K layers, then
// evaluate {original, pruned} x {unquantized, each quant}: the unquantized pair on the model as
// given (the pruned one by skipping its layers, which gives exactly the written file's numbers), each
// quantized pair on GGUF files written by convert and pruned by prune in a work folder, removed after.

import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DecoderBackend } from "../../backend/backend.js";
import { convertModel, type ConvertResult, TARGET_DTYPES } from "../../convert/convertModel.js";
import { OptionError } from "../../errors.js";
import { entryBytes, type GridRow, lossAdditivity, matrixDtype } from "../../eval/quantPruneGrid.js";
import { openModel, type OpenedModel } from "../../load.js";
import { checkSelection, selectLayers } from "../../prune/select.js";
import { removeLayers } from "../../prune/removeLayers.js";
import type { ReportSection } from "../../report/page.js";
import { layerScoresChart } from "../../report/charts.js";
import { qualitySizeChart } from "../../report/studyCharts.js";
import { DATA_OPTIONS, EVAL_OPTIONS, evalSettingsFromArgs, flag, int, MODEL_OPTIONS, onePositional, parse, type Parsed, split, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, modelPathFromArgs, openFromArgs, windowsFromArgs } from "../common.js";
import { type EvalSettings, type EvalSpec, type EvalValue, parseEvalSpecs, readEvalTexts, runEvals } from "../evalSpecs.js";
import { table } from "../format.js";
import { METRIC_OPTIONS, metricChart, metricsFromArgs, metricsWithProgress, SELECTION_OPTIONS, selectionFromArgs } from "../metricOptions.js";
import { Progress } from "../progress.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import type { WindowChoice } from "../../pipeline.js";

const usage = "shortgpt study MODEL --data CALIB --remove K --quant F16,Q8_0,Q4_K,... --eval ppl:FILE,mmlu,... [--metric bi] [--select top-k|contiguous] [--keep-first N] [--keep-last N] "
  + "[--work-dir DIR] [--keep-files] [--data-dir DIR] [--shots K] [--limit N] [--bos|--no-bos] [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--backend B] [--threads N] [--report DIR] [--json FILE]";

/** A grid row with the evaluations' details and, for the written files, where they were and what fell back. */
interface StudyRow extends GridRow {
  details: EvalValue[];
  fileBytes?: number;
  fallbacks?: ConvertResult["fallbacks"];
}

function parseQuants(text: string | undefined): string[] {
  if (text === undefined) throw new OptionError("missing --quant F16,Q8_0,Q4_K,...", { option: "--quant", hint: `usage: ${usage}` });
  const quants = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  const allowed = TARGET_DTYPES.gguf as readonly string[];
  if (quants.length === 0) throw new OptionError("--quant is empty", { option: "--quant", hint: `choose from: ${allowed.join(", ")}` });
  for (const q of quants) {
    if (!allowed.includes(q)) throw new OptionError(`--quant ${q} is not a dtype GGUF files can be written in`, { option: "--quant", got: q, hint: `choose from: ${allowed.join(", ")}` });
  }
  if (new Set(quants).size !== quants.length) throw new OptionError(`--quant ${text} names a dtype twice`, { option: "--quant", got: text });
  return quants;
}

/** Tensor data bytes of an opened checkpoint, without the tensors it ignores (llama2.c's RoPE tables). */
function tensorBytes(opened: OpenedModel, removed: ReadonlySet<number> = new Set()): number {
  const removedNames = new Set([...removed].flatMap((layer) => Object.values(opened.names.layer(layer)) as string[]));
  return opened.provider.entries().filter((e) => !opened.names.ignored.has(e.name) && !removedNames.has(e.name)).reduce((n, e) => n + entryBytes(e), 0);
}

interface EvalContext {
  p: Parsed;
  evals: EvalSpec[];
  windows: WindowChoice;
  settings: EvalSettings;
}

/** Evaluates one written file on a backend of its own (a device backend keeps a model's weights resident until disposed). */
async function evaluateFile(path: string, ctx: EvalContext, tokenizer: string | undefined, label: string): Promise<{ values: EvalValue[]; bytes: number }> {
  const opened = openModel(path, tokenizer === undefined ? {} : { tokenizer });
  try {
    const texts = readEvalTexts(opened, ctx.evals, split(ctx.p));
    // No default from the file's dtype: every cell of the grid computes at one precision.
    const backend = await backendFromArgs(ctx.p);
    try {
      return { values: await runEvals(opened, ctx.evals, texts, ctx.windows, ctx.settings, backend, new Set(), label), bytes: tensorBytes(opened) };
    } finally {
      await backend.dispose();
    }
  } finally {
    opened.close();
  }
}

/** One line per quant and replacement: how many matrices were stored in another dtype, and why (the JSON lists each). */
function fallbackSummary(rows: readonly StudyRow[]): string[] {
  const lines: string[] = [];
  for (const r of rows) {
    const groups = new Map<string, string[]>();
    for (const f of r.fallbacks ?? []) {
      const key = `${f.dtype}: ${f.reason}`;
      groups.set(key, [...(groups.get(key) ?? []), f.tensor]);
    }
    for (const [key, tensors] of groups) lines.push(`${r.quant}: ${tensors.length} matrices (${tensors.slice(0, 2).join(", ")}${tensors.length > 2 ? ", ..." : ""}) as ${key}`);
  }
  return lines;
}

const byName = (values: readonly EvalValue[]): Record<string, number> => Object.fromEntries(values.map((v) => [v.name, v.value]));

export const studyCommand: Command = {
  name: "study",
  usage,
  summary: "pruning x quantization (ShortGPT's RQ4): evaluate {original, pruned} x {unquantized, each --quant} and whether the losses add up",
  async run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, ...METRIC_OPTIONS, ...SELECTION_OPTIONS, ...EVAL_OPTIONS,
      remove: { type: "string" }, quant: { type: "string" }, "work-dir": { type: "string" }, "keep-files": { type: "boolean" }, ...REPORT_OPTIONS,
    }, usage);
    checkReportOption(p);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const evalText = str(p, "eval");
    if (evalText === undefined) throw new OptionError("missing --eval ppl:FILE,task,...", { option: "--eval", hint: `usage: ${usage}` });
    const settings = evalSettingsFromArgs(p);
    const evals = parseEvalSpecs(evalText, settings);
    const quants = parseQuants(str(p, "quant"));
    const choice = metricsFromArgs(p);
    if (choice.metrics.length !== 1) throw new OptionError("study takes one --metric", { option: "--metric", hint: "use shortgpt compare to set metrics side by side" });
    const metric = choice.metrics[0]!;
    const selection = selectionFromArgs(p);
    if (selection.iterative) throw new OptionError("study removes the K layers chosen in one shot; --iterative is not supported here", { option: "--iterative", hint: "run shortgpt prune --iterative, then study the pruned model's quantizations with shortgpt eval" });
    const tokenizer = str(p, "tokenizer");
    const keepFiles = flag(p, "keep-files");
    const workParent = str(p, "work-dir") ?? tmpdir();
    const opened = openFromArgs(p, path);
    let workDir: string | undefined;
    try {
      const nLayers = opened.config.nLayers;
      const k = int(p, "remove", 1, nLayers - 1);
      if (k === undefined) throw new OptionError("missing --remove K", { option: "--remove", hint: `usage: ${usage}` });
      checkSelection(k, nLayers, selection.protection);
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const ctx: EvalContext = { p, evals, windows, settings };
      const rows: StudyRow[] = [];
      let removed: number[];
      let scoreText: string;
      let scoreSection: ReportSection | undefined;
      const inputDtype = matrixDtype(opened.provider.entries().filter((e) => !opened.names.ignored.has(e.name)));
      const backend: DecoderBackend = await backendFromArgs(p);
      try {
        const scores = (await metricsWithProgress(opened, data, windows, metric === "angular" ? { ...choice, block: k } : choice, backend)).results[0]!;
        removed = selectLayers(selection.strategy, scores, k, nLayers, selection.protection);
        scoreText = metricChart(scores, removed);
        if (metric !== "angular") scoreSection = { title: `${metric} per layer`, text: `marked: the ${k} layers removed`, chart: { name: `scores-${metric}`, spec: layerScoresChart(metric, scores.scores, removed) } };
        const texts = readEvalTexts(opened, evals, split(p));
        for (const pruned of [false, true]) {
          const skip = new Set(pruned ? removed : []);
          const values = await runEvals(opened, evals, texts, windows, settings, backend, skip, `${pruned ? "pruned" : "original"} ${inputDtype}`);
          rows.push({ pruned, removed: pruned ? removed : [], quant: inputDtype, unquantized: true, bytes: tensorBytes(opened, skip), evals: byName(values), details: values });
        }
      } finally {
        await backend.dispose();
      }
      mkdirSync(workParent, { recursive: true });
      workDir = mkdtempSync(join(workParent, "shortgpt-study-"));
      for (const quant of quants) {
        const file = join(workDir, `${quant}.gguf`);
        const prunedFile = join(workDir, `${quant}-pruned.gguf`);
        const progress = new Progress(`convert ${quant}`, "tensors");
        const converted = convertModel(path, file, { to: "gguf", dtype: quant, ...(tokenizer === undefined ? {} : { tokenizer }), onTensor: progress.callback });
        progress.done();
        const original = await evaluateFile(file, ctx, undefined, `original ${quant}`);
        rows.push({ pruned: false, removed: [], quant, unquantized: false, bytes: original.bytes, fileBytes: statSync(file).size, evals: byName(original.values), details: original.values, fallbacks: converted.fallbacks });
        removeLayers(file, prunedFile, removed);
        const pruned = await evaluateFile(prunedFile, ctx, undefined, `pruned ${quant}`);
        rows.push({ pruned: true, removed, quant, unquantized: false, bytes: pruned.bytes, fileBytes: statSync(prunedFile).size, evals: byName(pruned.values), details: pruned.values, fallbacks: converted.fallbacks });
        if (!keepFiles) for (const f of [file, prunedFile]) rmSync(f, { force: true });
      }
      // Original rows first, then pruned; unquantized first within each.
      rows.sort((a, b) => Number(a.pruned) - Number(b.pruned));
      const evalNames = evals.map((e) => e.name);
      const isPpl = (name: string): boolean => evals.find((e) => e.name === name)?.kind === "ppl";
      const additivity = lossAdditivity(rows, evalNames, isPpl);
      const json = {
        model: path, metric, select: selection.strategy, protection: selection.protection, remove: k, removed, quants,
        data: { path: data.path, sha256: data.sha256 }, evals: evalNames, evalSettings: settings, options: { ...windows, ...choice },
        ...(keepFiles ? { workDir } : {}),
        rows, additivity,
      };
      const header = ["model", "removed", "quant", "tensor MB", ...evals.map((e) => (e.kind === "ppl" ? e.name : `${e.name} acc`))];
      const tableRows = rows.map((r) => [
        r.pruned ? "pruned" : "original", r.removed.join(",") || "-", r.unquantized ? `${r.quant} (as given)` : r.quant, (r.bytes / 1e6).toFixed(3),
        ...evalNames.map((n) => r.evals[n]!.toFixed(isPpl(n) ? 3 : 4)),
      ]);
      const addHeader = ["quant", "evaluation", "scale", "prune", "quantize", "prune + quantize", "both", "interaction"];
      const addRows = additivity.map((a) => [a.quant, a.eval, a.scale, a.prune.toFixed(4), a.quantize.toFixed(4), (a.prune + a.quantize).toFixed(4), a.both.toFixed(4), a.interaction.toFixed(4)]);
      const fallbackNotes = fallbackSummary(rows.filter((r) => !r.pruned));
      const text = `${scoreText}\n\nremoved layers ${removed.join(",")} (${k} of ${nLayers}, by ${metric})\n\n${table(header, tableRows)}\n\n`
        + `do the losses add up? change from the unquantized original (log perplexity: nats per token; accuracy: absolute)\n${table(addHeader, addRows)}`
        + (fallbackNotes.length ? `\n\nfallbacks (as llama.cpp does for rows that are not whole blocks):\n${fallbackNotes.join("\n")}` : "");
      const sections: ReportSection[] = [
        {
          title: "Pruning x quantization (RQ4)", text: "perplexity for text files (lower is better), accuracy for tasks; tensor MB counts tensor data only",
          chart: { name: "quality-size", spec: qualitySizeChart(rows.flatMap((r) => r.details.map((e) => ({ model: r.pruned ? "pruned" as const : "original" as const, quant: r.unquantized ? `${r.quant} (as given)` : r.quant, megabytes: r.bytes / 1e6, evaluation: e.metric === "acc" ? `${e.name} acc` : e.name, value: e.value })))) },
          table: { header, rows: tableRows },
        },
        { title: "Do the losses add up?", text: "change from the unquantized original: pruning alone, quantizing alone, and both; interaction = both - (prune + quantize), 0 when they add up exactly", table: { header: addHeader, rows: addRows } },
      ];
      if (scoreSection) sections.unshift(scoreSection);
      if (fallbackNotes.length) sections.push({ title: "Fallbacks", text: fallbackNotes.join("; ") });
      const report = await writeReportIfAsked(p, () => ({
        title: `Pruning x quantization of ${path}: ${k} layers removed by ${metric}, ${quants.join(", ")}`, sections,
        provenance: provenance("study", { model: path, data: data.path, "data sha256": data.sha256, removed: removed.join(","), options: JSON.stringify({ ...windows, ...choice }) }),
      }), json);
      return { json, text: text + report };
    } finally {
      opened.close();
      if (workDir !== undefined && !keepFiles) rmSync(workDir, { recursive: true, force: true });
    }
  },
};

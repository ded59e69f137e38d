// shortgpt compare MODEL --data CALIB --metrics a,b,... --remove K --eval ppl:FILE[,ppl:FILE2]:
// prune by each metric, evaluate each pruned model, and print one table like the paper's metric
// ablation, with the overlap of the chosen layer sets. The pruned models are evaluated by
// skipping their layers, which gives exactly the numbers of the written files (tests prove it).

import { OptionError } from "../../errors.js";
import type { MetricScores } from "../../metrics/layerMetrics.js";
import { perplexityData, tokenizeFile } from "../../pipeline.js";
import { checkSelection, selectLayers } from "../../prune/select.js";
import { DATA_OPTIONS, int, MODEL_OPTIONS, onePositional, parse, split, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, windowsFromArgs } from "../common.js";
import { table } from "../format.js";
import { metricChart, metricsFromArgs, metricsWithProgress, selectionFromArgs } from "../metricOptions.js";
import { Progress } from "../progress.js";

const usage = "shortgpt compare MODEL --data CALIB --metrics bi,angular,relative-magnitude,ppl,reverse-order --remove K --eval ppl:FILE[,ppl:FILE...] "
  + "[--select top-k|contiguous] [--keep-first N] [--keep-last N] [--tokens last|all] [--seed S] [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] "
  + "[--backend B] [--threads N] [--json FILE]";

/** Evaluation specs: for now perplexity on text files (benchmark tasks arrive with the evaluation issue). */
function parseEvalSpecs(text: string): { kind: "ppl"; file: string }[] {
  return text.split(",").map((spec) => {
    const match = /^ppl:(.+)$/.exec(spec.trim());
    if (!match) throw new OptionError(`--eval ${spec}: expected ppl:FILE`, { option: "--eval", got: spec, hint: "supported evaluations: ppl:FILE (perplexity of a text file)" });
    return { kind: "ppl", file: match[1]! };
  });
}

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
      ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, metrics: { type: "string" }, remove: { type: "string" }, eval: { type: "string" },
      select: { type: "string" }, "keep-first": { type: "string" }, "keep-last": { type: "string" }, tokens: { type: "string" }, seed: { type: "string" },
    }, usage);
    const path = onePositional(p, "MODEL", usage);
    const evalText = str(p, "eval");
    if (evalText === undefined) throw new OptionError("missing --eval ppl:FILE", { option: "--eval", hint: `usage: ${usage}` });
    const evals = parseEvalSpecs(evalText);
    const choice = metricsFromArgs({ ...p, values: { ...p.values, metric: str(p, "metrics") ?? "bi,angular,relative-magnitude,ppl,reverse-order" } });
    const selection = selectionFromArgs(p);
    const opened = openFromArgs(p, path);
    try {
      const nLayers = opened.config.nLayers;
      const k = int(p, "remove", 1, nLayers - 1);
      if (k === undefined) throw new OptionError("missing --remove K", { option: "--remove", hint: `usage: ${usage}` });
      checkSelection(k, nLayers, selection.protection);
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const evalData = evals.map((e) => tokenizeFile(opened, e.file, split(p)));
      const backend = await backendFromArgs(p);
      try {
        // Angular scores blocks of K (Gromov et al.); the other metrics score single layers.
        const perLayer = choice.metrics.filter((m) => m !== "angular");
        const runs: MetricScores[] = [];
        if (perLayer.length > 0) runs.push(...(await metricsWithProgress(opened, data, windows, { ...choice, metrics: perLayer }, backend)).results);
        if (choice.metrics.includes("angular")) runs.push(...(await metricsWithProgress(opened, data, windows, { ...choice, metrics: ["angular"], block: k }, backend)).results);
        const chosen = runs.map((r) => ({ metric: r.metric, layers: selectLayers(selection.strategy, r, k, nLayers, selection.protection) }));
        const variants = [{ metric: "none (full model)", layers: [] as number[] }, ...chosen];
        const results: { metric: string; removed: number[]; evals: { file: string; perplexity: number; nll: number; tokens: number }[] }[] = [];
        for (const v of variants) {
          const scores: { file: string; perplexity: number; nll: number; tokens: number }[] = [];
          for (const [i, e] of evals.entries()) {
            const progress = new Progress(`eval ${v.metric}`, "token-layers");
            const r = await perplexityData(opened, evalData[i]!, windows, { backend, skip: new Set(v.layers), onProgress: progress.callback }).finally(() => progress.done());
            scores.push({ file: e.file, perplexity: r.perplexity, nll: r.nll, tokens: r.tokens });
          }
          results.push({ metric: v.metric, removed: v.layers, evals: scores });
        }
        const overlap = chosen.flatMap((a, i) => chosen.slice(i + 1).map((b) => ({ a: a.metric, b: b.metric, jaccard: jaccard(a.layers, b.layers) })));
        const json = {
          model: path, remove: k, select: selection.strategy, protection: selection.protection,
          data: { path: data.path, sha256: data.sha256 }, evals: evalData.map((d) => ({ path: d.path, sha256: d.sha256 })),
          options: { ...windows, ...choice }, backend: { name: backend.name, threads: backend.threads },
          metrics: runs, results, overlap,
        };
        const text = [
          ...runs.map((r) => metricChart(r, chosen.find((c) => c.metric === r.metric)!.layers)),
          table(["pruned by", "removed layers", ...evals.map((e) => `ppl ${e.file}`)], results.map((r) => [r.metric, r.removed.join(",") || "-", ...r.evals.map((e) => e.perplexity.toFixed(3))])),
          overlap.length > 0 ? `overlap of the removed sets (Jaccard): ${overlap.map((o) => `${o.a}/${o.b} ${o.jaccard.toFixed(2)}`).join(", ")}` : "",
        ].join("\n\n");
        return { json, text };
      } finally {
        await backend.dispose();
      }
    } finally {
      opened.close();
    }
  },
};

// shortgpt eval MODEL (--ppl FILE | --tasks a,b --data-dir DIR): perplexity of a text file
// (strided windows, with lm-eval's word/byte variants), and benchmark tasks scored by
// log-likelihood as lm-evaluation-harness does; optionally with layers skipped.

import type { DecoderBackend } from "../../backend/backend.js";
import { OptionError } from "../../errors.js";
import { evaluateTask, type TaskResult } from "../../eval/evaluateTasks.js";
import { perplexityVariants } from "../../eval/perplexityVariants.js";
import { parseTaskList, TASK_NAMES } from "../../eval/tasks/tasks.js";
import type { OpenedModel } from "../../load.js";
import { perplexityData } from "../../pipeline.js";
import { bosFromArgs, DATA_OPTIONS, int, MODEL_OPTIONS, onePositional, parse, type Parsed, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, skipFromArgs, windowsFromArgs, modelPathFromArgs } from "../common.js";
import { table } from "../format.js";
import { Progress } from "../progress.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { valuesChart } from "../../report/charts.js";
import type { ReportSection } from "../../report/page.js";

const usage = "shortgpt eval MODEL (--ppl FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] | --tasks a,b,... --data-dir DIR [--shots K] [--limit N] [--bos|--no-bos]) "
  + "[--skip i,j] [--backend auto|onnx|wasm|reference] [--threads N] [--json FILE]";

async function perplexityPart(p: Parsed, opened: OpenedModel, backend: DecoderBackend, skip: Set<number> | undefined): Promise<{ json: Record<string, unknown>; text: string }> {
  const data = dataFromArgs(p, opened, "ppl", usage);
  const windows = windowsFromArgs(p, opened);
  const progress = new Progress("perplexity", "token-layers");
  const started = Date.now();
  const result = await perplexityData(opened, data, windows, { backend, ...(skip ? { skip } : {}), onProgress: progress.callback }).finally(() => progress.done());
  const seconds = (Date.now() - started) / 1000;
  // Word and byte perplexity need every token of the text scored: not with --max-tokens.
  const wholeText = windows.maxTokens === undefined && result.tokens === data.tokens - data.documents.length;
  const variants = wholeText ? perplexityVariants(result.nll * result.tokens, data.size) : undefined;
  const skipped = skip ? [...skip] : [];
  return {
    json: {
      perplexity: result.perplexity, nll: result.nll, tokens: result.tokens, windows: result.windows,
      ...(variants ? { ...variants, words: data.size.words, bytes: data.size.bytes } : {}),
      data: { path: data.path, sha256: data.sha256, split: data.split }, options: windows, seconds,
    },
    text: `perplexity ${result.perplexity.toFixed(4)} (nll ${result.nll.toFixed(6)} over ${result.tokens} tokens, ${result.windows} windows of <= ${windows.seqLen}, stride ${windows.stride}${skipped.length ? `, layers ${skipped.join(",")} skipped` : ""}) in ${seconds.toFixed(1)} s`
      + (variants ? `\nword perplexity ${variants.wordPerplexity.toFixed(4)} (${data.size.words} words), byte perplexity ${variants.bytePerplexity.toFixed(4)}, bits per byte ${variants.bitsPerByte.toFixed(4)} (${data.size.bytes} bytes)` : ""),
  };
}

/** Rows as lm-eval's table: each task, or a group with its subgroups and subtasks indented below it. */
function taskTable(results: readonly TaskResult[]): string {
  const rows = results.flatMap((r) => {
    const parts = [
      { name: r.task, items: r.items, metrics: r.metrics, speed: r.itemsPerSecond.toFixed(1) },
      ...(r.groups ?? []).map((g) => ({ ...g, name: ` - ${g.name}`, speed: "" })),
      ...(r.subtasks ?? []).map((s) => ({ ...s, name: `  - ${s.name}`, speed: "" })),
    ];
    return parts.flatMap((part) => Object.entries(part.metrics).map(([name, m], i) => [
      i === 0 ? part.name : "", i === 0 ? part.items : "", i === 0 ? r.shots : "", name, m.value.toFixed(4), Number.isFinite(m.stderr) ? `± ${m.stderr.toFixed(4)}` : "", i === 0 ? part.speed : "",
    ]));
  });
  return table(["task", "items", "shots", "metric", "value", "stderr", "items/s"], rows);
}

async function tasksPart(p: Parsed, opened: OpenedModel, backend: DecoderBackend, skip: Set<number> | undefined): Promise<{ json: Record<string, unknown>; text: string }> {
  const tasks = parseTaskList(str(p, "tasks")!);
  const dataDir = str(p, "data-dir");
  if (dataDir === undefined) throw new OptionError("missing --data-dir DIR", { option: "--data-dir", hint: "the folder that holds mmlu/, cmmlu/, hellaswag/ and multiple-choice/ (e.g. ../shared/data)" });
  const shots = int(p, "shots", 0, 1000) ?? 0;
  const limit = int(p, "limit", 1);
  const bos = bosFromArgs(p);
  for (const task of tasks) {
    if (shots > task.maxShots) {
      throw new OptionError(`--shots ${shots}: ${task.name} ${task.maxShots === 0 ? "has no few-shot split in the data" : `has ${task.maxShots} dev examples per subject`}`, { option: "--shots", expected: `<= ${task.maxShots}`, got: shots });
    }
  }
  const results: TaskResult[] = [];
  for (const task of tasks) {
    const progress = new Progress(task.name, "tokens");
    const result = await evaluateTask(opened, opened.tokenizer, task, {
      dataDir, shots, backend, ...(bos === undefined ? {} : { bos }), onProgress: progress.callback, ...(limit === undefined ? {} : { limit }), ...(skip ? { skip } : {}),
    }).finally(() => progress.done());
    results.push(result);
  }
  const bosUsed = { bos: bos ?? opened.tokenizer.addsBos, bosFrom: bos === undefined ? "tokenizer" : "option" };
  return {
    json: { tasks: results, dataDir, shots, ...(limit === undefined ? {} : { limit }), ...bosUsed },
    text: `${taskTable(results)}\ncontexts ${bosUsed.bos ? "start with BOS" : "without BOS"} (${bos === undefined ? "as the tokenizer does; --bos / --no-bos to change" : "as asked"})`,
  };
}

export const evalCommand: Command = {
  name: "eval",
  usage,
  summary: `perplexity of a text file, and benchmark tasks (${TASK_NAMES.join(", ")}), optionally with layers skipped`,
  async run(argv) {
    const { data: _data, ...dataOptions } = DATA_OPTIONS;
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...dataOptions, ...ENGINE_OPTIONS, ppl: { type: "string" }, skip: { type: "string" },
      tasks: { type: "string" }, "data-dir": { type: "string" }, shots: { type: "string" }, limit: { type: "string" }, bos: { type: "boolean" }, "no-bos": { type: "boolean" }, ...REPORT_OPTIONS,
    }, usage);
    checkReportOption(p);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    if (str(p, "ppl") === undefined && str(p, "tasks") === undefined) throw new OptionError("give --ppl FILE or --tasks a,b,...", { option: "--tasks", hint: `usage: ${usage}` });
    const opened = openFromArgs(p, path);
    try {
      const skip = skipFromArgs(p, opened.config.nLayers);
      const backend = await backendFromArgs(p);
      try {
        const parts = [];
        if (str(p, "ppl") !== undefined) parts.push(await perplexityPart(p, opened, backend, skip));
        if (str(p, "tasks") !== undefined) parts.push(await tasksPart(p, opened, backend, skip));
        const json = Object.assign({ model: path, skip: skip ? [...skip] : [], backend: { name: backend.name, threads: backend.threads } }, ...parts.map((x) => x.json)) as Record<string, unknown>;
        const sections: ReportSection[] = [];
        if (typeof json["perplexity"] === "number") {
          const rows: [string, string | number][] = [["perplexity", (json["perplexity"] as number).toFixed(4)], ["nll (nats/token)", (json["nll"] as number).toFixed(6)], ["tokens", json["tokens"] as number]];
          for (const key of ["wordPerplexity", "bytePerplexity", "bitsPerByte"]) if (typeof json[key] === "number") rows.push([key, (json[key] as number).toFixed(4)]);
          sections.push({ title: `Perplexity of ${str(p, "ppl")}`, table: { header: ["", "value"], rows } });
        }
        const tasks = (json["tasks"] as TaskResult[] | undefined) ?? [];
        if (tasks.length > 0) {
          sections.push({
            title: "Benchmark tasks", chart: { name: "task-accuracy", spec: valuesChart("accuracy per task", tasks.map((t) => ({ name: t.task, value: t.metrics["acc"]!.value }))) },
            table: { header: ["task", "items", "shots", "metric", "value", "stderr"], rows: tasks.flatMap((t) => Object.entries(t.metrics).map(([m, v]) => [t.task, t.items, t.shots, m, v.value.toFixed(4), Number.isFinite(v.stderr) ? v.stderr.toFixed(4) : ""])) },
          });
        }
        const report = await writeReportIfAsked(p, () => ({
          title: `Evaluation of ${path}${skip ? ` with layers ${[...skip].join(",")} skipped` : ""}`, sections,
          provenance: provenance("eval", { model: path, skipped: skip ? [...skip].join(",") : "none", backend: backend.name }),
        }), json);
        return { json, text: parts.map((x) => x.text).join("\n\n") + ` [${backend.name}]` + report };
      } finally {
        await backend.dispose();
      }
    } finally {
      opened.close();
    }
  },
};

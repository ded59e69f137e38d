// shortgpt eval MODEL (--ppl FILE | --tasks a,b --data-dir DIR): perplexity of a text file
// (strided windows, with lm-eval's word/byte variants), and benchmark tasks scored by
// log-likelihood as lm-evaluation-harness does; optionally with layers skipped.

import type { DecoderBackend } from "../../backend/backend.js";
import { OptionError } from "../../errors.js";
import { evaluateTaskShard, type TaskResult, type TaskShardResult } from "../../eval/evaluateTasks.js";
import { perplexityVariants } from "../../eval/perplexityVariants.js";
import { parseTaskList, TASK_NAMES } from "../../eval/tasks/tasks.js";
import type { OpenedModel } from "../../load.js";
import { streamingPerplexity } from "../../models/streaming.js";
import { perplexityWindowsOf, type WindowChoice } from "../../pipeline.js";
import { backendIdentity, modelIdentity } from "../../shards/identity.js";
import { PARTIAL_KIND, PARTIAL_VERSION, type PartialResult } from "../../shards/partial.js";
import { checkShardNotEmpty, parseShard, type Shard, shardIndices } from "../../shards/shard.js";
import { bosFromArgs, DATA_OPTIONS, int, MODEL_OPTIONS, onePositional, parse, type Parsed, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, skipFromArgs, windowsFromArgs, modelPathFromArgs } from "../common.js";
import { table } from "../format.js";
import { Progress } from "../progress.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";
import { valuesChart } from "../../report/charts.js";
import type { ReportSection } from "../../report/page.js";

const usage = "shortgpt eval MODEL (--ppl FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] | --tasks a,b,... --data-dir DIR [--shots K] [--limit N] [--bos|--no-bos]) "
  + "[--skip i,j] [--backend auto|cuda|onnx|wasm|reference] [--threads N] [--precision bf16|fp32] [--shard i/n] [--json FILE]";

/** What the perplexity JSON needs of the data besides the result: the same for every shard. */
export interface PerplexityInfo {
  data: { path: string; sha256: string; split: string };
  /** Words and bytes of the text, and the tokens a run over all of it scores (word/byte perplexity need them all). */
  size: { words: number; bytes: number };
  wholeTextTokens: number;
  options: WindowChoice;
}

/** The perplexity fields of the eval JSON and their line, from a run or from merged shards. */
export function perplexityOutput(result: { perplexity: number; nll: number; tokens: number; windows: number }, info: PerplexityInfo, seconds: number, skipped: readonly number[]): { json: Record<string, unknown>; text: string } {
  const windows = info.options;
  // Word and byte perplexity need every token of the text scored: not with --max-tokens.
  const wholeText = windows.maxTokens === undefined && result.tokens === info.wholeTextTokens;
  const variants = wholeText ? perplexityVariants(result.nll * result.tokens, info.size) : undefined;
  return {
    json: {
      perplexity: result.perplexity, nll: result.nll, tokens: result.tokens, windows: result.windows,
      ...(variants ? { ...variants, words: info.size.words, bytes: info.size.bytes } : {}),
      data: info.data, options: windows, seconds,
    },
    text: `perplexity ${result.perplexity.toFixed(4)} (nll ${result.nll.toFixed(6)} over ${result.tokens} tokens, ${result.windows} windows of <= ${windows.seqLen}, stride ${windows.stride}${skipped.length ? `, layers ${skipped.join(",")} skipped` : ""}) in ${seconds.toFixed(1)} s`
      + (variants ? `\nword perplexity ${variants.wordPerplexity.toFixed(4)} (${info.size.words} words), byte perplexity ${variants.bytePerplexity.toFixed(4)}, bits per byte ${variants.bitsPerByte.toFixed(4)} (${info.size.bytes} bytes)` : ""),
  };
}

interface Part {
  json: Record<string, unknown>;
  text: string;
  /** With --shard: the run identity, the shard-independent fields and the exact sums of this part. */
  run?: Record<string, unknown>;
  common?: Record<string, unknown>;
  partial?: Pick<PartialResult, "perplexity" | "tasks">;
}

async function perplexityPart(p: Parsed, opened: OpenedModel, backend: DecoderBackend, skip: Set<number> | undefined, shard: Shard | undefined): Promise<Part> {
  const data = dataFromArgs(p, opened, "ppl", usage);
  const windows = windowsFromArgs(p, opened);
  const info: PerplexityInfo = { data: { path: data.path, sha256: data.sha256, split: data.split }, size: data.size, wholeTextTokens: data.tokens - data.documents.length, options: windows };
  const all = perplexityWindowsOf(data, windows);
  if (shard) checkShardNotEmpty(all.length, shard, "perplexity windows");
  const ids = shard ? shardIndices(all.length, shard) : all.map((_, i) => i);
  const progress = new Progress("perplexity", "token-layers");
  const started = Date.now();
  const result = await streamingPerplexity(opened, shard ? ids.map((i) => all[i]!) : all, { backend, ...(skip ? { skip } : {}), onProgress: progress.callback }).finally(() => progress.done());
  const seconds = (Date.now() - started) / 1000;
  const output = perplexityOutput(result, info, seconds, skip ? [...skip] : []);
  if (!shard) return output;
  return {
    ...output,
    run: { ppl: { sha256: data.sha256, split: data.split, options: windows } }, common: { perplexity: info },
    partial: { perplexity: { totalWindows: all.length, windows: ids, nll: Array.from(result.perWindow!.nll), tokens: Array.from(result.perWindow!.tokens) } },
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

/** What the tasks JSON says besides the results: the same for every shard. */
export interface TasksInfo {
  dataDir: string;
  shots: number;
  limit?: number;
  bos: boolean;
  bosFrom: "tokenizer" | "option";
}

/** The tasks fields of the eval JSON and their table, from a run or from merged shards. */
export function tasksOutput(results: TaskResult[], info: TasksInfo): { json: Record<string, unknown>; text: string } {
  return {
    json: { tasks: results, ...info },
    text: `${taskTable(results)}\ncontexts ${info.bos ? "start with BOS" : "without BOS"} (${info.bosFrom === "tokenizer" ? "as the tokenizer does; --bos / --no-bos to change" : "as asked"})`,
  };
}

async function tasksPart(p: Parsed, opened: OpenedModel, backend: DecoderBackend, skip: Set<number> | undefined, shard: Shard | undefined): Promise<Part> {
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
  const shards: TaskShardResult[] = [];
  for (const task of tasks) {
    const progress = new Progress(task.name, "tokens");
    shards.push(await evaluateTaskShard(opened, opened.tokenizer, task, {
      dataDir, shots, backend, ...(bos === undefined ? {} : { bos }), onProgress: progress.callback, ...(limit === undefined ? {} : { limit }), ...(skip ? { skip } : {}),
    }, shard).finally(() => progress.done()));
  }
  const info: TasksInfo = { dataDir, shots, ...(limit === undefined ? {} : { limit }), bos: bos ?? opened.tokenizer.addsBos, bosFrom: bos === undefined ? "tokenizer" : "option" };
  const output = tasksOutput(shards.map((s) => s.result), info);
  if (!shard) return output;
  return {
    ...output,
    run: { tasks: { names: tasks.map((t) => t.name), shots, limit: limit ?? null, bos: info.bos } }, common: { tasks: info },
    partial: { tasks: { tasks: shards.map((s) => ({ task: s.result.task, totalItems: s.totalItems, indices: s.indices, seconds: s.result.seconds, results: s.result.results })) } },
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
      tasks: { type: "string" }, "data-dir": { type: "string" }, shots: { type: "string" }, limit: { type: "string" }, bos: { type: "boolean" }, "no-bos": { type: "boolean" }, shard: { type: "string" }, ...REPORT_OPTIONS,
    }, usage);
    checkReportOption(p);
    const shardText = str(p, "shard");
    const shard = shardText === undefined ? undefined : parseShard(shardText);
    if (shard && str(p, "report") !== undefined) throw new OptionError("--shard writes a partial result: --report belongs to the whole run", { option: "--shard", hint: "merge the parts with shortgpt merge" });
    const named = onePositional(p, "MODEL", usage);
    if (str(p, "ppl") === undefined && str(p, "tasks") === undefined) throw new OptionError("give --ppl FILE or --tasks a,b,...", { option: "--tasks", hint: `usage: ${usage}` });
    const path = await modelPathFromArgs(named);
    const opened = openFromArgs(p, path);
    try {
      const skip = skipFromArgs(p, opened.config.nLayers);
      const backend = await backendFromArgs(p, opened);
      try {
        const parts: Part[] = [];
        const started = Date.now();
        if (str(p, "ppl") !== undefined) parts.push(await perplexityPart(p, opened, backend, skip, shard));
        if (str(p, "tasks") !== undefined) parts.push(await tasksPart(p, opened, backend, skip, shard));
        if (shard) {
          const json: PartialResult = {
            kind: PARTIAL_KIND, version: PARTIAL_VERSION, command: "eval", shard,
            run: Object.assign({ model: modelIdentity(opened), skip: skip ? [...skip] : [], backend: backendIdentity(backend) }, ...parts.map((x) => x.run)) as Record<string, unknown>,
            common: Object.assign({ model: path, skip: skip ? [...skip] : [], backend: { name: backend.name, threads: backend.threads } }, ...parts.map((x) => x.common)) as Record<string, unknown>,
            seconds: (Date.now() - started) / 1000, ...Object.assign({}, ...parts.map((x) => x.partial)) as Pick<PartialResult, "perplexity" | "tasks">,
          };
          return { json, text: `shard ${shard.index}/${shard.count} (a partial result: merge the ${shard.count} parts with shortgpt merge)\n` + parts.map((x) => x.text).join("\n\n") + ` [${backend.name}]` };
        }
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

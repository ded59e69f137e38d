// What `compare` and `sweep` evaluate after each removal: `ppl:FILE` (perplexity of a text
// file) and benchmark task names (scored as `eval --tasks` does), run on the model with the
// removed layers skipped, which gives exactly the numbers of the written file.

import type { DecoderBackend } from "../backend/backend.js";
import { OptionError } from "../errors.js";
import { evaluateTask } from "../eval/evaluateTasks.js";
import { parseTaskList, TASK_NAMES, type TaskDefinition } from "../eval/tasks/tasks.js";
import type { OpenedModel } from "../load.js";
import { perplexityData, tokenizeFile, type TokenizedData, type WindowChoice } from "../pipeline.js";
import type { SplitMode } from "../data/documents.js";
import { Progress } from "./progress.js";

export type EvalSpec = { kind: "ppl"; name: string; file: string } | { kind: "task"; name: string; task: TaskDefinition };

export interface EvalSettings {
  dataDir?: string;
  shots: number;
  limit?: number;
  /** BOS before every context; undefined: as the tokenizer does. */
  bos?: boolean;
}

/** "ppl:FILE,mmlu,piqa" -> specs; task names are checked now, files when read. */
export function parseEvalSpecs(text: string, settings: EvalSettings): EvalSpec[] {
  const specs = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0).map((spec): EvalSpec => {
    const ppl = /^ppl:(.+)$/.exec(spec);
    if (ppl) return { kind: "ppl", name: `ppl:${ppl[1]}`, file: ppl[1]! };
    const task = parseTaskList(spec, "--eval")[0]!;
    return { kind: "task", name: task.name, task };
  });
  if (specs.length === 0) throw new OptionError("--eval is empty", { option: "--eval", hint: `give ppl:FILE and/or tasks: ${TASK_NAMES.join(", ")}` });
  if (specs.some((s) => s.kind === "task") && settings.dataDir === undefined) {
    throw new OptionError("missing --data-dir DIR for the benchmark tasks in --eval", { option: "--data-dir", hint: "the folder that holds mmlu/, hellaswag/ and multiple-choice/ (e.g. ../shared/data)" });
  }
  for (const s of specs) {
    if (s.kind === "task" && settings.shots > s.task.maxShots) {
      throw new OptionError(`--shots ${settings.shots}: ${s.name} allows at most ${s.task.maxShots}`, { option: "--shots", got: settings.shots });
    }
  }
  return specs;
}

export interface EvalValue {
  name: string;
  /** The number the tables show: perplexity for ppl:FILE, accuracy for tasks. */
  value: number;
  metric: string;
  detail: Record<string, number>;
}

/** Tokenized text files, read once for every variant. */
export function readEvalTexts(opened: OpenedModel, specs: readonly EvalSpec[], split: SplitMode): Map<string, TokenizedData> {
  return new Map(specs.flatMap((s) => (s.kind === "ppl" ? [[s.file, tokenizeFile(opened, s.file, split)] as const] : [])));
}

export async function runEvals(
  opened: OpenedModel, specs: readonly EvalSpec[], texts: Map<string, TokenizedData>, windows: WindowChoice, settings: EvalSettings,
  backend: DecoderBackend, skip: ReadonlySet<number>, label: string,
): Promise<EvalValue[]> {
  const values: EvalValue[] = [];
  for (const spec of specs) {
    const progress = new Progress(`${label} ${spec.name}`, "tokens");
    try {
      if (spec.kind === "ppl") {
        const r = await perplexityData(opened, texts.get(spec.file)!, windows, { backend, skip, onProgress: progress.callback });
        values.push({ name: spec.name, metric: "perplexity", value: r.perplexity, detail: { perplexity: r.perplexity, nll: r.nll, tokens: r.tokens } });
      } else {
        const r = await evaluateTask(opened, opened.tokenizer, spec.task, {
          dataDir: settings.dataDir!, shots: settings.shots, backend, ...(settings.bos === undefined ? {} : { bos: settings.bos }), skip, onProgress: progress.callback,
          ...(settings.limit === undefined ? {} : { limit: settings.limit }),
        });
        const detail: Record<string, number> = { items: r.items };
        for (const [k, m] of Object.entries(r.metrics)) detail[k] = m.value;
        values.push({ name: spec.name, metric: "acc", value: r.metrics["acc"]!.value, detail });
      }
    } finally {
      progress.done();
    }
  }
  return values;
}

/** Column titles of the evaluations in a table. */
export function evalColumns(specs: readonly EvalSpec[]): string[] {
  return specs.map((e) => (e.kind === "ppl" ? e.name : `${e.name} acc`));
}

/** One evaluation's number as a table shows it. */
export function evalCells(values: readonly EvalValue[]): string[] {
  return values.map((e) => e.value.toFixed(e.metric === "acc" ? 4 : 3));
}

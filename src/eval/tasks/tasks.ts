// The benchmark tasks, as lm-evaluation-harness (lm-eval 0.4) defines them: each item becomes
// log-likelihood requests (context, continuation) with the harness's prompt template, target
// delimiter " " and answer choices. The data in ../shared/data is already in the harness's
// query format for the multiple-choice sets; where it forces a difference, the task says so.

import { readdirSync } from "node:fs";
import { join } from "node:path";
import { DataError, OptionError } from "../../errors.js";
import { readBzip2, readCsv, readJsonl, RowReader } from "./readers.js";

export interface LoglikelihoodRequest {
  context: string;
  continuation: string;
}

export interface TaskItem {
  /** Stable id: file stem and row, so two runs can be compared item by item. */
  id: string;
  /** One request per answer choice (per context option for WinoGrande); one for LAMBADA. */
  requests: LoglikelihoodRequest[];
  gold: number;
  /** What acc_norm divides each choice's log-likelihood by: the choice text's length, as lm-eval. */
  choiceLengths: number[];
  /** Subject (MMLU, CMMLU), for per-subject results. */
  group?: string;
}

export interface LoadOptions {
  shots: number;
  /** Items per task (per subject for MMLU/CMMLU), from the start. */
  limit?: number;
}

export interface TaskDefinition {
  name: string;
  /** The lm-eval task whose template this follows, and any difference the data forces. */
  follows: string;
  /** "choice": acc and acc_norm over the requests; "cloze": greedy-match accuracy and perplexity. */
  kind: "choice" | "cloze";
  /** Largest --shots the data allows (a dev split); 0 when there is none. */
  maxShots: number;
  load(dataDir: string, options: LoadOptions): TaskItem[];
}

const LETTERS = ["A", "B", "C", "D"];

function choiceItem(id: string, context: string, choices: readonly string[], gold: number, group?: string): TaskItem {
  return {
    id, gold, choiceLengths: choices.map((c) => c.length),
    requests: choices.map((c) => ({ context, continuation: ` ${c}` })),
    ...(group === undefined ? {} : { group }),
  };
}

function limitRows<T>(rows: T[], limit?: number): T[] {
  return limit === undefined ? rows : rows.slice(0, limit);
}

/** MMLU-style CSV subjects: <dir>/<split>/<subject><suffix>.csv. */
function subjects(dir: string, suffix: string): string[] {
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    throw new DataError(`benchmark folder not found: ${dir}`, { file: dir, option: "--data-dir", hint: "point --data-dir at the folder that holds mmlu/ and cmmlu/" });
  }
  return files.filter((f) => f.endsWith(`${suffix}.csv`)).map((f) => f.slice(0, -`${suffix}.csv`.length)).sort();
}

interface McRow {
  question: string;
  choices: string[];
  answer: number;
}

/** MMLU: question,choice0..choice3,answer (index). */
function mmluRows(path: string): McRow[] {
  const rows = readCsv(path);
  const header = rows.shift();
  if (!header || header.fields.join(",") !== "question,choice0,choice1,choice2,choice3,answer") {
    throw new DataError(`${path}:1: expected the header question,choice0,choice1,choice2,choice3,answer`, { file: path });
  }
  return rows.map(({ line, fields }) => {
    if (fields.length !== 6 || !/^[0-3]$/.test(fields[5]!)) throw new DataError(`${path}:${line}: expected 6 fields ending in an answer index 0-3`, { file: path, hint: "fix or remove that row; no row is skipped silently" });
    return { question: fields[0]!, choices: fields.slice(1, 5), answer: Number(fields[5]) };
  });
}

/** CMMLU: ,Question,A,B,C,D,Answer (letter). */
function cmmluRows(path: string): McRow[] {
  const rows = readCsv(path);
  const header = rows.shift();
  if (!header || header.fields.slice(1).join(",") !== "Question,A,B,C,D,Answer") throw new DataError(`${path}:1: expected the header ,Question,A,B,C,D,Answer`, { file: path });
  return rows.map(({ line, fields }) => {
    if (fields.length !== 7 || !LETTERS.includes(fields[6]!)) throw new DataError(`${path}:${line}: expected 7 fields ending in an answer letter A-D`, { file: path, hint: "fix or remove that row; no row is skipped silently" });
    return { question: fields[1]!, choices: fields.slice(2, 6), answer: LETTERS.indexOf(fields[6]!) };
  });
}

/** MMLU and CMMLU: description, K examples from the subject's dev split, then the question. */
function csvExamTask(options: {
  name: string; follows: string; folder: string; testSuffix: string; devSuffix: string; rows: (path: string) => McRow[];
  description: (subject: string) => string; question: (row: McRow) => string;
}): TaskDefinition {
  return {
    name: options.name, follows: options.follows, kind: "choice", maxShots: 5,
    load(dataDir, { shots, limit }) {
      const root = join(dataDir, options.folder);
      const items: TaskItem[] = [];
      for (const subject of subjects(join(root, "test"), options.testSuffix)) {
        const dev = shots > 0 ? options.rows(join(root, "dev", `${subject}${options.devSuffix}.csv`)) : [];
        if (dev.length < shots) {
          throw new OptionError(`--shots ${shots}: ${options.name} subject ${subject} has only ${dev.length} dev examples`, { option: "--shots", expected: `<= ${dev.length}`, got: shots });
        }
        const examples = dev.slice(0, shots).map((r) => `${options.question(r)} ${LETTERS[r.answer]}\n\n`).join("");
        const prefix = options.description(subject) + examples;
        limitRows(options.rows(join(root, "test", `${subject}${options.testSuffix}.csv`)), limit).forEach((r, i) => {
          items.push(choiceItem(`${subject}:${i}`, prefix + options.question(r), LETTERS, r.answer, subject));
        });
      }
      return items;
    },
  };
}

const mmlu = csvExamTask({
  name: "mmlu", follows: "lm-eval mmlu (default template; few-shot examples are the first K of the subject's dev split)",
  folder: "mmlu", testSuffix: "_test", devSuffix: "_dev", rows: mmluRows,
  description: (subject) => `The following are multiple choice questions (with answers) about ${subject.replaceAll("_", " ")}.\n\n`,
  question: (r) => `${r.question.trim()}\nA. ${r.choices[0]}\nB. ${r.choices[1]}\nC. ${r.choices[2]}\nD. ${r.choices[3]}\nAnswer:`,
});

const cmmlu = csvExamTask({
  name: "cmmlu", follows: "lm-eval cmmlu (template and Chinese answer prompt; the description names the subject by its file name, since the data has no Chinese subject names)",
  folder: "cmmlu", testSuffix: "", devSuffix: "", rows: cmmluRows,
  description: (subject) => `以下是关于${subject.replaceAll("_", " ")}的单项选择题，请直接给出正确答案的选项。\n\n`,
  question: (r) => `${r.question.trim()}\nA. ${r.choices[0]}\nB. ${r.choices[1]}\nC. ${r.choices[2]}\nD. ${r.choices[3]}\n答案：`,
});

/** lm-eval's HellaSwag text cleanup: strip, " [title]" to ". ", drop bracketed tags, collapse double spaces. */
export function hellaswagPreprocess(text: string): string {
  return text.trim().replaceAll(" [title]", ". ").replace(/\[.*?\]/g, "").replaceAll("  ", " ");
}

const hellaswag: TaskDefinition = {
  name: "hellaswag", kind: "choice", maxShots: 0,
  follows: "lm-eval hellaswag (query \"activity: context\" and endings, both preprocessed as the harness does; the data file gives the context already joined, so ctx_b is not re-capitalized)",
  load(dataDir, { limit }) {
    const path = join(dataDir, "hellaswag", "hellaswag_val_full.txt.bz2");
    const lines = readBzip2(path).split("\n");
    while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
    if (lines.length % 6 !== 0) throw new DataError(`${path}: ${lines.length} lines is not a whole number of 6-line items`, { file: path, hint: "the file is truncated or corrupt" });
    const items: TaskItem[] = [];
    const count = Math.min(lines.length / 6, limit ?? Infinity);
    for (let i = 0; i < count; i++) {
      const [query, label, ...endings] = lines.slice(6 * i, 6 * i + 6) as [string, string, ...string[]];
      if (!/^[0-3]$/.test(label.trim())) throw new DataError(`${path}:${6 * i + 2}: gold label "${label}" is not 0-3`, { file: path, hint: "fix or remove that item; no item is skipped silently" });
      items.push(choiceItem(`hellaswag:${i}`, hellaswagPreprocess(query), endings.map(hellaswagPreprocess), Number(label)));
    }
    return items;
  },
};

/** A {query, choices, gold} JSON-lines set, the query already in the harness's format. */
function jsonlChoiceTask(name: string, file: string, follows: string): TaskDefinition {
  return {
    name, follows, kind: "choice", maxShots: 0,
    load(dataDir, { limit }) {
      const path = join(dataDir, "multiple-choice", file);
      return limitRows(readJsonl(path), limit).map(({ line, row }) => {
        const r = new RowReader(path, line, row);
        const choices = r.strings("choices");
        return choiceItem(`${name}:${line}`, r.string("query"), choices, r.index("gold", choices.length));
      });
    },
  };
}

const winogrande: TaskDefinition = {
  name: "winogrande", kind: "choice", maxShots: 0,
  follows: "lm-eval winogrande (partial evaluation: the continuation after the blank is scored under each filled-in context)",
  load(dataDir, { limit }) {
    const path = join(dataDir, "multiple-choice", "winogrande.jsonl");
    return limitRows(readJsonl(path), limit).map(({ line, row }) => {
      const r = new RowReader(path, line, row);
      const contexts = r.strings("context_options");
      const continuation = r.string("continuation");
      return {
        id: `winogrande:${line}`, gold: r.index("gold", contexts.length),
        requests: contexts.map((context) => ({ context, continuation: ` ${continuation}` })),
        choiceLengths: contexts.map(() => continuation.length),
      };
    });
  },
};

const lambada: TaskDefinition = {
  name: "lambada", kind: "cloze", maxShots: 0,
  follows: "lm-eval lambada_openai (context = the text without its last word, continuation = \" \" + last word; acc = greedy match, and perplexity)",
  load(dataDir, { limit }) {
    const path = join(dataDir, "multiple-choice", "lambada_openai.jsonl");
    return limitRows(readJsonl(path), limit).map(({ line, row }) => {
      const r = new RowReader(path, line, row);
      const continuation = r.string("continuation");
      return { id: `lambada:${line}`, gold: 0, requests: [{ context: r.string("context"), continuation: ` ${continuation}` }], choiceLengths: [continuation.length] };
    });
  },
};

export const TASKS: readonly TaskDefinition[] = [
  mmlu, cmmlu, hellaswag,
  jsonlChoiceTask("piqa", "piqa.jsonl", "lm-eval piqa (\"Question: goal\\nAnswer:\", the two solutions)"),
  jsonlChoiceTask("boolq", "boolq.jsonl", "lm-eval boolq (passage, question, choices no/yes)"),
  jsonlChoiceTask("arc_easy", "arc_easy.jsonl", "lm-eval arc_easy (\"Question: ...\\nAnswer:\", the answer texts)"),
  jsonlChoiceTask("arc_challenge", "arc_challenge.jsonl", "lm-eval arc_challenge (\"Question: ...\\nAnswer:\", the answer texts)"),
  winogrande, lambada,
  jsonlChoiceTask("copa", "copa.jsonl", "lm-eval copa (premise with \"because\"/\"therefore\", the two alternatives)"),
  jsonlChoiceTask("openbookqa", "openbook_qa.jsonl", "lm-eval openbookqa (question stem, the answer texts)"),
  jsonlChoiceTask("siqa", "siqa.jsonl", "the data's letter-choice template (context, question, lettered answers; choices are the letters)"),
  jsonlChoiceTask("commonsense_qa", "commonsense_qa.jsonl", "lm-eval commonsense_qa (question with lettered choices; choices are the letters)"),
];

export const TASK_NAMES = TASKS.map((t) => t.name);

export function parseTaskList(text: string): TaskDefinition[] {
  const names = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  if (names.length === 0) throw new OptionError("--tasks is empty", { option: "--tasks", hint: `available tasks: ${TASK_NAMES.join(", ")}` });
  return names.map((name) => {
    const task = TASKS.find((t) => t.name === name);
    if (!task) throw new OptionError(`--tasks ${name} is not a known task`, { option: "--tasks", got: name, hint: `available tasks: ${TASK_NAMES.join(", ")}` });
    return task;
  });
}

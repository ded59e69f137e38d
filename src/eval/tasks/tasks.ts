// The benchmark tasks as lm-evaluation-harness 0.4.13 defines them, under its names: each item
// becomes log-likelihood requests (context, continuation) with the harness's prompt (doc_to_text),
// target delimiter " " and answer choices (doc_to_choice). The multiple-choice files in
// ../shared/data hold MosaicML llm-foundry's prompts; each task rebuilds the harness's prompt from
// them and refuses a row of another shape. What the data cannot give is in each task's `follows`.

import { join } from "node:path";
import { DataError, OptionError } from "../../errors.js";
import { readBzip2, readCsv, readJsonl, RowReader } from "./readers.js";
import { CMMLU_SUBJECTS, MMLU_CATEGORIES, MMLU_SUBJECTS } from "./subjects.js";

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
  /** What acc_norm divides each choice's log-likelihood by: the length of the choice (doc_to_choice) in characters, as lm-eval. */
  choiceLengths: number[];
  /** The subtask (e.g. mmlu_anatomy) of an item of a group. */
  subtask?: string;
}

export interface LoadOptions {
  shots: number;
  /** Items per task (per subject for MMLU/CMMLU), from the start. */
  limit?: number;
}

/** The metrics lm-eval reports for a task. */
export type MetricName = "acc" | "acc_norm" | "perplexity";

export interface TaskDefinition {
  /** lm-eval's task or group name. */
  name: string;
  /** The lm-eval task whose template this follows, and any difference the data forces. */
  follows: string;
  /** "choice": acc (and acc_norm) over the requests; "cloze": greedy-match accuracy and perplexity. */
  kind: "choice" | "cloze";
  /** Exactly the metrics lm-eval's task config lists, in its order. */
  metrics: readonly MetricName[];
  /** Largest --shots the data allows (a dev split); 0 when there is none. */
  maxShots: number;
  /**
   * A group (mmlu, cmmlu, mmlu_stem, ...): its subtasks' names, and the subgroups each subtask
   * belongs to (mmlu's categories), aggregated as lm-eval does (mean weighted by size).
   */
  group?: { subtasks: readonly string[]; subgroupOf?: (subtask: string) => string };
  load(dataDir: string, options: LoadOptions): TaskItem[];
}

const LETTERS = ["A", "B", "C", "D"];
const ANSWER_LETTERS = ["A", "B", "C", "D", "E"];

/** Length in code points, as Python's len() (lm-eval's acc_norm), not UTF-16 units. */
function characterCount(text: string): number {
  return [...text].length;
}

function choiceItem(id: string, context: string, choices: readonly string[], gold: number, subtask?: string): TaskItem {
  return {
    id, gold, choiceLengths: choices.map(characterCount),
    requests: choices.map((c) => ({ context, continuation: ` ${c}` })),
    ...(subtask === undefined ? {} : { subtask }),
  };
}

function limitRows<T>(rows: T[], limit?: number): T[] {
  return limit === undefined ? rows : rows.slice(0, limit);
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

interface ExamSuite {
  /** lm-eval's prefix of the subject tasks: "mmlu" -> mmlu_anatomy. */
  prefix: string;
  follows: string;
  folder: string;
  testSuffix: string;
  devSuffix: string;
  metrics: readonly MetricName[];
  rows: (path: string) => McRow[];
  description: (subject: string) => string;
  question: (row: McRow) => string;
}

/**
 * MMLU and CMMLU subjects: description, K examples from the subject's dev split (lm-eval's
 * first_n sampler), each "question answer-letter" and "\n\n", then the question.
 */
function examTask(suite: ExamSuite, name: string, subjects: readonly string[], group?: TaskDefinition["group"]): TaskDefinition {
  return {
    name, follows: suite.follows, kind: "choice", metrics: suite.metrics, maxShots: 5, ...(group ? { group } : {}),
    load(dataDir, { shots, limit }) {
      const root = join(dataDir, suite.folder);
      const items: TaskItem[] = [];
      for (const subject of subjects) {
        const dev = shots > 0 ? suite.rows(join(root, "dev", `${subject}${suite.devSuffix}.csv`)) : [];
        if (dev.length < shots) {
          throw new OptionError(`--shots ${shots}: ${suite.prefix} subject ${subject} has only ${dev.length} dev examples`, { option: "--shots", expected: `<= ${dev.length}`, got: shots });
        }
        const examples = dev.slice(0, shots).map((r) => `${suite.question(r)} ${LETTERS[r.answer]}\n\n`).join("");
        const prefix = suite.description(subject) + examples;
        const subtask = group ? `${suite.prefix}_${subject}` : undefined;
        limitRows(suite.rows(join(root, "test", `${subject}${suite.testSuffix}.csv`)), limit).forEach((r, i) => {
          items.push(choiceItem(`${subject}:${i}`, prefix + suite.question(r), LETTERS, r.answer, subtask));
        });
      }
      return items;
    },
  };
}

const MMLU: ExamSuite = {
  prefix: "mmlu", folder: "mmlu", testSuffix: "_test", devSuffix: "_dev", rows: mmluRows, metrics: ["acc"],
  follows: "lm-eval mmlu (default template; few-shot examples are the first K of the subject's dev split)",
  description: (subject) => `The following are multiple choice questions (with answers) about ${subject.replaceAll("_", " ")}.\n\n`,
  question: (r) => `${r.question.trim()}\nA. ${r.choices[0]}\nB. ${r.choices[1]}\nC. ${r.choices[2]}\nD. ${r.choices[3]}\nAnswer:`,
};

const CMMLU: ExamSuite = {
  prefix: "cmmlu", folder: "cmmlu", testSuffix: "", devSuffix: "", rows: cmmluRows, metrics: ["acc", "acc_norm"],
  follows: "lm-eval cmmlu (template, Chinese subject name and answer prompt; few-shot examples are the first K of the subject's dev split)",
  description: (subject) => `以下是关于${CMMLU_SUBJECTS[subject] ?? subject}的单项选择题，请直接给出正确答案的选项。\n\n`,
  question: (r) => `${r.question.trim()}\nA. ${r.choices[0]}\nB. ${r.choices[1]}\nC. ${r.choices[2]}\nD. ${r.choices[3]}\n答案：`,
};

const mmluSubjects = Object.keys(MMLU_SUBJECTS).sort();
const cmmluSubjects = Object.keys(CMMLU_SUBJECTS).sort();
const subjectOf = (subtask: string): string => subtask.slice(subtask.indexOf("_") + 1);

/** lm-eval's mmlu group: the four category groups, each the mean over its subjects weighted by size. */
const mmlu = examTask(MMLU, "mmlu", mmluSubjects, {
  subtasks: mmluSubjects.map((s) => `mmlu_${s}`), subgroupOf: (subtask) => `mmlu_${MMLU_SUBJECTS[subjectOf(subtask)]!}`,
});
const mmluCategories = MMLU_CATEGORIES.map((category) => {
  const subjects = mmluSubjects.filter((s) => MMLU_SUBJECTS[s] === category);
  return examTask(MMLU, `mmlu_${category}`, subjects, { subtasks: subjects.map((s) => `mmlu_${s}`) });
});
const cmmlu = examTask(CMMLU, "cmmlu", cmmluSubjects, { subtasks: cmmluSubjects.map((s) => `cmmlu_${s}`) });
const mmluSubjectTasks = mmluSubjects.map((s) => examTask(MMLU, `mmlu_${s}`, [s]));
const cmmluSubjectTasks = cmmluSubjects.map((s) => examTask(CMMLU, `cmmlu_${s}`, [s]));

/** lm-eval's HellaSwag text cleanup: strip, " [title]" to ". ", drop bracketed tags, collapse double spaces. */
export function hellaswagPreprocess(text: string): string {
  return text.trim().replaceAll(" [title]", ". ").replace(/\[.*?\]/g, "").replaceAll("  ", " ");
}

const hellaswag: TaskDefinition = {
  name: "hellaswag", kind: "choice", metrics: ["acc", "acc_norm"], maxShots: 0,
  follows: "lm-eval hellaswag (query \"activity: context\" and endings, both preprocessed as the harness does; the data file gives ctx_a and ctx_b already joined, so ctx_b is not re-capitalized as the harness does)",
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

/** One row of a {query, choices, gold} JSON-lines file rebuilt as the harness's prompt: the context and the choice texts. */
interface Prompt {
  context: string;
  choices: string[];
}

type Rebuild = (query: string, choices: string[], fail: (what: string) => never) => Prompt;

/** `text` with `prefix` removed, or a failure naming what the query should start with. */
function after(text: string, prefix: string, fail: (what: string) => never): string {
  if (!text.startsWith(prefix)) fail(`the query does not start with ${JSON.stringify(prefix)}`);
  return text.slice(prefix.length);
}

/**
 * A {query, choices, gold} JSON-lines set. The files hold MosaicML llm-foundry's prompts; `rebuild`
 * turns each back into the harness's doc_to_text and doc_to_choice, or refuses a row of another shape.
 */
function jsonlChoiceTask(name: string, file: string, metrics: readonly MetricName[], follows: string, rebuild: Rebuild): TaskDefinition {
  return {
    name, follows, kind: "choice", metrics, maxShots: 0,
    load(dataDir, { limit }) {
      const path = join(dataDir, "multiple-choice", file);
      return limitRows(readJsonl(path), limit).map(({ line, row }) => {
        const r = new RowReader(path, line, row);
        const files = r.strings("choices");
        const gold = r.index("gold", files.length);
        const { context, choices } = rebuild(r.string("query"), files, (what) => r.fail(what));
        return choiceItem(`${name}:${line}`, context, choices, gold);
      });
    },
  };
}

/** "Question: <question>" (ARC) -> the harness's "Question: <question>\nAnswer:". */
const arcPrompt: Rebuild = (query, choices, fail) => ({ context: `Question: ${after(query, "Question: ", fail)}\nAnswer:`, choices });

/** "Question: <goal>\n" (PIQA) -> "Question: <goal>\nAnswer:". */
const piqaPrompt: Rebuild = (query, choices, fail) => {
  if (!query.endsWith("\n")) fail("the query does not end with a newline after the goal");
  return { context: `Question: ${after(query, "Question: ", fail).slice(0, -1)}\nAnswer:`, choices };
};

/** "Passage: <passage>\nQuestion: <question>?" (BoolQ) -> "<passage>\nQuestion: <question>?\nAnswer:", choices no/yes. */
const boolqPrompt: Rebuild = (query, choices, fail) => {
  if (choices.join(",") !== "no,yes") fail(`the choices must be ["no", "yes"], got ${JSON.stringify(choices)}`);
  const body = after(query, "Passage: ", fail);
  if (!body.includes("\nQuestion: ") || !body.endsWith("?")) fail("the query is not \"Passage: ...\\nQuestion: ...?\"");
  return { context: `${body}\nAnswer:`, choices };
};

/**
 * "<premise without its period>, because|therefore" (COPA) -> the harness's premise and connector
 * without the comma; its choices are " " + the alternative with a lower-case first letter (so,
 * after the target delimiter, two spaces come before each).
 */
const copaPrompt: Rebuild = (query, choices, fail) => {
  const m = /^(.*), (because|therefore)$/s.exec(query);
  if (!m) return fail("the query does not end with \", because\" or \", therefore\"");
  return { context: `${m[1]} ${m[2]}`, choices: choices.map((c) => ` ${c.slice(0, 1).toLowerCase()}${c.slice(1)}`) };
};

/** Lettered answers "A. ...\nB. ...\n" up to "Answer:"; the letters must run A, B, ... in order. */
function letteredAnswers(text: string, count: number, fail: (what: string) => never): string[] {
  const lines = text.split("\n");
  if (lines.length !== count + 1 || lines[count] !== "Answer:") fail(`expected ${count} lettered answers and then "Answer:"`);
  return lines.slice(0, count).map((line, i) => after(line, `${ANSWER_LETTERS[i]}. `, fail));
}

/**
 * "Context: c\nQuestion: q\nChoices:\nA. a\nB. b\nAnswer:" (Social IQa, lettered) -> the harness's
 * "Q: c q\nA:" with the answer texts as the choices.
 */
const socialIqaPrompt: Rebuild = (query, choices, fail) => {
  const m = /^Context: (.*)\nQuestion: (.*)\nChoices:\n(.*)$/s.exec(query);
  if (!m) return fail("the query is not \"Context: ...\\nQuestion: ...\\nChoices:\\n...\"");
  return { context: `Q: ${m[1]} ${m[2]}\nA:`, choices: letteredAnswers(m[3]!, choices.length, fail) };
};

/**
 * "Question: q\nChoices:\nA. ...\nAnswer:" (CommonsenseQA) -> the harness's "Question: q\nA. ...\nAnswer:"
 * (no "Choices:" line), the letters as the choices.
 */
const commonsenseQaPrompt: Rebuild = (query, choices, fail) => {
  const m = /^Question: (.*)\nChoices:\n(.*)$/s.exec(query);
  if (!m) return fail("the query is not \"Question: ...\\nChoices:\\n...\"");
  const answers = letteredAnswers(m[2]!, choices.length, fail);
  if (choices.some((c, i) => c !== ANSWER_LETTERS[i])) fail(`the choices must be the letters ${ANSWER_LETTERS.slice(0, choices.length).join(", ")}`);
  return { context: `Question: ${m[1]!.trim()}\n${answers.map((a, i) => `${ANSWER_LETTERS[i]}. ${a}\n`).join("")}Answer:`, choices };
};

const winogrande: TaskDefinition = {
  name: "winogrande", kind: "choice", metrics: ["acc"], maxShots: 0,
  follows: "lm-eval winogrande (partial evaluation: the continuation after the blank is scored under each filled-in context)",
  load(dataDir, { limit }) {
    const path = join(dataDir, "multiple-choice", "winogrande.jsonl");
    return limitRows(readJsonl(path), limit).map(({ line, row }) => {
      const r = new RowReader(path, line, row);
      const contexts = r.strings("context_options");
      const continuation = r.string("continuation").trim();
      return {
        id: `winogrande:${line}`, gold: r.index("gold", contexts.length),
        requests: contexts.map((context) => ({ context, continuation: ` ${continuation}` })),
        choiceLengths: contexts.map(characterCount),
      };
    });
  },
};

const lambadaOpenai: TaskDefinition = {
  name: "lambada_openai", kind: "cloze", metrics: ["perplexity", "acc"], maxShots: 0,
  follows: "lm-eval lambada_openai (context = the text without its last word, continuation = \" \" + last word; acc = greedy match, perplexity = exp(-mean log-likelihood))",
  load(dataDir, { limit }) {
    const path = join(dataDir, "multiple-choice", "lambada_openai.jsonl");
    return limitRows(readJsonl(path), limit).map(({ line, row }) => {
      const r = new RowReader(path, line, row);
      const continuation = r.string("continuation");
      return { id: `lambada_openai:${line}`, gold: 0, requests: [{ context: r.string("context"), continuation: ` ${continuation}` }], choiceLengths: [characterCount(continuation) + 1] };
    });
  },
};

/** The tasks `--tasks` lists, in the order help shows them; subjects and categories are resolved by name. */
export const TASKS: readonly TaskDefinition[] = [
  mmlu, cmmlu, hellaswag,
  jsonlChoiceTask("piqa", "piqa.jsonl", ["acc", "acc_norm"], "lm-eval piqa (\"Question: goal\\nAnswer:\", the two solutions)", piqaPrompt),
  jsonlChoiceTask("boolq", "boolq.jsonl", ["acc"], "lm-eval boolq (\"passage\\nQuestion: question?\\nAnswer:\", choices no/yes)", boolqPrompt),
  jsonlChoiceTask("arc_easy", "arc_easy.jsonl", ["acc", "acc_norm"], "lm-eval arc_easy (\"Question: ...\\nAnswer:\", the answer texts)", arcPrompt),
  jsonlChoiceTask("arc_challenge", "arc_challenge.jsonl", ["acc", "acc_norm"], "lm-eval arc_challenge (\"Question: ...\\nAnswer:\", the answer texts)", arcPrompt),
  winogrande, lambadaOpenai,
  jsonlChoiceTask("copa", "copa.jsonl", ["acc"], "lm-eval copa (premise and \"because\"/\"therefore\" without a comma; choices \" \" + alternative with a lower-case first letter)", copaPrompt),
  jsonlChoiceTask("openbookqa", "openbook_qa.jsonl", ["acc", "acc_norm"], "lm-eval openbookqa (question stem, the answer texts)", (query, choices) => ({ context: query, choices })),
  jsonlChoiceTask("social_iqa", "siqa.jsonl", ["acc"], "lm-eval social_iqa (\"Q: context question\\nA:\", the answer texts); the data holds 2 of the 3 answers, so items have 2 choices", socialIqaPrompt),
  jsonlChoiceTask("commonsense_qa", "commonsense_qa.jsonl", ["acc"], "lm-eval commonsense_qa (question, lettered answers, \"Answer:\", the letters as choices); the data holds 4 of the 5 answers, so items have A-D", commonsenseQaPrompt),
];

/** This tool's earlier names for two of the tasks. */
const ALIASES: Readonly<Record<string, string>> = { lambada: "lambada_openai", siqa: "social_iqa" };

const BY_NAME = new Map<string, TaskDefinition>([...TASKS, ...mmluCategories, ...mmluSubjectTasks, ...cmmluSubjectTasks].map((t) => [t.name, t]));

export const TASK_NAMES = TASKS.map((t) => t.name);

/** The names `--tasks` accepts, as the hint lists them. */
const NAMES_HINT = `available tasks: ${TASK_NAMES.join(", ")}, mmlu_<subject>, mmlu_stem|humanities|social_sciences|other, cmmlu_<subject> (aliases: ${Object.entries(ALIASES).map(([a, b]) => `${a} = ${b}`).join(", ")})`;

/** A task by lm-eval name (or alias); undefined when unknown. */
export function findTask(name: string): TaskDefinition | undefined {
  return BY_NAME.get(ALIASES[name] ?? name);
}

export function parseTaskList(text: string, option = "--tasks"): TaskDefinition[] {
  const names = text.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  if (names.length === 0) throw new OptionError(`${option} is empty`, { option, hint: NAMES_HINT });
  return names.map((name) => {
    const task = findTask(name);
    if (!task) throw new OptionError(`${option} ${name} is not a known task`, { option, got: name, hint: NAMES_HINT });
    return task;
  });
}

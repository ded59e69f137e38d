// Benchmark data files: CSV (MMLU, CMMLU), JSON lines (the multiple-choice sets), and
// HellaSwag's bzip2 text (6 lines an item). Every malformed row is an error naming the file
// and line; nothing is skipped silently.

import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { DataError } from "../../errors.js";

function readText(path: string): string {
  if (!existsSync(path)) throw new DataError(`benchmark file not found: ${path}`, { file: path, option: "--data-dir", hint: "point --data-dir at the folder that holds mmlu/, cmmlu/, hellaswag/ and multiple-choice/" });
  return readFileSync(path, "utf8").replace(/\r\n?/g, "\n");
}

/** Rows of a CSV file with quoted fields ("" escapes a quote); returns rows with their 1-based line numbers. */
export function readCsv(path: string): { line: number; fields: string[] }[] {
  const text = readText(path);
  const rows: { line: number; fields: string[] }[] = [];
  let fields: string[] = [];
  let field = "";
  let quoted = false;
  let line = 1;
  let rowLine = 1;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') {
        quoted = false;
      } else {
        if (c === "\n") line++;
        field += c;
      }
    } else if (c === '"' && field === "") {
      quoted = true;
    } else if (c === ",") {
      fields.push(field);
      field = "";
    } else if (c === "\n") {
      fields.push(field);
      rows.push({ line: rowLine, fields });
      fields = [];
      field = "";
      line++;
      rowLine = line;
    } else {
      field += c;
    }
  }
  if (quoted) throw new DataError(`${path}:${rowLine}: a quoted field is not closed`, { file: path, hint: "the CSV file is truncated or corrupt" });
  if (field !== "" || fields.length > 0) {
    fields.push(field);
    rows.push({ line: rowLine, fields });
  }
  return rows;
}

/** JSON objects, one a line; blank lines allowed; returns each with its line number. */
export function readJsonl(path: string): { line: number; row: Record<string, unknown> }[] {
  const out: { line: number; row: Record<string, unknown> }[] = [];
  readText(path).split("\n").forEach((text, index) => {
    if (text.trim() === "") return;
    let row: unknown;
    try {
      row = JSON.parse(text);
    } catch (err) {
      throw new DataError(`${path}:${index + 1}: not valid JSON (${(err as Error).message})`, { file: path, hint: "each line must be one JSON object" });
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) throw new DataError(`${path}:${index + 1}: not a JSON object`, { file: path });
    out.push({ line: index + 1, row: row as Record<string, unknown> });
  });
  return out;
}

/** The text of a .bz2 file, through the system's bzip2 (Debian package bzip2). */
export function readBzip2(path: string): string {
  if (!existsSync(path)) throw new DataError(`benchmark file not found: ${path}`, { file: path, option: "--data-dir", hint: "point --data-dir at the folder that holds hellaswag/" });
  const r = spawnSync("bzip2", ["-dc", path], { maxBuffer: 1 << 30, encoding: "utf8" });
  if (r.error || r.status !== 0) {
    throw new DataError(`${path}: bzip2 could not decompress it (${r.error?.message ?? r.stderr.trim()})`, { file: path, hint: "install bzip2 (apt-get install bzip2), or check the file" });
  }
  return r.stdout.replace(/\r\n?/g, "\n");
}

/** Field checks that name the file and line. */
export class RowReader {
  constructor(readonly file: string, readonly line: number, private readonly row: Record<string, unknown>) {}

  fail(what: string): never {
    throw new DataError(`${this.file}:${this.line}: ${what}`, { file: this.file, hint: "fix or remove that row; no row is skipped silently" });
  }

  string(key: string): string {
    const v = this.row[key];
    if (typeof v !== "string") this.fail(`field "${key}" is ${v === undefined ? "missing" : `not a string (${JSON.stringify(v)})`}`);
    return v;
  }

  strings(key: string, min = 2): string[] {
    const v = this.row[key];
    if (!Array.isArray(v) || v.length < min || v.some((s) => typeof s !== "string")) this.fail(`field "${key}" must be a list of at least ${min} strings`);
    return v as string[];
  }

  index(key: string, count: number): number {
    const v = this.row[key];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= count) this.fail(`field "${key}" must be an answer index from 0 to ${count - 1}, got ${JSON.stringify(v)}`);
    return v;
  }
}

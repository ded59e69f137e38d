// Text data for scoring and evaluation: a .txt file is one document (or one per blank-line
// separated block with split "blank-line"); a .jsonl file has one document per line in "text".

import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { DataError } from "../errors.js";
import { readWholeFile } from "../formats/file.js";
import { parseJson } from "../formats/json.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";

export type SplitMode = "none" | "blank-line";

export interface TextData {
  path: string;
  sha256: string;
  documents: string[];
}

export function readTextData(path: string, split: SplitMode = "none"): TextData {
  if (!existsSync(path)) throw new DataError(`data file not found: ${path}`, { file: path, option: "--data", hint: "check the path" });
  const bytes = readWholeFile(path, DataError); // a folder or FIFO is refused, not read or waited on
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const text = bytes.toString("utf8").replace(/\r\n?/g, "\n");
  let documents: string[];
  if (/\.jsonl$/i.test(path)) {
    documents = [];
    text.split("\n").forEach((line, index) => {
      if (line.trim() === "") return;
      let row: unknown;
      try {
        row = parseJson(line);
      } catch (err) {
        throw new DataError(`${path}:${index + 1}: not valid JSON (${(err as Error).message})`, { file: path, hint: "each line must be a JSON object with a \"text\" field" });
      }
      const field = (row as { text?: unknown } | null)?.text;
      if (typeof field !== "string") throw new DataError(`${path}:${index + 1}: no string field "text"`, { file: path, hint: "each line must be a JSON object with a \"text\" field" });
      documents.push(field);
    });
  } else if (split === "blank-line") {
    documents = text.split(/\n[ \t]*\n/).map((block) => block.trim()).filter((block) => block.length > 0);
  } else {
    documents = text.trim().length > 0 ? [text] : [];
  }
  if (documents.length === 0) throw new DataError(`${path} contains no text`, { file: path, hint: "pass a file with some text in it" });
  return { path, sha256, documents };
}

/** Token ids of each document, starting with BOS when the tokenizer adds it. */
export function tokenizeDocuments(tokenizer: Tokenizer, documents: readonly string[]): number[][] {
  return documents.map((doc) => tokenizer.encode(doc));
}

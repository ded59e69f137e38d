// shortgpt side-by-side SCORE.json... --report DIR: the Block Influence of several models (say a
// Transformer and an RWKV or Mamba model, each scored with `shortgpt score --metric bi --json`)
// on one page, one panel per model, as in the paper's cross-architecture figure.

import { readFileSync } from "node:fs";
import { OptionError } from "../../errors.js";
import { fileSystemError } from "../../formats/file.js";
import { blockInfluenceOfScoreJson, sideBySidePage } from "../../report/sideBySide.js";
import { parse, str } from "../args.js";
import type { Command, CommandResult } from "../command.js";
import { table } from "../format.js";
import { checkReportOption, provenance, REPORT_OPTIONS, writeReportIfAsked } from "../report.js";

const usage = "shortgpt side-by-side SCORE.json SCORE.json... --report DIR [--json FILE]";

function readJson(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw fileSystemError(err, path);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new OptionError(`${path} is not JSON`, { hint: "give the files that shortgpt score --json wrote" });
  }
}

export const sideBySideCommand: Command = {
  name: "side-by-side",
  usage,
  summary: "Block Influence of several scored models (a Transformer and a recurrent model) on one report page",
  async run(argv): Promise<CommandResult> {
    const p = parse(argv, { json: { type: "string" }, ...REPORT_OPTIONS }, usage);
    if (p.positionals.length < 2) throw new OptionError("give at least two score JSON files", { hint: `usage: ${usage}` });
    if (str(p, "report") === undefined) throw new OptionError("missing --report DIR: the side-by-side page is a report", { option: "--report", hint: `usage: ${usage}` });
    checkReportOption(p);
    const models = p.positionals.map((path) => blockInfluenceOfScoreJson(readJson(path), path));
    const json = { models };
    const text = models.map((m) => `${m.model}\n${table(["layer", "BI"], m.layers.map((l) => [l.layer, l.bi.toFixed(5)]))}`).join("\n\n");
    const report = await writeReportIfAsked(p, () => sideBySidePage(models, provenance("side-by-side", { scores: p.positionals.join(", ") })), json);
    return { json, text: text + report };
  },
};

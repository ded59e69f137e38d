// shortgpt merge PART... --json OUT: the partial results of `score --shard i/n` or `eval --shard i/n`
// combined into the JSON a single run writes, after checking that they are all the parts of one run.

import { resolve } from "node:path";
import { OptionError } from "../../errors.js";
import { checkParts, mergePerplexity, mergeScore, mergeTasks, readPartial } from "../../shards/partial.js";
import { parse, str } from "../args.js";
import type { Command, CommandResult } from "../command.js";
import { type PerplexityInfo, perplexityOutput, type TasksInfo, tasksOutput } from "./eval.js";
import { type ScoreCommon, scoreJson, scoreText } from "./score.js";

const usage = "shortgpt merge PART.json... --json OUT";

export const mergeCommand: Command = {
  name: "merge",
  usage,
  summary: "combine the parts of a run split with --shard i/n (score, eval) into the result of a single run",
  async run(argv): Promise<CommandResult> {
    const p = parse(argv, { json: { type: "string" } }, usage);
    if (p.positionals.length === 0) throw new OptionError("give the partial JSON files to merge", { hint: `usage: ${usage}` });
    const out = str(p, "json");
    if (out === undefined) throw new OptionError("missing --json OUT: the merged result is a JSON file", { option: "--json", hint: `usage: ${usage}` });
    // A part overwritten by the merge would be lost if the merge had to be redone.
    if (p.positionals.some((part) => resolve(part) === resolve(out))) throw new OptionError(`--json ${out} is one of the parts`, { option: "--json", hint: "write the merged result to a new file" });
    const parts = checkParts(p.positionals.map((path) => ({ path, partial: readPartial(path) })));
    const first = parts[0]!.partial;
    const seconds = parts.reduce((s, x) => s + x.partial.seconds, 0);
    const from = `merged from ${parts.length} part${parts.length > 1 ? "s" : ""}`;
    if (first.command === "score") {
      const merged = mergeScore(parts);
      const common = first.common as unknown as ScoreCommon;
      return { json: scoreJson(merged, common, seconds), text: scoreText(merged, common, seconds, `(${from}), shards took`) };
    }
    const common = first.common as { model: string; skip: number[]; backend: { name: string; threads: number }; perplexity?: PerplexityInfo; tasks?: TasksInfo };
    const outputs = [];
    if (common.perplexity) outputs.push(perplexityOutput(mergePerplexity(parts), common.perplexity, seconds, common.skip));
    if (common.tasks) outputs.push(tasksOutput(mergeTasks(parts, common.tasks.shots), common.tasks));
    const json = Object.assign({ model: common.model, skip: common.skip, backend: common.backend }, ...outputs.map((x) => x.json)) as Record<string, unknown>;
    return { json, text: `${from}\n` + outputs.map((x) => x.text).join("\n\n") + ` [${common.backend.name}]` };
  },
};

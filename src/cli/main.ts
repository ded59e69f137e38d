#!/usr/bin/env node
// The shortgpt command line: dispatches to a command, prints its text, writes --json, and
// turns typed errors into one clear line and a non-zero exit code.

import { OptionError, ShortgptError } from "../errors.js";
import { writeJsonAtomically } from "../util/atomicWrite.js";
import type { Command } from "./command.js";
import { compareCommand } from "./commands/compare.js";
import { convertCommand } from "./commands/convert.js";
import { demoCommand } from "./commands/demo.js";
import { evalCommand } from "./commands/eval.js";
import { generateCommand } from "./commands/generate.js";
import { inspectCommand } from "./commands/inspect.js";
import { mergeCommand } from "./commands/merge.js";
import { pruneCommand } from "./commands/prune.js";
import { scoreCommand } from "./commands/score.js";
import { studyCommand } from "./commands/study.js";
import { sideBySideCommand } from "./commands/sideBySide.js";
import { sweepCommand } from "./commands/sweep.js";
import { tokenizeCommand } from "./commands/tokenize.js";
import { widthCommand } from "./commands/width.js";

const COMMANDS: Command[] = [demoCommand, inspectCommand, tokenizeCommand, scoreCommand, pruneCommand, sweepCommand, studyCommand, compareCommand, widthCommand, convertCommand, evalCommand, mergeCommand, generateCommand, sideBySideCommand];

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    "shortgpt: score the layers of a language model with Block Influence, remove the least influential, measure what changed.",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "usage:",
    ...COMMANDS.map((c) => `  ${c.usage}`),
    "",
    "Every command takes --json FILE for machine-readable output. See README.md for details.",
  ].join("\n");
}

/** Finds the value of --json in argv (the commands parse it too, as a known option). */
function jsonTarget(argv: string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--json") return argv[i + 1];
    if (a.startsWith("--json=")) return a.slice("--json=".length);
  }
  return undefined;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    process.stdout.write(help() + "\n");
    return name === undefined ? 2 : 0;
  }
  if (name === "--version") {
    process.stdout.write("shortgpt 0.1.0\n");
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  try {
    if (!command) throw new OptionError(`unknown command "${name}"`, { hint: `commands: ${COMMANDS.map((c) => c.name).join(", ")}` });
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(`${command.summary}\nusage: ${command.usage}\n`);
      return 0;
    }
    const result = await command.run(rest);
    process.stdout.write(result.text + "\n");
    const json = jsonTarget(rest);
    if (json !== undefined) writeJsonAtomically(json, result.json);
    return 0;
  } catch (err) {
    if (err instanceof ShortgptError) {
      process.stderr.write(`shortgpt ${name}: error: ${err.describe()}\n`);
      return err.code === "OPTION" ? 2 : 1;
    }
    process.stderr.write(`shortgpt ${name}: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 70;
  }
}

process.exitCode = await main(process.argv.slice(2));

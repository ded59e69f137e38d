// A fuzzing worker: a child process that runs `inspect` and `score` in-process (the same command
// code the CLI dispatches to) on each input the parent sends, and reports what each command did
// and the peak memory of the input. The parent kills it on a hang or a crash.

import { readFileSync, writeFileSync } from "node:fs";
import { inspectCommand } from "../src/cli/commands/inspect.js";
import { scoreCommand } from "../src/cli/commands/score.js";
import type { Command } from "../src/cli/command.js";
import { ShortgptError } from "../src/errors.js";

export interface WorkerJob {
  id: number;
  /** Each a command line as given to `shortgpt` (command name first). */
  commands: string[][];
}

export interface CommandOutcome {
  command: string;
  /** accepted: it ran; refused: a typed error (exit 1 or 2 from the CLI); internal: any other throw (exit 70). */
  kind: "accepted" | "refused" | "internal";
  exitCode: 0 | 1 | 2 | 70;
  /** The line the CLI would print (typed errors), or the stack (internal errors). */
  message: string;
}

export interface WorkerResult {
  id: number;
  outcomes: CommandOutcome[];
  /** Peak RSS while the job ran minus the RSS when it started, in kB; -1 when the kernel cannot reset the peak. */
  peakDeltaKb: number;
  ms: number;
}

const COMMANDS: Record<string, Command> = { inspect: inspectCommand, score: scoreCommand };

function statusKb(field: "VmHWM" | "VmRSS"): number {
  const m = new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync("/proc/self/status", "utf8"));
  return m ? Number(m[1]) : 0;
}

/** Resets the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); false where that is not possible. */
function resetPeak(): boolean {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

async function run(argv: string[]): Promise<CommandOutcome> {
  const [name, ...rest] = argv;
  const command = COMMANDS[name!]!;
  try {
    await command.run(rest);
    return { command: argv.join(" "), kind: "accepted", exitCode: 0, message: "" };
  } catch (err) {
    if (err instanceof ShortgptError) {
      return { command: argv.join(" "), kind: "refused", exitCode: err.code === "OPTION" ? 2 : 1, message: err.describe() };
    }
    return { command: argv.join(" "), kind: "internal", exitCode: 70, message: (err as Error).stack ?? String(err) };
  }
}

process.on("message", (job: WorkerJob) => {
  void (async () => {
    const started = Date.now();
    const canMeasure = resetPeak();
    const base = statusKb("VmRSS");
    const outcomes: CommandOutcome[] = [];
    for (const argv of job.commands) outcomes.push(await run(argv));
    const result: WorkerResult = { id: job.id, outcomes, peakDeltaKb: canMeasure ? statusKb("VmHWM") - base : -1, ms: Date.now() - started };
    process.send!(result);
  })();
});
process.send!({ ready: true });

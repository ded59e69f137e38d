// npm run fuzz -- --seconds N [--seed S] [--inputs N] [--out DIR] [--json FILE] [--workers N] [--cli-every N]
//
// Structure-aware fuzzing of every file shortgpt reads: mutations of real GGUF, safetensors,
// llama2.c, tokenizer.bin, tokenizer.json and config.json files, each run through `inspect` and
// `score` in a worker process (and every Nth through the real CLI) under a time and memory limit.
// Findings: hangs, crashes, internal errors (exit 70), stack traces in a message, peak RSS beyond
// a bound tied to the input's size, and any file written or changed. Exits 1 when it finds any.

import { type ChildProcess, fork, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { convertModel } from "../src/convert/convertModel.js";
import { llama2cLayout as tensorLayout, readLlama2c } from "../src/formats/llama2c.js";
import { sharedPath } from "../src/shared.js";
import { type BinaryLayout, ggufLayout, llama2cLayout, tokenizerBinLayout } from "./fields.js";
import { createRng, type Mutated, mutateBinary, mutateJson, mutateSafetensors, type Rng } from "./mutate.js";
import type { WorkerJob, WorkerResult } from "./worker.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(HERE, "..", "src", "cli", "main.js");

export const FORMATS = ["gguf", "llama2c", "tokenizer.bin", "safetensors", "config.json", "tokenizer.json"] as const;
type Format = (typeof FORMATS)[number];
export const FINDING_CLASSES = ["hang", "crash", "internal", "stack-trace", "over-allocation", "write"] as const;
type FindingClass = (typeof FINDING_CLASSES)[number];

/** Peak RSS an input may add: a fixed allowance for the runtime and the tokenizer, plus 16 bytes per input byte. */
export function memoryBoundKb(inputBytes: number): number {
  return 192 * 1024 + Math.ceil((16 * inputBytes) / 1024);
}

interface Seeds {
  dir: string;
  gguf: Buffer;
  ggufLayout: BinaryLayout;
  bin: Buffer;
  binLayout: BinaryLayout;
  tok: Buffer;
  tokLayout: BinaryLayout;
  hfDir: string;
  data: string;
}

/** The seed corpus: the real stories260K files, and the same model converted to a Hugging Face folder by shortgpt. */
function prepareSeeds(work: string): Seeds {
  const dir = join(work, "seeds");
  mkdirSync(dir);
  const bin = readFileSync(sharedPath("models", "stories260K", "stories260K.bin"));
  const tokPath = sharedPath("models", "stories260K", "tok512.bin");
  const hfDir = join(dir, "hf");
  convertModel(sharedPath("models", "stories260K", "stories260K.bin"), hfDir, { to: "safetensors", tokenizer: tokPath });
  const data = join(dir, "data.txt");
  writeFileSync(data, readFileSync(sharedPath("data", "tinystories", "tinystories_val.txt"), "utf8").slice(0, 4000));
  const gguf = readFileSync(sharedPath("models", "stories260K", "stories260K.gguf"));
  const tok = readFileSync(tokPath);
  const header = readLlama2c(sharedPath("models", "stories260K", "stories260K.bin"));
  const ends = tensorLayout(header.header).map((t) => t.offset + t.byteLength);
  header.file.close();
  return { dir, gguf, ggufLayout: ggufLayout(gguf), bin, binLayout: llama2cLayout(bin, ends), tok, tokLayout: tokenizerBinLayout(tok), hfDir, data };
}

export interface Case {
  index: number;
  format: Format;
  dir: string;
  what: string;
  inputBytes: number;
  model: string;
  extra: string[];
}

/** Writes input `index`: one file of one format mutated, its siblings copied unchanged. */
function makeCase(seeds: Seeds, casesDir: string, index: number, format: Format, rng: Rng): Case {
  const dir = join(casesDir, `c${index}`);
  mkdirSync(dir);
  let mutated: Mutated;
  let file: string;
  if (format === "gguf") {
    mutated = mutateBinary(seeds.gguf, seeds.ggufLayout, rng);
    file = "m.gguf";
    writeFileSync(join(dir, file), mutated.bytes);
    return { index, format, dir, what: `m.gguf: ${mutated.what}`, inputBytes: mutated.bytes.length, model: join(dir, file), extra: [] };
  }
  if (format === "llama2c" || format === "tokenizer.bin") {
    const model = format === "llama2c" ? mutateBinary(seeds.bin, seeds.binLayout, rng) : { bytes: seeds.bin, what: "" };
    const tok = format === "tokenizer.bin" ? mutateBinary(seeds.tok, seeds.tokLayout, rng) : { bytes: seeds.tok, what: "" };
    writeFileSync(join(dir, "m.bin"), model.bytes);
    writeFileSync(join(dir, "tok.bin"), tok.bytes);
    const what = format === "llama2c" ? `m.bin: ${model.what}` : `tok.bin: ${tok.what}`;
    return { index, format, dir, what, inputBytes: model.bytes.length + tok.bytes.length, model: join(dir, "m.bin"), extra: ["--tokenizer", join(dir, "tok.bin")] };
  }
  const model = join(dir, "model");
  cpSync(seeds.hfDir, model, { recursive: true });
  if (format === "safetensors") {
    file = "model.safetensors";
    mutated = mutateSafetensors(readFileSync(join(model, file)), rng);
  } else if (format === "config.json") {
    file = "config.json";
    mutated = mutateJson(readFileSync(join(model, file), "utf8"), rng, true);
  } else {
    file = rng.next() < 0.7 ? "tokenizer.json" : "tokenizer_config.json";
    mutated = mutateJson(readFileSync(join(model, file), "utf8"), rng, false);
  }
  writeFileSync(join(model, file), mutated.bytes);
  const inputBytes = readdirSync(model).reduce((n, f) => n + statSync(join(model, f)).size, 0);
  return { index, format, dir, what: `${file}: ${mutated.what}`, inputBytes, model, extra: [] };
}

function commandsFor(c: Case, data: string): string[][] {
  return [
    ["inspect", c.model, ...c.extra],
    ["score", c.model, ...c.extra, "--data", data, "--seq-len", "32", "--max-tokens", "64", "--backend", "reference", "--threads", "1"],
  ];
}

/** Every file under `dir` with its size and modification time, to prove nothing was written. */
function snapshot(dir: string): string {
  const lines: string[] = [];
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const s = statSync(p);
      lines.push(`${p} ${s.size} ${s.mtimeMs}`);
      if (s.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return lines.join("\n");
}

export type JobOutcome =
  | { kind: "result"; result: WorkerResult }
  | { kind: "hang" }
  | { kind: "crash"; detail: string }
  | { kind: "rss"; kb: number };

/** A worker child: one job at a time, killed and replaced after a hang, a crash or runaway memory. */
class WorkerSlot {
  private child: ChildProcess | undefined;
  private stderr = "";
  private ready: Promise<void> | undefined;

  constructor(private readonly cwd: string, private readonly hardCapKb: number) {}

  private start(): Promise<void> {
    this.stderr = "";
    const child = fork(join(HERE, "worker.js"), [], {
      cwd: this.cwd, stdio: ["ignore", "ignore", "pipe", "ipc"], env: { ...process.env, CI: "true" }, execArgv: ["--max-old-space-size=2048"],
    });
    child.stderr!.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-4000);
    });
    this.child = child;
    return new Promise((resolveReady) => child.once("message", () => resolveReady()));
  }

  async run(job: WorkerJob, timeoutMs: number): Promise<JobOutcome> {
    this.ready ??= this.start();
    await this.ready;
    const child = this.child!;
    return new Promise<JobOutcome>((done) => {
      let finished = false;
      const finish = (outcome: JobOutcome, kill: boolean): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        clearInterval(watch);
        child.off("message", onMessage);
        child.off("exit", onExit);
        if (kill) {
          child.kill("SIGKILL");
          this.ready = undefined;
        }
        done(outcome);
      };
      const onMessage = (m: WorkerResult): void => finish({ kind: "result", result: m }, false);
      const onExit = (code: number | null, signal: string | null): void => {
        this.ready = undefined;
        finish({ kind: "crash", detail: `worker exited (code ${code}, signal ${signal}): ${this.stderr.trim().split("\n").slice(-3).join(" | ")}` }, false);
      };
      const timer = setTimeout(() => finish({ kind: "hang" }, true), timeoutMs);
      // Runaway memory kills the worker before it can exhaust the machine.
      const watch = setInterval(() => {
        try {
          const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? 0);
          if (kb > this.hardCapKb) finish({ kind: "rss", kb }, true);
        } catch {
          // the process is gone; its exit event reports it
        }
      }, 50);
      child.on("message", onMessage);
      child.once("exit", onExit);
      child.send(job);
    });
  }

  close(): void {
    this.child?.kill("SIGKILL");
  }
}

interface Finding {
  index: number;
  format: Format;
  class: FindingClass;
  what: string;
  message: string;
}

const STACK = /RangeError|TypeError|ReferenceError|\n\s+at |internal error/;

/** A typed error's message must be one line, without a stack or a JS error name, and short enough to read (class "stack-trace" otherwise). */
function oneShortLine(message: string): boolean {
  return !message.includes("\n") && !STACK.test(message) && message.length <= 4000;
}

/** Classifies one input's run; returns the findings (empty when it was accepted or refused cleanly). */
export function classify(c: Case, outcome: JobOutcome, wrote: string | undefined): { findings: Omit<Finding, "index" | "format" | "what">[]; accepted: boolean } {
  const findings: Omit<Finding, "index" | "format" | "what">[] = [];
  if (wrote) findings.push({ class: "write", message: wrote });
  if (outcome.kind === "hang") return { findings: [...findings, { class: "hang", message: "no answer within the time limit" }], accepted: false };
  if (outcome.kind === "rss") return { findings: [...findings, { class: "over-allocation", message: `RSS reached ${outcome.kb} kB` }], accepted: false };
  if (outcome.kind === "crash") {
    const oom = /heap out of memory|Allocation failed/.test(outcome.detail);
    return { findings: [...findings, { class: oom ? "over-allocation" : "crash", message: outcome.detail }], accepted: false };
  }
  const { result } = outcome;
  for (const o of result.outcomes) {
    if (o.kind === "internal") findings.push({ class: "internal", message: `${o.command}: ${o.message}` });
    else if (o.kind === "refused" && !oneShortLine(o.message)) findings.push({ class: "stack-trace", message: `${o.command}: ${o.message.slice(0, 2000)}` });
  }
  const bound = memoryBoundKb(c.inputBytes);
  if (result.peakDeltaKb > bound) findings.push({ class: "over-allocation", message: `peak RSS grew by ${result.peakDeltaKb} kB, bound ${bound} kB for ${c.inputBytes} input bytes` });
  return { findings, accepted: result.outcomes[0]!.kind === "accepted" };
}

/** The real CLI on one input: exit code, one line, no stack, within time and memory. */
function cliCheck(c: Case, peakScript: string, timeoutMs: number, cwd: string): Omit<Finding, "index" | "format" | "what">[] {
  const r = spawnSync(process.execPath, ["--require", peakScript, CLI, "inspect", c.model, ...c.extra], {
    encoding: "utf8", timeout: timeoutMs, cwd, env: { ...process.env, CI: "true" }, maxBuffer: 64 << 20,
  });
  const stderr = r.stderr ?? "";
  const timedOut = (r.error as { code?: string } | undefined)?.code === "ETIMEDOUT" || r.signal === "SIGTERM";
  if (r.error || r.signal) return [{ class: timedOut ? "hang" : "crash", message: `CLI inspect: ${r.error?.message ?? r.signal}` }];
  const out: Omit<Finding, "index" | "format" | "what">[] = [];
  if (r.status === 70) out.push({ class: "internal", message: `CLI inspect exit 70: ${stderr.slice(0, 500)}` });
  else if (r.status !== 0 && r.status !== 1 && r.status !== 2) out.push({ class: "crash", message: `CLI inspect exit ${r.status}: ${stderr.slice(0, 500)}` });
  else if (r.status !== 0 && !oneShortLine(stderr.trim())) out.push({ class: "stack-trace", message: `CLI inspect: ${stderr.slice(0, 500)}` });
  const peak = Number(/PEAK (\d+)/.exec(r.stdout ?? "")?.[1] ?? 0);
  // The CLI's own start-up (node, modules) is about 80 MB; the input may add the same bound as in the worker.
  if (peak > 128 * 1024 + memoryBoundKb(c.inputBytes)) out.push({ class: "over-allocation", message: `CLI inspect peak RSS ${peak} kB` });
  return out;
}

interface Options {
  seconds: number;
  seed: number;
  maxInputs: number;
  out: string;
  json: string | undefined;
  workers: number;
  cliEvery: number;
  timeoutMs: number;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: "string" }, seed: { type: "string" }, inputs: { type: "string" }, out: { type: "string" }, json: { type: "string" },
      workers: { type: "string" }, "cli-every": { type: "string" }, "timeout-ms": { type: "string" },
    },
  });
  const num = (v: string | undefined, fallback: number, name: string): number => {
    if (v === undefined) return fallback;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} ${v} is not a non-negative number`);
    return n;
  };
  return {
    seconds: num(values.seconds, 60, "seconds"), seed: num(values.seed, 1, "seed"), maxInputs: num(values.inputs, Infinity, "inputs"),
    out: values.out ?? "fuzz-findings", json: values.json, workers: Math.max(1, num(values.workers, 1, "workers")),
    cliEvery: num(values["cli-every"], 25, "cli-every"), timeoutMs: num(values["timeout-ms"], 10_000, "timeout-ms"),
  };
}

export interface FuzzSummary {
  command: string;
  seed: number;
  seconds: number;
  inputs: number;
  inputsPerSecond: number;
  cliChecks: number;
  memoryBound: string;
  classes: Record<"accepted" | "refused" | FindingClass, number>;
  /**
   * Per format: inputs; accepted (inspect opened it) or refused (a typed error) or findings; scored
   * (score also ran to the end); and the largest peak-RSS growth of one input (kB).
   */
  perFormat: Record<Format, { inputs: number; accepted: number; refused: number; findings: number; scored: number; maxPeakGrowthKb: number }>;
  findings: Finding[];
  findingsDir: string;
}

async function main(argv: string[]): Promise<number> {
  const options = parseOptions(argv);
  const work = mkdtempSync(join(tmpdir(), "shortgpt-fuzz-"));
  const cwd = join(work, "cwd");
  const casesDir = join(work, "cases");
  mkdirSync(cwd);
  mkdirSync(casesDir);
  const peakScript = join(work, "peak.cjs");
  writeFileSync(peakScript, `process.on("exit", () => { const m = /VmHWM:\\s+(\\d+)/.exec(require("fs").readFileSync("/proc/self/status", "utf8")); process.stdout.write("\\nPEAK " + (m ? m[1] : 0) + "\\n"); });\n`);
  const seeds = prepareSeeds(work);
  const seedSnapshot = snapshot(seeds.dir);
  const classes = Object.fromEntries(["accepted", "refused", ...FINDING_CLASSES].map((k) => [k, 0])) as FuzzSummary["classes"];
  const perFormat = Object.fromEntries(FORMATS.map((f) => [f, { inputs: 0, accepted: 0, refused: 0, findings: 0, scored: 0, maxPeakGrowthKb: 0 }])) as FuzzSummary["perFormat"];
  const findings: Finding[] = [];
  const saved = new Map<FindingClass, number>();
  const started = Date.now();
  const deadline = started + options.seconds * 1000;
  let next = 0;
  let cliChecks = 0;

  const record = (c: Case, found: Omit<Finding, "index" | "format" | "what">[], accepted: boolean): void => {
    perFormat[c.format].inputs++;
    if (found.length === 0) {
      classes[accepted ? "accepted" : "refused"]++;
      perFormat[c.format][accepted ? "accepted" : "refused"]++;
      return;
    }
    perFormat[c.format].findings++;
    for (const f of found) {
      classes[f.class]++;
      findings.push({ index: c.index, format: c.format, what: c.what, ...f });
      // The reproducer: the input's files and what was found, at most 20 per class.
      const n = saved.get(f.class) ?? 0;
      if (n < 20) {
        saved.set(f.class, n + 1);
        const dest = join(options.out, `${f.class}-${c.index}-${c.format}`);
        mkdirSync(dest, { recursive: true });
        // The input may be gone (a finding can be that the run removed it): the description is kept regardless.
        if (existsSync(c.dir)) cpSync(c.dir, join(dest, "input"), { recursive: true });
        writeFileSync(join(dest, "finding.json"), JSON.stringify({ seed: options.seed, index: c.index, format: c.format, what: c.what, class: f.class, message: f.message }, null, 2) + "\n");
      }
    }
  };

  const slots = Array.from({ length: options.workers }, () => new WorkerSlot(cwd, 2 * 1024 * 1024));
  await Promise.all(slots.map(async (slot) => {
    while (Date.now() < deadline && next < options.maxInputs) {
      const index = next++;
      const rng = createRng((Math.imul(options.seed, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);
      const c = makeCase(seeds, casesDir, index, FORMATS[index % FORMATS.length]!, rng);
      const before = snapshot(c.dir);
      const outcome = await slot.run({ id: index, commands: commandsFor(c, join(seeds.dir, "data.txt")) }, options.timeoutMs);
      const after = snapshot(c.dir);
      const stray = readdirSync(cwd);
      const wrote = before !== after ? "the input folder changed" : stray.length > 0 ? `files appeared in the working folder: ${stray.join(", ")}` : undefined;
      const { findings: found, accepted } = classify(c, outcome, wrote);
      if (outcome.kind === "result") {
        perFormat[c.format].maxPeakGrowthKb = Math.max(perFormat[c.format].maxPeakGrowthKb, outcome.result.peakDeltaKb);
        if (outcome.result.outcomes[1]?.kind === "accepted") perFormat[c.format].scored++;
      }
      if (options.cliEvery > 0 && index % options.cliEvery === 0) {
        cliChecks++;
        found.push(...cliCheck(c, peakScript, options.timeoutMs, cwd));
      }
      record(c, found, accepted);
      for (const f of stray) rmSync(join(cwd, f), { recursive: true, force: true });
      rmSync(c.dir, { recursive: true, force: true });
    }
    slot.close();
  }));
  if (snapshot(seeds.dir) !== seedSnapshot) {
    classes.write++;
    findings.push({ index: -1, format: "gguf", class: "write", what: "seed corpus", message: "a seed file changed during the run" });
  }
  const seconds = (Date.now() - started) / 1000;
  const inputs = FORMATS.reduce((n, f) => n + perFormat[f].inputs, 0);
  const summary: FuzzSummary = {
    command: `npm run fuzz -- ${argv.join(" ")}`.trim(), seed: options.seed, seconds: Number(seconds.toFixed(1)), inputs,
    inputsPerSecond: Number((inputs / seconds).toFixed(2)), cliChecks, memoryBound: "peak RSS growth <= 192 MiB + 16 x input bytes",
    classes, perFormat, findings: findings.slice(0, 200), findingsDir: resolve(options.out),
  };
  rmSync(work, { recursive: true, force: true });
  const text = JSON.stringify(summary, null, 2);
  process.stdout.write(text + "\n");
  if (options.json) writeFileSync(options.json, text + "\n");
  return findings.length > 0 ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main(process.argv.slice(2));
}

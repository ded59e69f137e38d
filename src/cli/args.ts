// Option parsing shared by the commands: typed values with errors that name the option.

import { parseArgs, type ParseArgsConfig } from "node:util";
import { OptionError } from "../errors.js";

export type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

export interface Parsed {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parse(argv: string[], options: OptionSpec, usage: string): Parsed {
  try {
    const { values, positionals } = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
    return { values: values as Record<string, string | boolean | undefined>, positionals };
  } catch (err) {
    throw new OptionError((err as Error).message.split("\n")[0]!, { hint: `usage: ${usage}` });
  }
}

export function str(p: Parsed, name: string): string | undefined {
  const v = p.values[name];
  return typeof v === "string" ? v : undefined;
}

export function flag(p: Parsed, name: string): boolean {
  return p.values[name] === true;
}

/** An integer option within [min, max], or undefined when not given. */
export function int(p: Parsed, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const text = str(p, name);
  if (text === undefined) return undefined;
  if (!/^-?\d+$/.test(text.trim())) throw new OptionError(`--${name} "${text}" is not an integer`, { option: `--${name}` });
  const v = Number(text);
  if (v < min || v > max) throw new OptionError(`--${name} ${v} must be between ${min} and ${max}`, { option: `--${name}`, got: v });
  return v;
}

export function num(p: Parsed, name: string, min: number, max = Infinity): number | undefined {
  const text = str(p, name);
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v)) throw new OptionError(`--${name} "${text}" is not a number`, { option: `--${name}` });
  if (v < min || v > max) throw new OptionError(`--${name} ${v} must be between ${min} and ${max}`, { option: `--${name}`, got: v });
  return v;
}

export function onePositional(p: Parsed, what: string, usage: string): string {
  if (p.positionals.length !== 1) {
    throw new OptionError(p.positionals.length === 0 ? `missing ${what}` : `expected one ${what}, got ${p.positionals.length}: ${p.positionals.join(" ")}`, { hint: `usage: ${usage}` });
  }
  return p.positionals[0]!;
}

export function split(p: Parsed): "none" | "blank-line" {
  const v = str(p, "split") ?? "none";
  if (v !== "none" && v !== "blank-line") throw new OptionError(`--split "${v}": expected none or blank-line`, { option: "--split" });
  return v;
}

export const MODEL_OPTIONS: OptionSpec = {
  tokenizer: { type: "string" },
  json: { type: "string" },
};

export const DATA_OPTIONS: OptionSpec = {
  data: { type: "string" },
  split: { type: "string" },
  "seq-len": { type: "string" },
  stride: { type: "string" },
  "max-tokens": { type: "string" },
};

/** Options of the benchmark tasks that `compare` and `sweep` evaluate. */
export const EVAL_OPTIONS: OptionSpec = {
  eval: { type: "string" },
  "data-dir": { type: "string" },
  shots: { type: "string" },
  limit: { type: "string" },
  bos: { type: "boolean" },
  "no-bos": { type: "boolean" },
};

/** --bos / --no-bos: BOS before every benchmark context, or none; undefined: as the model's tokenizer does. */
export function bosFromArgs(p: Parsed): boolean | undefined {
  if (flag(p, "bos") && flag(p, "no-bos")) throw new OptionError("give --bos or --no-bos, not both", { option: "--bos", hint: "without either, contexts start with BOS exactly when the model's tokenizer adds it" });
  return flag(p, "bos") ? true : flag(p, "no-bos") ? false : undefined;
}

export function evalSettingsFromArgs(p: Parsed): { dataDir?: string; shots: number; limit?: number; bos?: boolean } {
  const dataDir = str(p, "data-dir");
  const limit = int(p, "limit", 1);
  const bos = bosFromArgs(p);
  return { shots: int(p, "shots", 0, 1000) ?? 0, ...(bos === undefined ? {} : { bos }), ...(dataDir === undefined ? {} : { dataDir }), ...(limit === undefined ? {} : { limit }) };
}

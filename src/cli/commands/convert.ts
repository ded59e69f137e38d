// shortgpt convert IN --to gguf|safetensors OUT: rewrite a Llama checkpoint in another format and dtype.

import { CONVERT_TARGETS, type ConvertTarget, convertModel, TARGET_DTYPES } from "../../convert/convertModel.js";
import { OptionError } from "../../errors.js";
import { flag, parse, str } from "../args.js";
import type { Command } from "../command.js";
import { modelPathFromArgs } from "../common.js";
import { table } from "../format.js";
import { Progress } from "../progress.js";

const usage = "shortgpt convert IN --to gguf|safetensors OUT [--dtype F32|F16|BF16|Q8_0|Q6_K|Q5_K|Q5_1|Q5_0|Q4_K|Q4_0] [--tokenizer FILE] [--force] [--json FILE]";

export const convertCommand: Command = {
  name: "convert",
  usage,
  summary: "rewrite a model as GGUF (F32/F16/BF16/Q8_0/Q4_0/Q5_0/Q5_1 and K-quants Q4_K/Q5_K/Q6_K) or a Hugging Face safetensors directory (F32/F16/BF16)",
  async run(argv) {
    const p = parse(argv, { to: { type: "string" }, dtype: { type: "string" }, tokenizer: { type: "string" }, force: { type: "boolean" }, json: { type: "string" } }, usage);
    if (p.positionals.length !== 2) throw new OptionError(`expected IN and OUT, got ${p.positionals.length} paths`, { hint: `usage: ${usage}` });
    const [named, output] = p.positionals as [string, string];
    const to = str(p, "to");
    if (to === undefined || !(CONVERT_TARGETS as readonly string[]).includes(to)) {
      throw new OptionError(to === undefined ? "missing --to" : `--to ${to} is not a known target`, { option: "--to", hint: `choose one of: ${CONVERT_TARGETS.join(", ")}` });
    }
    const target = to as ConvertTarget;
    const dtype = str(p, "dtype");
    if (dtype !== undefined && !(TARGET_DTYPES[target] as readonly string[]).includes(dtype)) {
      throw new OptionError(`--dtype ${dtype} cannot be written to ${target}`, { option: "--dtype", got: dtype, hint: `choose one of: ${TARGET_DTYPES[target].join(", ")}` });
    }
    const tokenizer = str(p, "tokenizer");
    const input = await modelPathFromArgs(named);
    const progress = new Progress("convert", "tensors");
    const result = convertModel(input, output, {
      to: target, force: flag(p, "force"),
      ...(dtype === undefined ? {} : { dtype }),
      ...(tokenizer === undefined ? {} : { tokenizer }),
      onTensor: (done, total) => progress.update(done, total),
    });
    progress.done();
    const rows: [string, string | number][] = [
      ["from", `${result.input} (${result.from})`], ["to", `${result.output} (${result.to})`], ["dtype", result.dtype],
      ["tensors", result.tensors], ["tensor bytes", result.bytesWritten.toLocaleString("en-US")], ["tokenizer", result.tokenizer],
      ...result.fallbacks.map((f): [string, string] => [`fallback ${f.tensor}`, `${f.dtype}: ${f.reason}`]),
    ];
    return { json: result, text: table(["field", "value"], rows) };
  },
};

// shortgpt width MODEL --out DIR --method ffn-channels|slicegpt (--match-layers K | --channels N |
// --hidden-size D) --data CALIB: the width baseline of depth pruning. Removes FFN channels or
// slices the hidden size (SliceGPT), by calibration statistics, and writes a Hugging Face
// directory (smaller intermediate_size / hidden_size), plus DIR.json recording what was done.

import { OptionError, UnsupportedError } from "../../errors.js";
import { writeWidthHf } from "../../prune/writeWidthHf.js";
import { checkOutputPath, writeJsonAtomically } from "../../util/atomicWrite.js";
import { depthParameterCounts, parseWidthMethod, widthPrune, widthStatsOf, type WidthSize } from "../../widthPipeline.js";
import { DATA_OPTIONS, flag, int, MODEL_OPTIONS, onePositional, parse, type Parsed, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, modelPathFromArgs, openFromArgs, windowsFromArgs } from "../common.js";
import { Progress } from "../progress.js";

const usage = "shortgpt width MODEL --out DIR --method ffn-channels|slicegpt (--match-layers K | --channels N | --hidden-size D) --data CALIB "
  + "[--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--backend B] [--threads N] [--precision bf16|fp32] [--force] [--json FILE]";

function sizeFromArgs(p: Parsed, nLayers: number): WidthSize {
  const match = int(p, "match-layers", 1, nLayers - 1);
  const channels = int(p, "channels", 0);
  const hidden = int(p, "hidden-size", 1);
  const given = [match, channels, hidden].filter((v) => v !== undefined).length;
  if (given !== 1) throw new OptionError("give exactly one of --match-layers K, --channels N, --hidden-size D", { option: "--match-layers", hint: `usage: ${usage}` });
  if (match !== undefined) return { matchLayers: match };
  return channels !== undefined ? { channelsRemoved: channels } : { hiddenSize: hidden! };
}

export const widthCommand: Command = {
  name: "width",
  usage,
  summary: "width baseline: remove FFN channels or slice the hidden size (SliceGPT) by calibration data; writes a Hugging Face directory",
  async run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, out: { type: "string" }, method: { type: "string" }, "match-layers": { type: "string" },
      channels: { type: "string" }, "hidden-size": { type: "string" }, force: { type: "boolean" },
    }, usage);
    const input = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const out = str(p, "out");
    if (out === undefined) throw new OptionError("missing --out DIR", { option: "--out", hint: `usage: ${usage}` });
    const methodText = str(p, "method");
    if (methodText === undefined) throw new OptionError("missing --method ffn-channels|slicegpt", { option: "--method", hint: `usage: ${usage}` });
    const method = parseWidthMethod(methodText, "--method");
    const force = flag(p, "force");
    checkOutputPath(out, { inputs: [input], force, option: "--out" });
    checkOutputPath(`${out}.json`, { inputs: [input], force, option: "--out" });
    const opened = openFromArgs(p, input);
    try {
      if (opened.format !== "hf") {
        throw new UnsupportedError(`${input} is ${opened.format}: width pruning writes Hugging Face directories and copies their tokenizer and side files`, {
          file: input, hint: `convert it first: shortgpt convert ${input} --to safetensors DIR, then prune DIR`,
        });
      }
      const size = sizeFromArgs(p, opened.config.nLayers);
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const backend = await backendFromArgs(p, opened);
      let stats;
      const progress = new Progress("calibrating", "token-layers");
      try {
        stats = await widthStatsOf(opened, data, windows, backend, progress.callback);
      } finally {
        progress.done();
        await backend.dispose();
      }
      const model = widthPrune(opened, stats, method, size);
      const written = writeWidthHf(model, input, out, { force });
      const counts = depthParameterCounts(opened, "matchLayers" in size ? size.matchLayers : 0);
      const record = {
        input, output: out, method, size, parameters: { before: counts.full, after: model.parameters, ...("matchLayers" in size ? { depthPruned: counts.depth } : {}) },
        detail: model.detail, written, data: { path: data.path, sha256: data.sha256, split: data.split }, options: windows, backend: backend.name, tool: "shortgpt", version: "0.1.0",
      };
      writeJsonAtomically(`${out}.json`, record);
      const changed = method === "slicegpt" ? `hidden size ${opened.config.dim} -> ${model.config.dim}` : `intermediate size ${opened.config.hiddenDim} -> ${model.config.hiddenDim}`;
      const match = "matchLayers" in size ? ` (removing ${size.matchLayers} layer${size.matchLayers === 1 ? "" : "s"}: ${counts.depth})` : "";
      return { json: record, text: `${method}: ${changed}; parameters ${counts.full} -> ${model.parameters}${match}\nwrote ${out} and ${out}.json` };
    } finally {
      opened.close();
    }
  },
};

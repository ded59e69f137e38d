// shortgpt eval MODEL --ppl FILE: strided perplexity, optionally with layers skipped.

import { perplexityData } from "../../pipeline.js";
import { DATA_OPTIONS, MODEL_OPTIONS, onePositional, parse } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, dataFromArgs, ENGINE_OPTIONS, openFromArgs, skipFromArgs, windowsFromArgs } from "../common.js";
import { Progress } from "../progress.js";

const usage = "shortgpt eval MODEL --ppl FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--skip i,j] [--backend auto|onnx|wasm|reference] [--threads N] [--json FILE]";

export const evalCommand: Command = {
  name: "eval",
  usage,
  summary: "perplexity of a text file (strided windows), optionally with layers skipped",
  async run(argv) {
    const { data: _data, ...dataOptions } = DATA_OPTIONS;
    const p = parse(argv, { ...MODEL_OPTIONS, ...dataOptions, ...ENGINE_OPTIONS, ppl: { type: "string" }, skip: { type: "string" } }, usage);
    const path = onePositional(p, "MODEL", usage);
    const opened = openFromArgs(p, path);
    try {
      const data = dataFromArgs(p, opened, "ppl", usage);
      const windows = windowsFromArgs(p, opened);
      const skip = skipFromArgs(p, opened.config.nLayers);
      const backend = await backendFromArgs(p);
      const progress = new Progress("perplexity", "token-layers");
      const started = Date.now();
      const result = await perplexityData(opened, data, windows, { backend, ...(skip ? { skip } : {}), onProgress: progress.callback }).finally(() => progress.done());
      const seconds = (Date.now() - started) / 1000;
      await backend.dispose();
      const skipped = skip ? [...skip] : [];
      return {
        json: { perplexity: result.perplexity, nll: result.nll, tokens: result.tokens, windows: result.windows, model: path, skip: skipped, data: { path: data.path, sha256: data.sha256, split: data.split }, options: windows, backend: { name: backend.name, threads: backend.threads }, seconds },
        text: `perplexity ${result.perplexity.toFixed(4)} (nll ${result.nll.toFixed(6)} over ${result.tokens} tokens, ${result.windows} windows of <= ${windows.seqLen}, stride ${windows.stride}${skipped.length ? `, layers ${skipped.join(",")} skipped` : ""}) in ${seconds.toFixed(1)} s on ${backend.name}`,
      };
    } finally {
      opened.close();
    }
  },
};

// shortgpt score MODEL --data FILE: Block Influence of every layer (ShortGPT Eq. 1).

import { DATA_OPTIONS, MODEL_OPTIONS, onePositional, parse } from "../args.js";
import type { Command } from "../command.js";
import { biChart, dataFromArgs, loadFromArgs, scoreWithProgress, windowsFromArgs } from "../common.js";

const usage = "shortgpt score MODEL --data FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--json FILE]";

export const scoreCommand: Command = {
  name: "score",
  usage,
  summary: "Block Influence of every layer on calibration text",
  run(argv) {
    const p = parse(argv, { ...MODEL_OPTIONS, ...DATA_OPTIONS }, usage);
    const path = onePositional(p, "MODEL", usage);
    const loaded = loadFromArgs(p, path);
    const data = dataFromArgs(p, loaded, "data", usage);
    const windows = windowsFromArgs(p, loaded);
    const started = Date.now();
    const result = scoreWithProgress(loaded, data, windows);
    const seconds = (Date.now() - started) / 1000;
    const json = {
      ...result,
      model: path,
      data: { path: data.path, sha256: data.sha256, split: data.split },
      options: windows,
      seconds,
    };
    const text = [
      `Block Influence of ${path} on ${result.tokens} tokens (${result.windows} windows of <= ${windows.seqLen}, stride ${windows.stride}) in ${seconds.toFixed(1)} s`,
      biChart(result),
      `least influential first: ${result.ranking.join(", ")}`,
    ].join("\n");
    return { json, text };
  },
};

// shortgpt score MODEL --data FILE: Block Influence of every layer (ShortGPT Eq. 1).

import { DATA_OPTIONS, MODEL_OPTIONS, onePositional, parse } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, biChart, dataFromArgs, ENGINE_OPTIONS, openFromArgs, scoreWithProgress, windowsFromArgs } from "../common.js";

const usage = "shortgpt score MODEL --data FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--backend auto|onnx|wasm|reference] [--threads N] [--json FILE]";

export const scoreCommand: Command = {
  name: "score",
  usage,
  summary: "Block Influence of every layer on calibration text",
  async run(argv) {
    const p = parse(argv, { ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS }, usage);
    const path = onePositional(p, "MODEL", usage);
    const opened = openFromArgs(p, path);
    try {
      const data = dataFromArgs(p, opened, "data", usage);
      const windows = windowsFromArgs(p, opened);
      const backend = await backendFromArgs(p);
      const started = Date.now();
      const result = await scoreWithProgress(opened, data, windows, backend);
      const seconds = (Date.now() - started) / 1000;
      await backend.dispose();
      const json = {
        ...result,
        model: path,
        data: { path: data.path, sha256: data.sha256, split: data.split },
        options: windows,
        backend: { name: backend.name, threads: backend.threads },
        seconds,
      };
      const text = [
        `Block Influence of ${path} on ${result.tokens} tokens (${result.windows} windows of <= ${windows.seqLen}, stride ${windows.stride}) in ${seconds.toFixed(1)} s on ${backend.name}`,
        biChart(result),
        `least influential first: ${result.ranking.join(", ")}`,
      ].join("\n");
      return { json, text };
    } finally {
      opened.close();
    }
  },
};

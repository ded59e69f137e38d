// shortgpt inspect MODEL: architecture, layers, dims, parameter count, dtypes, tokenizer.

import { loadModel } from "../../load.js";
import { MODEL_OPTIONS, onePositional, parse, str } from "../args.js";
import type { Command } from "../command.js";
import { table } from "../format.js";

const usage = "shortgpt inspect MODEL [--tokenizer FILE] [--json FILE]";

export const inspectCommand: Command = {
  name: "inspect",
  usage,
  summary: "architecture, layers, dimensions, parameter count, dtypes and tokenizer of a model",
  run(argv) {
    const p = parse(argv, MODEL_OPTIONS, usage);
    const path = onePositional(p, "MODEL", usage);
    const tokenizer = str(p, "tokenizer");
    const loaded = loadModel(path, tokenizer === undefined ? {} : { tokenizer });
    const c = loaded.model.config;
    const json = {
      path, format: loaded.format, architecture: loaded.architecture,
      layers: c.nLayers, dim: c.dim, hiddenDim: c.hiddenDim, heads: c.nHeads, kvHeads: c.nKvHeads, headDim: c.headDim,
      vocabSize: c.vocabSize, contextLength: c.contextLength, normEps: c.normEps, ropeTheta: c.ropeTheta,
      parameters: loaded.model.parameterCount(),
      tiedClassifier: loaded.model.weights.classifier === loaded.model.weights.embedding,
      dtypes: loaded.dtypes,
      tokenizer: { description: loaded.tokenizer.description, path: loaded.tokenizerPath, vocabSize: loaded.tokenizer.vocabSize, bos: loaded.tokenizer.bosId, eos: loaded.tokenizer.eosId },
    };
    const rows: [string, string | number][] = [
      ["format", loaded.format], ["architecture", loaded.architecture], ["layers", c.nLayers], ["hidden size", c.dim],
      ["MLP size", c.hiddenDim], ["heads / KV heads", `${c.nHeads} / ${c.nKvHeads}`], ["head size", c.headDim],
      ["vocabulary", c.vocabSize], ["context", c.contextLength], ["RMSNorm eps", c.normEps], ["RoPE theta", c.ropeTheta],
      ["parameters", json.parameters.toLocaleString("en-US")], ["classifier", json.tiedClassifier ? "tied to embedding" : "separate"],
      ["dtypes", Object.entries(loaded.dtypes).map(([k, v]) => `${k} x${v}`).join(", ")], ["tokenizer", loaded.tokenizer.description],
    ];
    return { json, text: `${path}\n${table(["field", "value"], rows)}` };
  },
};

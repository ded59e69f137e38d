// shortgpt tokenize MODEL --data FILE: token ids per document, exactly as score and eval see them.

import { OptionError } from "../../errors.js";
import { loadModel } from "../../load.js";
import { tokenizeFile } from "../../pipeline.js";
import { DATA_OPTIONS, MODEL_OPTIONS, onePositional, parse, split, str } from "../args.js";
import { modelPathFromArgs } from "../common.js";
import type { Command } from "../command.js";

const usage = "shortgpt tokenize MODEL --data FILE [--split blank-line] [--tokenizer FILE] --json OUT";

export const tokenizeCommand: Command = {
  name: "tokenize",
  usage,
  summary: "token ids of each document of a data file, as score and eval see them",
  async run(argv) {
    const p = parse(argv, { ...MODEL_OPTIONS, data: DATA_OPTIONS["data"]!, split: DATA_OPTIONS["split"]! }, usage);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const dataPath = str(p, "data");
    if (dataPath === undefined) throw new OptionError("missing --data FILE", { option: "--data", hint: `usage: ${usage}` });
    const tokenizer = str(p, "tokenizer");
    const loaded = loadModel(path, tokenizer === undefined ? {} : { tokenizer });
    const data = tokenizeFile(loaded, dataPath, split(p));
    const preview = data.documents[0]!.slice(0, 32).join(" ");
    return {
      json: { documents: data.documents },
      text: `${data.documents.length} documents, ${data.tokens} tokens (BOS included)\nfirst document: ${preview}${data.documents[0]!.length > 32 ? " ..." : ""}`,
    };
  },
};

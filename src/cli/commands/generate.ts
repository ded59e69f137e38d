// shortgpt generate MODEL: text from the model, greedy by default.

import { type DecoderBackend, type DecodeSupport, isRecurrentShape } from "../../backend/backend.js";
import { OptionError, UnsupportedError } from "../../errors.js";
import type { OpenedModel } from "../../load.js";
import { generate, generateOnBackend } from "../../eval/generate.js";
import { checkedLayerShapes, type StreamingSource } from "../../models/streaming.js";
import { MODEL_OPTIONS, int, num, onePositional, parse, str } from "../args.js";
import type { Command } from "../command.js";
import { loadModel } from "../../load.js";
import { backendFromArgs, ENGINE_OPTIONS, openFromArgs, skipFromArgs, modelPathFromArgs } from "../common.js";

function canRun(source: StreamingSource, backend: DecoderBackend): boolean {
  try {
    // Decoding keeps a key/value cache on the backend; a recurrent model (which cuda scores but
    // does not decode: no state kept between calls) generates on the in-memory model.
    return !checkedLayerShapes(source, backend).some(isRecurrentShape);
  } catch (err) {
    if (err instanceof UnsupportedError) return false;
    throw err;
  }
}

const usage = "shortgpt generate MODEL [--prompt TEXT] [--max-tokens N] [--temperature T] [--top-p P] [--seed S] [--skip i,j] [--backend B] [--device N] [--precision bf16|fp32] [--json FILE]";

export const generateCommand: Command = {
  name: "generate",
  usage,
  summary: "generate text (temperature 0 = greedy, the default)",
  async run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...ENGINE_OPTIONS, prompt: { type: "string" }, "max-tokens": { type: "string" }, temperature: { type: "string" },
      "top-p": { type: "string" }, seed: { type: "string" }, skip: { type: "string" },
    }, usage);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const tokenizerPath = str(p, "tokenizer");
    // Options that need no model are checked before a backend starts.
    const prompt = str(p, "prompt") ?? "";
    const temperature = num(p, "temperature", 0, 100) ?? 0;
    const topP = num(p, "top-p", 0, 1) ?? 1;
    const seed = int(p, "seed", 0) ?? 42;
    // A backend with its own key/value cache (cuda) generates where its weights live; the CPU
    // backends have none, and generation runs token by token on the in-memory reference model.
    // A family the backend does not decode (cuda: Mamba, RWKV) generates in memory too.
    const backend = await backendFromArgs(p);
    let opened: OpenedModel | undefined;
    try {
      let onBackend: (DecoderBackend & { decode: DecodeSupport }) | undefined;
      if (backend.decode) {
        opened = openFromArgs(p, path);
        if (canRun(opened, backend)) onBackend = backend as DecoderBackend & { decode: DecodeSupport };
      }
      const loaded = onBackend && opened ? opened : loadModel(path, tokenizerPath === undefined ? {} : { tokenizer: tokenizerPath });
      // With nothing to start from (an empty prompt, no BOS added), start from BOS, else EOS, as lm-eval's prefix token.
      const encoded = loaded.tokenizer.encode(prompt);
      const promptIds = encoded.length > 0 ? encoded : [loaded.tokenizer.bosId >= 0 ? loaded.tokenizer.bosId : loaded.tokenizer.eosId];
      const config = "model" in loaded ? loaded.model.config : loaded.config;
      const context = config.contextLength;
      if (promptIds.length >= context) {
        throw new OptionError(`the prompt is ${promptIds.length} tokens, the model's context ${context}: no room to generate`, { option: "--prompt", hint: "shorten the prompt" });
      }
      const maxTokens = int(p, "max-tokens", 1, context) ?? Math.min(256, context - promptIds.length);
      const skip = skipFromArgs(p, config.nLayers);
      const options = {
        maxTokens, temperature, topP, seed,
        stopTokens: new Set([loaded.tokenizer.eosId, loaded.tokenizer.bosId]),
        ...(skip ? { skip } : {}),
      };
      const ids = "model" in loaded ? generate(loaded.model, promptIds, options) : await generateOnBackend(loaded, onBackend!, promptIds, options);
      const text = loaded.tokenizer.decode([...promptIds, ...ids]);
      return {
        json: { model: path, prompt, promptIds, ids, text, temperature, topP, seed, skip: skip ? [...skip] : [], backend: onBackend ? onBackend.name : "reference (in memory)" },
        text,
      };
    } finally {
      await backend.dispose();
      opened?.close();
    }
  },
};

// Steps several commands share: loading the model named on the command line, reading data
// with the window options, and printing Block Influence.

import { OptionError } from "../errors.js";
import { loadModel, type LoadedModel } from "../load.js";
import type { BlockInfluenceResult } from "../metrics/blockInfluence.js";
import { resolveWindows, scoreData, tokenizeFile, type TokenizedData, type WindowChoice } from "../pipeline.js";
import { parseLayerList } from "../prune/plan.js";
import { int, type Parsed, split, str } from "./args.js";
import { barChart } from "./format.js";
import { Progress } from "./progress.js";

export function loadFromArgs(p: Parsed, path: string): LoadedModel {
  const tokenizer = str(p, "tokenizer");
  return loadModel(path, tokenizer === undefined ? {} : { tokenizer });
}

export function windowsFromArgs(p: Parsed, loaded: LoadedModel): WindowChoice {
  const seqLen = int(p, "seq-len", 2);
  const stride = int(p, "stride", 1);
  const maxTokens = int(p, "max-tokens", 2);
  return resolveWindows(loaded, {
    ...(seqLen === undefined ? {} : { seqLen }),
    ...(stride === undefined ? {} : { stride }),
    ...(maxTokens === undefined ? {} : { maxTokens }),
  });
}

export function dataFromArgs(p: Parsed, loaded: LoadedModel, option: string, usage: string): TokenizedData {
  const path = str(p, option);
  if (path === undefined) throw new OptionError(`missing --${option} FILE`, { option: `--${option}`, hint: `usage: ${usage}` });
  return tokenizeFile(loaded, path, split(p));
}

export function skipFromArgs(p: Parsed, loaded: LoadedModel): Set<number> | undefined {
  const text = str(p, "skip");
  if (text === undefined) return undefined;
  const layers = parseLayerList(text, loaded.model.nLayers, "--skip");
  if (layers.length >= loaded.model.nLayers) throw new OptionError(`--skip would leave no layer`, { option: "--skip" });
  return new Set(layers);
}

export function scoreWithProgress(loaded: LoadedModel, data: TokenizedData, windows: WindowChoice): BlockInfluenceResult {
  const progress = new Progress("scoring", "tokens");
  try {
    return scoreData(loaded, data, windows, { onProgress: progress.callback });
  } finally {
    progress.done();
  }
}

export function biChart(result: BlockInfluenceResult, removed: readonly number[] = []): string {
  return barChart(result.layers.map((s) => ({
    label: `layer ${s.layer}`,
    value: s.bi,
    ...(removed.includes(s.layer) ? { mark: "<- remove" } : {}),
  })));
}

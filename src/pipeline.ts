// The steps the commands share: tokenize a data file for a model, cut it into windows, run
// Block Influence or perplexity. Pure library code: progress goes through callbacks.

import { readTextData, tokenizeDocuments, type SplitMode } from "./data/documents.js";
import { countTokens, perplexityWindows, requireOneWindow, scoringWindows, truncateDocuments } from "./data/windows.js";
import { OptionError } from "./errors.js";
import { perplexity, type PerplexityResult } from "./eval/perplexity.js";
import type { LoadedModel } from "./load.js";
import type { BlockInfluenceResult } from "./metrics/blockInfluence.js";
import { blockInfluence } from "./metrics/score.js";

export interface TokenizedData {
  path: string;
  sha256: string;
  split: SplitMode;
  documents: number[][];
  tokens: number;
}

export function tokenizeFile(loaded: LoadedModel, path: string, split: SplitMode = "none"): TokenizedData {
  const data = readTextData(path, split);
  const documents = tokenizeDocuments(loaded.tokenizer, data.documents);
  return { path, sha256: data.sha256, split, documents, tokens: countTokens(documents) };
}

export interface WindowChoice {
  seqLen: number;
  stride: number;
  maxTokens?: number;
}

/** Fills the window defaults (seqLen = min(1024, context), stride = seqLen) and checks them. */
export function resolveWindows(loaded: LoadedModel, given: { seqLen?: number; stride?: number; maxTokens?: number }): WindowChoice {
  const context = loaded.model.config.contextLength;
  const seqLen = given.seqLen ?? Math.min(1024, context);
  const stride = given.stride ?? seqLen;
  if (seqLen < 2) throw new OptionError(`--seq-len ${seqLen}: a window needs at least 2 tokens`, { option: "--seq-len" });
  if (seqLen > context) {
    throw new OptionError(`--seq-len ${seqLen} is longer than the model's context of ${context} tokens`, { option: "--seq-len", expected: `<= ${context}`, got: seqLen });
  }
  if (stride < 1 || stride > seqLen) {
    throw new OptionError(`--stride ${stride} must be between 1 and --seq-len (${seqLen})`, { option: "--stride", got: stride, hint: "windows must overlap or touch so every token is seen" });
  }
  if (given.maxTokens !== undefined && given.maxTokens < 2) throw new OptionError(`--max-tokens ${given.maxTokens} must be at least 2`, { option: "--max-tokens" });
  return given.maxTokens === undefined ? { seqLen, stride } : { seqLen, stride, maxTokens: given.maxTokens };
}

export interface RunOptions {
  skip?: ReadonlySet<number>;
  onProgress?: (done: number, total: number) => void;
}

export function scoreData(loaded: LoadedModel, data: TokenizedData, windows: WindowChoice, options: RunOptions = {}): BlockInfluenceResult {
  // --max-tokens caps the tokens inside scoring windows (overlaps count), as the windows are cut.
  requireOneWindow(data.documents, windows.seqLen, data.path);
  return blockInfluence(loaded.model, scoringWindows(data.documents, windows), options);
}

export function perplexityData(loaded: LoadedModel, data: TokenizedData, windows: WindowChoice, options: RunOptions = {}): PerplexityResult {
  // --max-tokens keeps the first N tokens of the text, which are then windowed.
  const docs = truncateDocuments(data.documents, windows.maxTokens);
  requireOneWindow(docs, windows.seqLen, data.path);
  return perplexity(loaded.model, perplexityWindows(docs, windows), options);
}

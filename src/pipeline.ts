// The steps the commands share: tokenize a data file for a model, cut it into windows, run
// Block Influence or perplexity layer by layer on a backend. Pure library code: progress goes
// through callbacks.

import type { DecoderBackend } from "./backend/backend.js";
import { readTextData, tokenizeDocuments, type SplitMode } from "./data/documents.js";
import { countTokens, type PerplexityWindow, perplexityWindows, requireOneWindow, scoringWindows, truncateDocuments } from "./data/windows.js";
import { OptionError } from "./errors.js";
import type { PerplexityResult } from "./eval/perplexity.js";
import { type TextSize, textSize } from "./eval/perplexityVariants.js";
import type { BlockInfluenceResult } from "./metrics/blockInfluence.js";
import type { CalibrationWindows } from "./metrics/layerMetrics.js";
import { type StreamingSource, streamingBlockInfluence, streamingPerplexity } from "./models/streaming.js";
import type { Tokenizer } from "./tokenizer/tokenizer.js";

export interface TokenizedData {
  path: string;
  sha256: string;
  split: SplitMode;
  documents: number[][];
  tokens: number;
  /** Words and bytes of the text, for word/byte perplexity. */
  size: TextSize;
}

export function tokenizeFile(model: { tokenizer: Tokenizer }, path: string, split: SplitMode = "none"): TokenizedData {
  const data = readTextData(path, split);
  const documents = tokenizeDocuments(model.tokenizer, data.documents);
  return { path, sha256: data.sha256, split, documents, tokens: countTokens(documents), size: textSize(data.documents) };
}

export interface WindowChoice {
  seqLen: number;
  stride: number;
  maxTokens?: number;
}

/** Fills the window defaults (seqLen = min(1024, context), stride = seqLen) and checks them. */
export function resolveWindows(contextLength: number, given: { seqLen?: number; stride?: number; maxTokens?: number }): WindowChoice {
  const seqLen = given.seqLen ?? Math.min(1024, contextLength);
  const stride = given.stride ?? seqLen;
  if (seqLen < 2) throw new OptionError(`--seq-len ${seqLen}: a window needs at least 2 tokens`, { option: "--seq-len" });
  if (seqLen > contextLength) {
    throw new OptionError(`--seq-len ${seqLen} is longer than the model's context of ${contextLength} tokens`, { option: "--seq-len", expected: `<= ${contextLength}`, got: seqLen });
  }
  if (stride < 1 || stride > seqLen) {
    throw new OptionError(`--stride ${stride} must be between 1 and --seq-len (${seqLen})`, { option: "--stride", got: stride, hint: "windows must overlap or touch so every token is seen" });
  }
  if (given.maxTokens !== undefined && given.maxTokens < 2) throw new OptionError(`--max-tokens ${given.maxTokens} must be at least 2`, { option: "--max-tokens" });
  return given.maxTokens === undefined ? { seqLen, stride } : { seqLen, stride, maxTokens: given.maxTokens };
}

export interface RunOptions {
  backend: DecoderBackend;
  skip?: ReadonlySet<number>;
  onProgress?: (done: number, total: number) => void;
}

/** Block Influence of every layer; --max-tokens caps the tokens inside windows (overlaps count). */
export function scoreData(source: StreamingSource, data: TokenizedData, windows: WindowChoice, options: RunOptions): Promise<BlockInfluenceResult> {
  requireOneWindow(data.documents, windows.seqLen, data.path);
  return streamingBlockInfluence(source, scoringWindows(data.documents, windows), options);
}

/**
 * The calibration windows every metric uses: scoring windows (residual-stream metrics) and
 * strided perplexity windows over the same text (the `ppl` metric), each as the commands cut them.
 */
export function calibrationWindows(data: TokenizedData, windows: WindowChoice): CalibrationWindows {
  requireOneWindow(data.documents, windows.seqLen, data.path);
  return {
    scoring: scoringWindows(data.documents, windows),
    perplexity: perplexityWindows(truncateDocuments(data.documents, windows.maxTokens), windows),
  };
}

/** The strided perplexity windows; --max-tokens keeps the first N tokens of the text, which are then windowed. */
export function perplexityWindowsOf(data: TokenizedData, windows: WindowChoice): PerplexityWindow[] {
  const docs = truncateDocuments(data.documents, windows.maxTokens);
  requireOneWindow(docs, windows.seqLen, data.path);
  return perplexityWindows(docs, windows);
}

/** Strided perplexity over perplexityWindowsOf's windows. */
export function perplexityData(source: StreamingSource, data: TokenizedData, windows: WindowChoice, options: RunOptions): Promise<PerplexityResult> {
  return streamingPerplexity(source, perplexityWindowsOf(data, windows), options);
}

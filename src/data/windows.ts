// How documents are cut into the windows the model sees, for scoring and for perplexity.

import type { PackedLayout } from "../backend/backend.js";
import { DataError } from "../errors.js";

export interface Window {
  document: number;
  /** Index of the window's first token in its document. */
  begin: number;
  tokens: number[];
  /** Several sequences packed behind a shared prefix (evaluation), one value per token; absent for one causal sequence. */
  layout?: PackedLayout;
}

export interface WindowOptions {
  seqLen: number;
  stride: number;
  /** Stop once this many tokens are in windows; the last window is cut to fit. */
  maxTokens?: number;
}

/**
 * Scoring windows (Block Influence): windows of seqLen tokens starting every stride tokens;
 * a final window shorter than seqLen is kept if it has at least 2 tokens, and a document
 * ends with the first window that reaches its end.
 */
export function scoringWindows(documents: readonly number[][], options: WindowOptions): Window[] {
  const { seqLen, stride } = options;
  const budget = options.maxTokens ?? Infinity;
  const windows: Window[] = [];
  let used = 0;
  outer: for (let d = 0; d < documents.length; d++) {
    const doc = documents[d]!;
    for (let begin = 0; begin < doc.length; begin += stride) {
      if (budget - used < 2) break outer; // no room left for a window
      const length = Math.min(seqLen, doc.length - begin, budget - used);
      if (length >= 2) {
        windows.push({ document: d, begin, tokens: doc.slice(begin, begin + length) });
        used += length;
      }
      if (begin + seqLen >= doc.length) break;
    }
  }
  return windows;
}

export interface PerplexityWindow extends Window {
  /** Positions within the window whose next-token prediction is scored: [firstTarget, tokens.length). */
  firstTarget: number;
}

/**
 * Strided perplexity windows: seqLen tokens starting every stride tokens; each window scores
 * only the tokens no earlier window scored (with stride = seqLen, all but its first token).
 */
export function perplexityWindows(documents: readonly number[][], options: WindowOptions): PerplexityWindow[] {
  const { seqLen, stride } = options;
  const windows: PerplexityWindow[] = [];
  for (let d = 0; d < documents.length; d++) {
    const doc = documents[d]!;
    let scoredUpTo = 1; // position 0 (BOS, or the first token) has nothing before it to predict from
    for (let begin = 0; ; begin += stride) {
      const end = Math.min(begin + seqLen, doc.length);
      const from = Math.max(begin + 1, scoredUpTo);
      if (from < end) windows.push({ document: d, begin, tokens: doc.slice(begin, end), firstTarget: from - begin });
      scoredUpTo = Math.max(scoredUpTo, end);
      if (end >= doc.length) break;
    }
  }
  return windows;
}

/** Keeps the first maxTokens tokens of the documents, in order. */
export function truncateDocuments(documents: readonly number[][], maxTokens: number | undefined): number[][] {
  if (maxTokens === undefined) return documents.map((d) => d);
  const out: number[][] = [];
  let left = maxTokens;
  for (const doc of documents) {
    if (left <= 0) break;
    out.push(doc.slice(0, left));
    left -= doc.length;
  }
  return out;
}

export function countTokens(documents: readonly number[][]): number {
  return documents.reduce((n, d) => n + d.length, 0);
}

/** Refuses data with fewer tokens than one window, naming the file and the option to change. */
export function requireOneWindow(documents: readonly number[][], seqLen: number, file: string): void {
  const total = countTokens(documents);
  if (total < seqLen) {
    throw new DataError(`${file} has ${total} tokens, fewer than one window of ${seqLen}`, {
      file, option: "--seq-len", expected: seqLen, got: total,
      hint: `pass more text or a smaller --seq-len (at most ${total})`,
    });
  }
}

// Perplexity by the strided method for fixed-length models, in float64.

import type { PerplexityWindow } from "../data/windows.js";
import { logProb, type LlamaModel } from "../models/llama.js";

export interface PerplexityResult {
  perplexity: number;
  /** Mean negative log-likelihood per scored token (nats). */
  nll: number;
  tokens: number;
  windows: number;
  /** Per window (in the order given): summed NLL and scored tokens, for resampling. */
  perWindow?: { nll: Float64Array; tokens: Float64Array };
}

/**
 * Perplexity from per-window sums, summed in window order: the one place the total is formed, so a
 * run split into shards and merged gives the same bits as one run.
 */
export function perplexityFromWindows(perWindow: { nll: ArrayLike<number>; tokens: ArrayLike<number> }): { perplexity: number; nll: number; tokens: number } {
  let nllSum = 0;
  let tokens = 0;
  for (let w = 0; w < perWindow.nll.length; w++) {
    nllSum += perWindow.nll[w]!;
    tokens += perWindow.tokens[w]!;
  }
  const nll = nllSum / tokens;
  return { perplexity: Math.exp(nll), nll, tokens };
}

export interface PerplexityOptions {
  skip?: ReadonlySet<number>;
  onProgress?: (done: number, total: number) => void;
}

export function perplexity(model: LlamaModel, windows: readonly PerplexityWindow[], options: PerplexityOptions = {}): PerplexityResult {
  const vocab = model.config.vocabSize;
  let nllSum = 0;
  let tokens = 0;
  const total = windows.reduce((n, w) => n + w.tokens.length, 0);
  let done = 0;
  for (const w of windows) {
    const { logits } = model.forward(w.tokens, { logits: "all", ...(options.skip ? { skip: options.skip } : {}) });
    for (let pos = w.firstTarget; pos < w.tokens.length; pos++) {
      nllSum -= logProb(logits, pos - 1, vocab, w.tokens[pos]!);
      tokens += 1;
    }
    done += w.tokens.length;
    options.onProgress?.(done, total);
  }
  const nll = nllSum / tokens;
  return { perplexity: Math.exp(nll), nll, tokens, windows: windows.length };
}

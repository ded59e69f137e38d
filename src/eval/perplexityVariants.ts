// The perplexity variants lm-evaluation-harness reports for WikiText, from the total negative
// log-likelihood of a text: per word, per byte, and bits per byte.

export interface TextSize {
  /** Words as lm-eval counts them: the pieces of re.split(r"\s+", doc), summed over documents. */
  words: number;
  /** UTF-8 bytes. */
  bytes: number;
}

export interface PerplexityVariants {
  wordPerplexity: number;
  bytePerplexity: number;
  bitsPerByte: number;
}

export function countWords(doc: string): number {
  return doc.split(/\s+/).length;
}

export function textSize(documents: readonly string[]): TextSize {
  return { words: documents.reduce((n, d) => n + countWords(d), 0), bytes: documents.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0) };
}

/** totalNll: the summed negative log-likelihood (nats) of every token of the text. */
export function perplexityVariants(totalNll: number, size: TextSize): PerplexityVariants {
  return {
    wordPerplexity: Math.exp(totalNll / size.words),
    bytePerplexity: Math.exp(totalNll / size.bytes),
    bitsPerByte: totalNll / size.bytes / Math.LN2,
  };
}

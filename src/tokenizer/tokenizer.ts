// The tokenizer interface every model carries.

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  /** A description for `inspect`, e.g. "SentencePiece (llama2.c tok512.bin), 512 tokens". */
  readonly description: string;
  /**
   * The token lm-evaluation-harness puts before an empty context: BOS when the vocabulary has
   * one (even if documents start without it), else EOS. Absent: bosId.
   */
  readonly prefixTokenId?: number;
  /** Token ids of `text`; with `bos`, the BOS id first. */
  encode(text: string, options?: { bos?: boolean }): number[];
  /** Text of a token sequence (BOS/EOS and other control tokens produce nothing). */
  decode(ids: readonly number[]): string;
  /** The bytes one token adds after `prev`, for streaming generation. */
  decodeToken(id: number, prev: number | undefined): Uint8Array;
}

// The tokenizer interface every model carries.

export interface Tokenizer {
  readonly vocabSize: number;
  /** The BOS token, or -1 when the vocabulary has none. */
  readonly bosId: number;
  readonly eosId: number;
  /**
   * Whether the tokenizer's own encoding starts with BOS: transformers' default for a Hugging Face
   * tokenizer, tokenizer.ggml.add_bos_token (else llama.cpp's default) for GGUF, always for llama2.c.
   */
  readonly addsBos: boolean;
  /** A description for `inspect`, e.g. "SentencePiece (llama2.c tok512.bin), 512 tokens". */
  readonly description: string;
  /** Token ids of `text`; BOS first when `bos` says so (default: addsBos) and the vocabulary has one. */
  encode(text: string, options?: { bos?: boolean }): number[];
  /** Text of a token sequence (BOS/EOS and other control tokens produce nothing). */
  decode(ids: readonly number[]): string;
  /** The bytes one token adds after `prev`, for streaming generation. */
  decodeToken(id: number, prev: number | undefined): Uint8Array;
}

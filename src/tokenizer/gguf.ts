// The tokenizer stored in a GGUF file's tokenizer.ggml.* metadata.

import { TokenizerError, UnsupportedError } from "../errors.js";
import { type GgufFile, ggufArray, ggufNumber, ggufString } from "../formats/gguf.js";
import { PieceType, SentencePieceTokenizer } from "./sentencepiece.js";
import type { Tokenizer } from "./tokenizer.js";

export function readGgufTokenizer(gguf: GgufFile): Tokenizer {
  const model = ggufString(gguf, "tokenizer.ggml.model");
  const pieces = ggufArray(gguf, "tokenizer.ggml.tokens");
  if (model === undefined || pieces === undefined) {
    throw new TokenizerError(`${gguf.path} has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens missing)`, { file: gguf.path });
  }
  if (model !== "llama") {
    throw new UnsupportedError(`${gguf.path}: GGUF tokenizer model "${model}" is not supported yet (only "llama", SentencePiece)`, { file: gguf.path, got: model });
  }
  const n = pieces.length;
  const scores = ggufArray(gguf, "tokenizer.ggml.scores") ?? new Array<number>(n).fill(0);
  const types = ggufArray(gguf, "tokenizer.ggml.token_type") ?? new Array<number>(n).fill(PieceType.Normal);
  if (scores.length !== n || types.length !== n) {
    throw new TokenizerError(`${gguf.path}: tokenizer.ggml.scores/token_type lengths (${scores.length}/${types.length}) differ from tokens (${n})`, { file: gguf.path });
  }
  const addSpacePrefix = gguf.metadata.get("tokenizer.ggml.add_space_prefix");
  return new SentencePieceTokenizer({
    pieces: pieces.map(String),
    scores: scores.map(Number),
    types: types.map(Number) as PieceType[],
    bosId: ggufNumber(gguf, "tokenizer.ggml.bos_token_id") ?? 1,
    eosId: ggufNumber(gguf, "tokenizer.ggml.eos_token_id") ?? 2,
    unkId: ggufNumber(gguf, "tokenizer.ggml.unknown_token_id") ?? 0,
    spaceSymbol: "\u2581",
    addSpacePrefix: addSpacePrefix === undefined ? true : Boolean(addSpacePrefix.value),
    description: `SentencePiece BPE (GGUF tokenizer.ggml.model=llama), ${n} tokens`,
    source: gguf.path,
  });
}

// The tokenizer stored in a GGUF file's tokenizer.ggml.* metadata.

import { TokenizerError, UnsupportedError } from "../errors.js";
import { type GgufFile, ggufArray, ggufNumber, ggufString } from "../formats/gguf.js";
import { type BpeVocab, bpePreTokenizer } from "./bpe.js";
import { bpeTokenizer, type HfTokenizer } from "./hfTokenizer.js";
import { PieceType, SentencePieceTokenizer } from "./sentencepiece.js";
import type { Tokenizer } from "./tokenizer.js";

export function readGgufTokenizer(gguf: GgufFile): Tokenizer {
  const model = ggufString(gguf, "tokenizer.ggml.model");
  const pieces = ggufArray(gguf, "tokenizer.ggml.tokens");
  if (model === undefined || pieces === undefined) {
    throw new TokenizerError(`${gguf.path} has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens missing)`, { file: gguf.path });
  }
  checkSpecialTokenIds(gguf, pieces.length);
  if (model === "gpt2") return readGgufBpeTokenizer(gguf, pieces.map(String));
  if (model !== "llama") {
    throw new UnsupportedError(`${gguf.path}: GGUF tokenizer model "${model}" is not supported (supported: "llama", SentencePiece; "gpt2", byte-level BPE)`, { file: gguf.path, got: model });
  }
  const n = pieces.length;
  const scores = ggufArray(gguf, "tokenizer.ggml.scores") ?? new Array<number>(n).fill(0);
  const types = ggufArray(gguf, "tokenizer.ggml.token_type") ?? new Array<number>(n).fill(PieceType.Normal);
  if (scores.length !== n || types.length !== n) {
    throw new TokenizerError(`${gguf.path}: tokenizer.ggml.scores/token_type lengths (${scores.length}/${types.length}) differ from tokens (${n})`, { file: gguf.path });
  }
  const addSpacePrefix = gguf.metadata.get("tokenizer.ggml.add_space_prefix");
  // llama.cpp adds BOS to SentencePiece text unless tokenizer.ggml.add_bos_token says otherwise.
  const addBos = gguf.metadata.get("tokenizer.ggml.add_bos_token");
  return new SentencePieceTokenizer({
    pieces: pieces.map(String),
    scores: scores.map(Number),
    types: types.map(Number) as PieceType[],
    bosId: ggufNumber(gguf, "tokenizer.ggml.bos_token_id") ?? 1,
    eosId: ggufNumber(gguf, "tokenizer.ggml.eos_token_id") ?? 2,
    unkId: ggufNumber(gguf, "tokenizer.ggml.unknown_token_id") ?? 0,
    spaceSymbol: "\u2581",
    addSpacePrefix: addSpacePrefix === undefined ? true : Boolean(addSpacePrefix.value),
    addBos: addBos === undefined ? true : Boolean(addBos.value),
    description: `SentencePiece BPE (GGUF tokenizer.ggml.model=llama), ${n} tokens`,
    source: gguf.path,
  });
}

/**
 * A byte-level BPE vocabulary (tokenizer.ggml.model = "gpt2"), read as llama.cpp reads it: the
 * merges are required, a missing token_type means every token is normal, a missing
 * tokenizer.ggml.pre means llama.cpp's "default" pre-tokenizer, and BOS is added when
 * tokenizer.ggml.add_bos_token says so, else as the pre-tokenizer's default.
 */
function readGgufBpeTokenizer(gguf: GgufFile, tokens: string[]): HfTokenizer {
  const n = tokens.length;
  const merges = ggufArray(gguf, "tokenizer.ggml.merges");
  if (merges === undefined) throw new TokenizerError(`${gguf.path}: a BPE vocabulary (tokenizer.ggml.model=gpt2) needs tokenizer.ggml.merges, which is missing`, { file: gguf.path });
  const types = ggufArray(gguf, "tokenizer.ggml.token_type") ?? new Array<number>(n).fill(PieceType.Normal);
  if (types.length !== n) throw new TokenizerError(`${gguf.path}: tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`, { file: gguf.path });
  const pre = bpePreTokenizer(ggufString(gguf, "tokenizer.ggml.pre") ?? "default", gguf.path);
  const addBos = gguf.metadata.get("tokenizer.ggml.add_bos_token");
  const vocab: BpeVocab = {
    tokens, types: types.map(Number) as PieceType[], merges: merges.map(String), pre: pre.name,
    bosId: ggufNumber(gguf, "tokenizer.ggml.bos_token_id") ?? -1,
    eosId: ggufNumber(gguf, "tokenizer.ggml.eos_token_id") ?? -1,
    addBos: addBos === undefined ? pre.addBos : Boolean(addBos.value),
  };
  return bpeTokenizer(vocab, gguf.path, `byte-level BPE (GGUF tokenizer.ggml.model=gpt2, pre-tokenizer ${pre.name}), ${n} tokens`);
}

/** The special tokens the tokenizer itself uses; the others (padding, separator, ...) may be absent. */
const USED_SPECIAL_IDS = new Set(["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"]);

/**
 * Every tokenizer.ggml.*_token_id (bos, eos, unknown, padding, ...) must name one of the `n`
 * tokens: an id past the vocabulary would index outside the embedding when it is used. As in
 * llama.cpp, -1 stored as a u32 (4294967295) means "no such token", allowed for the unused ones.
 */
function checkSpecialTokenIds(gguf: GgufFile, n: number): void {
  for (const key of gguf.metadata.keys()) {
    if (!/^tokenizer\.ggml\.\w+_token_id$/.test(key)) continue;
    const id = ggufNumber(gguf, key)!;
    if (Number.isInteger(id) && id >= 0 && id < n) continue;
    if ((id === -1 || id === 0xffffffff) && !USED_SPECIAL_IDS.has(key)) continue;
    throw new TokenizerError(`${gguf.path}: metadata ${key} is ${id}, outside the ${n} tokens (0..${n - 1})`, {
      file: gguf.path, expected: `0..${n - 1}`, got: id, hint: "the file's tokenizer metadata is corrupt; re-convert it",
    });
  }
}

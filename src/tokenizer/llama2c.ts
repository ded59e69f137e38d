// llama2.c's tokenizer.bin: max token length, then per token a float32 score, an int32 byte
// length and the bytes. Ids 0-2 are <unk>, BOS, EOS; ids 3-258 are the byte tokens.

import { TokenizerError } from "../errors.js";
import { ByteCursor, RandomAccessFile } from "../formats/file.js";
import { PieceType, SentencePieceTokenizer } from "./sentencepiece.js";

/** Reads `vocabSize` tokens (the model's vocabulary size) and checks the file holds exactly that many. */
export function readLlama2cTokenizer(path: string, vocabSize: number): SentencePieceTokenizer {
  const file = new RandomAccessFile(path, TokenizerError);
  try {
    const cur = new ByteCursor(file);
    const maxLength = cur.i32("max token length");
    if (maxLength <= 0 || maxLength > 1 << 16) {
      throw new TokenizerError(`${path}: max token length ${maxLength} is not plausible for a llama2.c tokenizer`, { file: path, got: maxLength });
    }
    const pieces: string[] = [];
    const scores: number[] = [];
    const decoder = new TextDecoder("utf-8");
    while (cur.remaining > 0) {
      if (pieces.length >= vocabSize) {
        throw new TokenizerError(`${path} has more than ${vocabSize} tokens, the model's vocabulary size`, {
          file: path,
          expected: vocabSize,
          hint: "use the tokenizer the model was trained with (--tokenizer FILE)",
        });
      }
      scores.push(cur.f32(`score of token ${pieces.length}`));
      const length = cur.i32(`length of token ${pieces.length}`);
      if (length < 0 || length > maxLength) {
        throw new TokenizerError(`${path}: token ${pieces.length} has length ${length} (max ${maxLength})`, { file: path, got: length });
      }
      pieces.push(decoder.decode(cur.bytes(length, `token ${pieces.length}`)));
    }
    if (pieces.length !== vocabSize) {
      throw new TokenizerError(`${path} has ${pieces.length} tokens but the model's vocabulary has ${vocabSize}`, {
        file: path,
        expected: vocabSize,
        got: pieces.length,
        hint: "use the tokenizer the model was trained with (--tokenizer FILE)",
      });
    }
    const types = pieces.map((piece, id) => {
      if (id === 0) return PieceType.Unknown;
      if (id === 1 || id === 2) return PieceType.Control;
      if (id >= 3 && id <= 258 && /^<0x[0-9A-F]{2}>$/.test(piece)) return PieceType.Byte;
      return PieceType.Normal;
    });
    return new SentencePieceTokenizer({
      pieces, scores, types,
      bosId: 1, eosId: 2, unkId: 0,
      spaceSymbol: " ",
      addSpacePrefix: true,
      description: `SentencePiece BPE (llama2.c tokenizer ${path}), ${pieces.length} tokens`,
      source: path,
    });
  } finally {
    file.close();
  }
}

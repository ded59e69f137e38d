// A SentencePiece vocabulary's pieces as other formats store them.

import { PieceType, type SentencePieceVocab } from "../tokenizer/sentencepiece.js";

export const SPACE_SYMBOL = "\u2581";

/**
 * Pieces with spaces as U+2581 (llama2.c's tokenizer.bin uses " ") and control pieces without
 * surrounding whitespace (llama2.c stores BOS/EOS as "\n<s>\n" and "\n</s>\n"; GGUF and
 * tokenizer.json files say "<s>" and "</s>", as llama.cpp's converter writes them).
 */
export function portablePieces(vocab: Readonly<SentencePieceVocab>): string[] {
  return vocab.pieces.map((p, id) => {
    const type = vocab.types[id];
    if (type === PieceType.Control || type === PieceType.Unknown) return p.trim();
    return vocab.spaceSymbol === SPACE_SYMBOL ? p : p.replaceAll(vocab.spaceSymbol, SPACE_SYMBOL);
  });
}

// A SentencePiece BPE vocabulary (llama2.c tokenizer.bin, GGUF "llama") written as a Hugging Face
// tokenizer.json: a BPE model with byte fallback, the "▁" space normalizer, and merges derived
// from the scored pieces the way transformers' SentencePiece converter derives them (every split
// of a piece into two pieces of the vocabulary, ordered by the merged piece's score).

import { addedToken } from "../tokenizer/bpe.js";
import { bosPostProcessor } from "../tokenizer/bosTemplate.js";
import { PieceType, type SentencePieceVocab } from "../tokenizer/sentencepiece.js";
import { portablePieces, SPACE_SYMBOL } from "./pieces.js";


/** The merges, best first: for each piece, every split into two vocabulary pieces. */
function derivedMerges(pieces: readonly string[], scores: ArrayLike<number>, types: readonly PieceType[]): [string, string][] {
  const idOf = new Map<string, number>();
  pieces.forEach((p, id) => {
    if (types[id] === PieceType.Normal || types[id] === PieceType.UserDefined) idOf.set(p, id);
  });
  const merges: { left: number; right: number; merged: number }[] = [];
  for (const [piece, merged] of idOf) {
    const chars = [...piece];
    for (let k = 1; k < chars.length; k++) {
      const left = idOf.get(chars.slice(0, k).join(""));
      const right = idOf.get(chars.slice(k).join(""));
      if (left !== undefined && right !== undefined) merges.push({ left, right, merged });
    }
  }
  merges.sort((a, b) => scores[b.merged]! - scores[a.merged]! || a.merged - b.merged || a.left - b.left || a.right - b.right);
  return merges.map((m) => [pieces[m.left]!, pieces[m.right]!]);
}

export function sentencePieceToTokenizerJson(vocab: Readonly<SentencePieceVocab>): Record<string, unknown> {
  const pieces = portablePieces(vocab);
  const special = pieces.map((p, id) => ({ p, id })).filter(({ id }) => vocab.types[id] === PieceType.Control || vocab.types[id] === PieceType.Unknown);
  const normalizers: Record<string, unknown>[] = [{ type: "Replace", pattern: { String: " " }, content: SPACE_SYMBOL }];
  if (vocab.addSpacePrefix) normalizers.unshift({ type: "Prepend", prepend: SPACE_SYMBOL });
  const decoders: Record<string, unknown>[] = [{ type: "Replace", pattern: { String: SPACE_SYMBOL }, content: " " }, { type: "ByteFallback" }, { type: "Fuse" }];
  if (vocab.addSpacePrefix) decoders.push({ type: "Strip", content: " ", start: 1, stop: 0 });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: special.map(({ p, id }) => addedToken(id, p, true)),
    normalizer: { type: "Sequence", normalizers },
    pre_tokenizer: null,
    // transformers then adds BOS exactly when the source tokenizer does (llama2.c and SentencePiece GGUF: yes).
    post_processor: (vocab.addBos ?? true) && vocab.bosId >= 0 ? bosPostProcessor(pieces[vocab.bosId]!, vocab.bosId) : null,
    decoder: { type: "Sequence", decoders },
    model: {
      type: "BPE", dropout: null, unk_token: pieces[vocab.unkId] ?? null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false,
      vocab: Object.fromEntries(pieces.map((p, id) => [p, id])),
      merges: derivedMerges(pieces, vocab.scores, vocab.types),
    },
  };
}

/** tokenizer_config.json: special tokens by name, and whether a BOS token starts every sequence. */
export function sentencePieceTokenizerConfig(vocab: Readonly<SentencePieceVocab>): Record<string, unknown> {
  const pieces = portablePieces(vocab);
  const piece = (id: number): string | null => pieces[id] ?? null;
  return { bos_token: piece(vocab.bosId), eos_token: piece(vocab.eosId), unk_token: piece(vocab.unkId), add_bos_token: vocab.addBos ?? true, add_eos_token: false };
}

// SentencePiece-style BPE over scored pieces, as llama2.c and llama.cpp's "llama" vocab do it:
// dummy-prefix space, code points as initial symbols, merge the best-scoring adjacent pair
// until none merges, then byte-fallback tokens <0xXX> for symbols outside the vocabulary.

import { TokenizerError } from "../errors.js";
import type { Tokenizer } from "./tokenizer.js";

/** llama.cpp's token types (tokenizer.ggml.token_type), for SentencePiece and BPE vocabularies alike. */
export enum PieceType {
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
}

export interface SentencePieceVocab {
  /** Pieces as stored: spaces written as `spaceSymbol`. */
  pieces: string[];
  scores: Float32Array | number[];
  types: PieceType[];
  bosId: number;
  /** Whether encoding starts with BOS by default (GGUF tokenizer.ggml.add_bos_token); default true. */
  addBos?: boolean;
  eosId: number;
  unkId: number;
  /** "▁" (U+2581) in SentencePiece/GGUF vocabularies, " " in llama2.c's tokenizer.bin. */
  spaceSymbol: string;
  addSpacePrefix: boolean;
  description: string;
  source: string;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

interface Symbol {
  text: string;
  prev: number;
  next: number;
  alive: boolean;
}

/** A max-heap of candidate merges ordered by score, then leftmost position. */
class MergeQueue {
  private items: { left: number; right: number; score: number; text: string }[] = [];
  private better(a: number, b: number): boolean {
    const x = this.items[a]!;
    const y = this.items[b]!;
    return x.score > y.score || (x.score === y.score && x.left < y.left);
  }
  push(item: { left: number; right: number; score: number; text: string }): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.better(i, parent)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }
  pop(): { left: number; right: number; score: number; text: string } | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < items.length && this.better(l, best)) best = l;
        if (r < items.length && this.better(r, best)) best = r;
        if (best === i) break;
        [items[i], items[best]] = [items[best]!, items[i]!];
        i = best;
      }
    }
    return top;
  }
}

export class SentencePieceTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly addsBos: boolean;
  readonly description: string;
  private readonly vocab: SentencePieceVocab;
  /** Text -> id for pieces that plain text may produce (not control, unknown or byte pieces). */
  private readonly textToId = new Map<string, number>();
  /** byte value -> byte-fallback token id. */
  private readonly byteToId = new Map<number, number>();
  /** token id -> the bytes it decodes to. */
  private readonly tokenBytes: Uint8Array[];

  /** The scored pieces as loaded, for writing the vocabulary into another format. */
  get vocabulary(): Readonly<SentencePieceVocab> {
    return this.vocab;
  }

  constructor(vocab: SentencePieceVocab) {
    this.vocab = vocab;
    this.vocabSize = vocab.pieces.length;
    this.bosId = vocab.bosId;
    this.addsBos = vocab.addBos ?? true;
    this.eosId = vocab.eosId;
    this.description = vocab.description;
    const encoder = new TextEncoder();
    this.tokenBytes = vocab.pieces.map((piece, id) => {
      const type = vocab.types[id];
      const byteMatch = BYTE_PIECE.exec(piece);
      if (type === PieceType.Byte && byteMatch) {
        const byte = parseInt(byteMatch[1]!, 16);
        if (!this.byteToId.has(byte)) this.byteToId.set(byte, id);
        return Uint8Array.of(byte);
      }
      if (type === PieceType.Control || type === PieceType.Unknown || type === PieceType.Unused) return new Uint8Array(0);
      if (!this.textToId.has(piece)) this.textToId.set(piece, id);
      return encoder.encode(piece.split(vocab.spaceSymbol).join(" "));
    });
  }

  encode(text: string, options: { bos?: boolean } = {}): number[] {
    const ids: number[] = (options.bos ?? this.addsBos) && this.bosId >= 0 ? [this.bosId] : [];
    if (text.length === 0) return ids;
    const space = this.vocab.spaceSymbol;
    const normalized = (this.vocab.addSpacePrefix ? " " + text : text).split(" ").join(space);
    const chars = Array.from(normalized); // code points, not UTF-16 units
    const symbols: Symbol[] = chars.map((ch, i) => ({ text: ch, prev: i - 1, next: i + 1 < chars.length ? i + 1 : -1, alive: true }));
    const queue = new MergeQueue();
    const tryPair = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const merged = symbols[left]!.text + symbols[right]!.text;
      const id = this.textToId.get(merged);
      if (id !== undefined) queue.push({ left, right, score: Number(this.vocab.scores[id]), text: merged });
    };
    for (let i = 0; i + 1 < symbols.length; i++) tryPair(i, i + 1);
    for (let item = queue.pop(); item; item = queue.pop()) {
      const left = symbols[item.left]!;
      const right = symbols[item.right]!;
      // Skip stale candidates whose symbols changed since they were queued.
      if (!left.alive || !right.alive || left.next !== item.right || left.text + right.text !== item.text) continue;
      left.text = item.text;
      right.alive = false;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next]!.prev = item.left;
      tryPair(left.prev, item.left);
      tryPair(item.left, left.next);
    }
    const encoder = new TextEncoder();
    for (let i = 0; i >= 0 && i < symbols.length; i = symbols[i]!.next) {
      const sym = symbols[i]!;
      const id = this.textToId.get(sym.text);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      for (const byte of encoder.encode(sym.text.split(space).join(" "))) {
        const byteId = this.byteToId.get(byte);
        ids.push(byteId ?? this.vocab.unkId);
      }
    }
    return ids;
  }

  decodeToken(id: number, prev: number | undefined): Uint8Array {
    const bytes = this.tokenBytes[id];
    if (!bytes) throw new TokenizerError(`token id ${id} is outside the vocabulary of ${this.vocabSize}`, { file: this.vocab.source });
    // SentencePiece drops the dummy-prefix space of the first piece after BOS.
    if ((prev === undefined || prev === this.bosId) && this.vocab.addSpacePrefix && bytes[0] === 0x20) return bytes.subarray(1);
    return bytes;
  }

  decode(ids: readonly number[]): string {
    const parts: Uint8Array[] = [];
    let prev: number | undefined;
    for (const id of ids) {
      parts.push(this.decodeToken(id, prev));
      prev = id;
    }
    return Buffer.concat(parts).toString("utf8");
  }
}

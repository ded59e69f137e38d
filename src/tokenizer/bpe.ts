// Byte-level BPE vocabularies (GPT-2, Llama 3, Qwen2: GGUF `tokenizer.ggml.model = gpt2`, a
// Hugging Face tokenizer.json with a BPE model behind a ByteLevel pre-tokenizer) in one form,
// with llama.cpp's named pre-tokenizers (`tokenizer.ggml.pre`): the regular expressions that
// split text into words before the merges run. Tokenizing goes through @huggingface/tokenizers
// on a tokenizer.json built from the vocabulary, so a GGUF file and the Hugging Face directory
// it came from tokenize alike.

import { TokenizerError, UnsupportedError } from "../errors.js";
import { bosPostProcessor } from "./bosTemplate.js";
import { PieceType } from "./sentencepiece.js";

export interface BpeVocab {
  /** Token text by id, in the byte-level alphabet (a space is "Ġ"). */
  tokens: string[];
  types: PieceType[];
  /** Merge rules, best first, as "left right". */
  merges: string[];
  /** llama.cpp's pre-tokenizer name (one of BPE_PRE_TOKENIZERS). */
  pre: string;
  bosId: number;
  eosId: number;
  /** Whether encoding adds BOS (tokenizer.ggml.add_bos_token). */
  addBos: boolean;
}

export interface BpePreTokenizer {
  /** The name llama.cpp's converter writes to tokenizer.ggml.pre. */
  name: string;
  /** Other names llama.cpp reads as the same pre-tokenizer. */
  aliases: string[];
  /** Applied in turn, each splitting the pieces the previous left (matches and the text between them). */
  regexes: string[];
  /** A word that is itself a token is taken whole, before any merge (llama.cpp sets it for Llama 3). */
  ignoreMerges: boolean;
  /** BOS is added when the file does not say (llama.cpp's default for this pre-tokenizer). */
  addBos: boolean;
}

// The regular expressions as llama.cpp's llama-vocab.cpp spells them (the Hugging Face files of
// Llama 3 and Qwen2 write the contractions as (?i:'s|...), which means the same).
const GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const HF_CONTRACTIONS = "(?i:'s|'t|'re|'ve|'m|'ll|'d)";
const llama3Style = (digits: string): string => `${CONTRACTIONS}|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|${digits}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+`;

export const BPE_PRE_TOKENIZERS: readonly BpePreTokenizer[] = [
  { name: "llama-bpe", aliases: ["llama3", "llama-v3"], regexes: [llama3Style("\\p{N}{1,3}")], ignoreMerges: true, addBos: true },
  { name: "qwen2", aliases: [], regexes: [llama3Style("\\p{N}")], ignoreMerges: false, addBos: false },
  { name: "gpt-2", aliases: [], regexes: [GPT2_REGEX], ignoreMerges: false, addBos: false },
  { name: "smollm", aliases: ["starcoder"], regexes: ["\\p{N}", GPT2_REGEX], ignoreMerges: false, addBos: false },
  { name: "default", aliases: [], regexes: ["[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_REGEX, "\\p{N}+", "[0-9][0-9][0-9]"], ignoreMerges: false, addBos: false },
];

const PRE_NAMES = BPE_PRE_TOKENIZERS.flatMap((p) => [p.name, ...p.aliases]);

export function bpePreTokenizer(name: string, source: string): BpePreTokenizer {
  const found = BPE_PRE_TOKENIZERS.find((p) => p.name === name || p.aliases.includes(name));
  if (!found) {
    throw new UnsupportedError(`${source}: BPE pre-tokenizer "${name}" is not supported`, { file: source, got: name, hint: `supported: ${PRE_NAMES.join(", ")}` });
  }
  return found;
}

/** An entry of tokenizer.json's added_tokens (matched as a whole before the model runs). */
export function addedToken(id: number, content: string, special: boolean): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

/** The vocabulary as a Hugging Face tokenizer.json: the pre-tokenizer's regexes, then byte-level BPE. */
export function bpeTokenizerJson(vocab: Readonly<BpeVocab>, source: string): Record<string, unknown> {
  const pre = bpePreTokenizer(vocab.pre, source);
  const added = vocab.tokens.flatMap((text, id) => {
    const type = vocab.types[id];
    return type === PieceType.Control || type === PieceType.UserDefined ? [addedToken(id, text, type === PieceType.Control)] : [];
  });
  // No prototype: a token may be called "toString" or "constructor".
  const ids = Object.create(null) as Record<string, number>;
  vocab.tokens.forEach((text, id) => {
    ids[text] = id; // a repeated text maps to its last id, as llama.cpp's token_to_id does
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        ...pre.regexes.map((regex) => ({ type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false })),
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    // transformers adds BOS exactly when the vocabulary does (tokenizer.ggml.add_bos_token).
    post_processor: vocab.addBos && vocab.bosId >= 0 ? bosPostProcessor(vocab.tokens[vocab.bosId]!, vocab.bosId) : null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: pre.ignoreMerges, vocab: ids, merges: vocab.merges,
    },
  };
}

/** tokenizer_config.json for the vocabulary: BOS/EOS by text, and whether BOS is added. */
export function bpeTokenizerConfig(vocab: Readonly<BpeVocab>): Record<string, unknown> {
  const text = (id: number): string | null => (id >= 0 && id < vocab.tokens.length ? vocab.tokens[id]! : null);
  return { add_bos_token: vocab.addBos, add_eos_token: false, bos_token: text(vocab.bosId), eos_token: text(vocab.eosId), clean_up_tokenization_spaces: false };
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

/** The regexes a tokenizer.json's pre-tokenizer splits with, when it is byte-level; undefined otherwise. */
function byteLevelRegexes(pre: unknown): string[] | undefined {
  if (!isObject(pre)) return undefined;
  // GPT-2's own file: one ByteLevel step with its built-in regex.
  // (add_prefix_space has no GGUF equivalent: llama.cpp never adds a leading space to BPE text.)
  if (pre["type"] === "ByteLevel") return pre["use_regex"] === false || pre["add_prefix_space"] === true ? undefined : [GPT2_REGEX];
  if (pre["type"] !== "Sequence" || !Array.isArray(pre["pretokenizers"])) return undefined;
  const steps = pre["pretokenizers"] as unknown[];
  const last = steps.at(-1);
  if (!isObject(last) || last["type"] !== "ByteLevel" || last["use_regex"] !== false || last["add_prefix_space"] === true) return undefined;
  const regexes: string[] = [];
  for (const step of steps.slice(0, -1)) {
    if (!isObject(step) || step["type"] !== "Split" || step["behavior"] !== "Isolated" || step["invert"] === true) return undefined;
    const pattern = step["pattern"];
    if (!isObject(pattern) || typeof pattern["Regex"] !== "string") return undefined;
    regexes.push((pattern["Regex"]).replace(HF_CONTRACTIONS, CONTRACTIONS));
  }
  return regexes;
}

/**
 * The BPE vocabulary of a Hugging Face tokenizer.json, for a GGUF file: tokens by id (ids the
 * file does not name, up to the model's vocabSize, become unused "[PADn]" placeholders, as
 * llama.cpp's converter writes them), added special tokens as control tokens, the merges, and the
 * pre-tokenizer recognized by its regexes.
 */
export function bpeVocabFromTokenizerJson(json: Json, vocabSize: number, ids: { bosId: number; eosId: number; addBos: boolean }, source: string): BpeVocab {
  const model = json["model"];
  const unsupported = (what: string): UnsupportedError =>
    new UnsupportedError(`${source}: ${what}; only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2 style) can be written as a GGUF BPE vocabulary`, { file: source });
  if (!isObject(model) || model["type"] !== "BPE" || !isObject(model["vocab"])) throw unsupported(`the tokenizer model is ${isObject(model) ? String(model["type"]) : "missing"}, not BPE`);
  const regexes = byteLevelRegexes(json["pre_tokenizer"]);
  if (!regexes) throw unsupported("the pre-tokenizer is not byte-level");
  const pre = BPE_PRE_TOKENIZERS.find((p) => p.regexes.length === regexes.length && p.regexes.every((r, i) => r === regexes[i]));
  if (!pre) throw unsupported(`its pre-tokenizer regexes (${JSON.stringify(regexes)}) match none of llama.cpp's named pre-tokenizers (${PRE_NAMES.join(", ")})`);
  const tokens: (string | undefined)[] = [];
  const types: PieceType[] = [];
  for (const [text, id] of Object.entries(model["vocab"])) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0) throw new TokenizerError(`${source}: vocab entry ${JSON.stringify(text)} has id ${String(id)}`, { file: source });
    tokens[id] = text;
    types[id] = PieceType.Normal;
  }
  for (const token of Array.isArray(json["added_tokens"]) ? (json["added_tokens"] as unknown[]) : []) {
    if (!isObject(token) || typeof token["id"] !== "number" || typeof token["content"] !== "string") continue;
    tokens[token["id"]] = token["content"];
    types[token["id"]] = token["special"] === true ? PieceType.Control : PieceType.UserDefined;
  }
  if (tokens.length > vocabSize) throw new TokenizerError(`${source}: the tokenizer has ids up to ${tokens.length - 1}, beyond the model's ${vocabSize} embeddings`, { file: source });
  const filled = Array.from({ length: vocabSize }, (_, id) => tokens[id] ?? `[PAD${id}]`);
  const filledTypes = Array.from({ length: vocabSize }, (_, id) => (tokens[id] === undefined ? PieceType.Unused : types[id]!));
  const merges = Array.isArray(model["merges"]) ? (model["merges"] as unknown[]).map((m) => (Array.isArray(m) ? m.join(" ") : String(m))) : [];
  return { tokens: filled, types: filledTypes, merges, pre: pre.name, ...ids };
}

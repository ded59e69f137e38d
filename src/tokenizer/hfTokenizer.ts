// A Hugging Face tokenizer.json (with tokenizer_config.json), through the pure TypeScript
// @huggingface/tokenizers library. The chat template is ignored; BOS is added by shortgpt
// itself, when transformers would add it (bosTemplate.ts), so every format tokenizes alike.

import { existsSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer as HfTokenizerImpl } from "@huggingface/tokenizers";
import { TokenizerError } from "../errors.js";
import { readWholeFile } from "../formats/file.js";
import { parseJson } from "../formats/json.js";
import { type BpeVocab, bpeTokenizerConfig, bpeTokenizerJson, bpeVocabFromTokenizerJson } from "./bpe.js";
import { addsBosByDefault } from "./bosTemplate.js";
import type { Tokenizer } from "./tokenizer.js";
import { checkTokenizerJsonShape } from "./tokenizerJsonShape.js";

function readJson(path: string): Record<string, unknown> {
  const text = readWholeFile(path, TokenizerError).toString("utf8"); // a folder, FIFO or unreadable file: its own message
  try {
    const value: unknown = parseJson(text);
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not a JSON object");
    return value as Record<string, unknown>;
  } catch (err) {
    throw new TokenizerError(`${path}: ${(err as Error).message}`, { file: path, hint: "the tokenizer file is corrupt" });
  }
}

/** A special token in tokenizer_config.json is a string or an AddedToken-like object. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value !== null && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") return (value as { content: string }).content;
  return undefined;
}

/**
 * Runs the library on a text: what it throws comes from the tokenizer.json it was built from
 * (the outline is checked, not every field of every step), so it is that file's error.
 */
function guarded<T>(source: string, call: () => T): T {
  try {
    return call();
  } catch (err) {
    throw new TokenizerError(`${source}: the tokenizer failed (${(err as Error).message})`, { file: source, hint: "the tokenizer file is corrupt or of a kind @huggingface/tokenizers does not support" });
  }
}

/** A tokenizer.json run by @huggingface/tokenizers; keeps the JSON so the vocabulary can be written to other formats. */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly addsBos: boolean;
  readonly description: string;

  constructor(
    private readonly impl: HfTokenizerImpl,
    readonly json: Record<string, unknown>,
    /** The BOS and EOS tokens (-1 when there is none) and whether BOS is added. */
    specialIds: { bosId: number; eosId: number; addBos: boolean },
    vocabSize: number,
    readonly source: string,
    description?: string,
    /** The GGUF BPE vocabulary the tokenizer.json was built from, kept whole (token types included). */
    private readonly bpe?: BpeVocab,
  ) {
    this.vocabSize = vocabSize;
    this.bosId = specialIds.bosId;
    this.addsBos = specialIds.addBos && specialIds.bosId >= 0;
    this.eosId = specialIds.eosId;
    this.description = description ?? `Hugging Face tokenizer.json (${source}), ${vocabSize} tokens`;
  }

  /** The byte-level BPE vocabulary, for a GGUF file (UnsupportedError when the tokenizer is of another kind). */
  bpeVocabulary(): BpeVocab {
    return this.bpe ?? bpeVocabFromTokenizerJson(this.json, this.vocabSize, { bosId: this.bosId, eosId: this.eosId, addBos: this.addsBos }, this.source);
  }

  encode(text: string, options: { bos?: boolean } = {}): number[] {
    const ids = this.guard(() => this.impl.encode(text, { add_special_tokens: false }).ids.map(Number));
    return (options.bos ?? this.addsBos) && this.bosId >= 0 ? [this.bosId, ...ids] : ids;
  }

  private guard<T>(call: () => T): T {
    return guarded(this.source, call);
  }

  decode(ids: readonly number[]): string {
    return this.guard(() => this.impl.decode([...ids], { skip_special_tokens: true }));
  }

  decodeToken(id: number, prev: number | undefined): Uint8Array {
    // Decoding pieces one by one loses the decoder's context (spaces, byte fallback), so the
    // bytes a token adds are the difference between decoding with and without it.
    const before = prev === undefined ? "" : this.impl.decode([prev], { skip_special_tokens: true });
    const both = this.impl.decode(prev === undefined ? [id] : [prev, id], { skip_special_tokens: true });
    return new TextEncoder().encode(both.startsWith(before) ? both.slice(before.length) : both);
  }
}

/**
 * The tokenizer of a Hugging Face model directory, or undefined when it has no tokenizer.json.
 * BOS/EOS ids come from tokenizer_config.json's tokens, else from config.json's *_token_id.
 */
export function readHfTokenizer(dir: string, config: Record<string, unknown>, vocabSize: number): Tokenizer | undefined {
  const path = join(dir, "tokenizer.json");
  if (!existsSync(path)) return undefined;
  const json = readJson(path);
  checkTokenizerJsonShape(json, vocabSize, path);
  const configPath = join(dir, "tokenizer_config.json");
  const tokenizerConfig = existsSync(configPath) ? readJson(configPath) : {};
  return createHfTokenizer(json, tokenizerConfig, config, vocabSize, path);
}

/** @huggingface/tokenizers' tokenizer for tokenizer.json and tokenizer_config.json contents; a failure names `source`. */
function buildImpl(json: Record<string, unknown>, tokenizerConfig: Record<string, unknown>, source: string): HfTokenizerImpl {
  try {
    return new HfTokenizerImpl(json, tokenizerConfig);
  } catch (err) {
    throw new TokenizerError(`${source}: cannot build the tokenizer (${(err as Error).message})`, { file: source, hint: "the tokenizer type may not be supported by @huggingface/tokenizers" });
  }
}

/** Longer than any special token's text (e.g. "<|begin_of_text|>"), so a longer one is not looked up. */
const MAX_SPECIAL_TOKEN_CHARS = 256;

/** A tokenizer from tokenizer.json and tokenizer_config.json contents (config: the model's config.json, for *_token_id). */
function createHfTokenizer(json: Record<string, unknown>, tokenizerConfig: Record<string, unknown>, config: Record<string, unknown>, vocabSize: number, source: string): HfTokenizer {
  const impl = buildImpl(json, tokenizerConfig, source);
  const textOf = (key: "bos" | "eos"): string | undefined => tokenText(tokenizerConfig[`${key}_token`]);
  const idOf = (key: "bos" | "eos"): number => {
    // An explicit null (Qwen's bos_token) means none, whatever config.json says, as transformers reads it.
    if (tokenizerConfig[`${key}_token`] === null) return -1;
    const text = textOf(key);
    // One token's text is short; encoding a megabyte-long "token" took seconds for nothing.
    const fromText = text === undefined || text.length > MAX_SPECIAL_TOKEN_CHARS ? undefined : guarded(source, () => impl.encode(text, { add_special_tokens: false }).ids.map(Number));
    if (fromText && fromText.length === 1) return fromText[0]!;
    const fromConfig = config[`${key}_token_id`];
    return typeof fromConfig === "number" ? fromConfig : -1;
  };
  // Documents and benchmark contexts start with BOS exactly when transformers' encoding does (e.g.
  // Llama, Mistral, Gemma: yes; GPT-2, Qwen: no), as lm-eval's HFLM with add_bos_token unset.
  const bosId = idOf("bos");
  const bosText = bosId >= 0 ? (textOf("bos") ?? guarded(source, () => impl.id_to_token(bosId)) ?? undefined) : undefined;
  return new HfTokenizer(impl, json, { bosId, eosId: idOf("eos"), addBos: addsBosByDefault(json, bosText) }, vocabSize, source);
}

/** The tokenizer of a GGUF byte-level BPE vocabulary: its special ids as the file gives them, the vocabulary kept whole. */
export function bpeTokenizer(vocab: BpeVocab, source: string, description: string): HfTokenizer {
  const json = bpeTokenizerJson(vocab, source);
  const specialIds = { bosId: vocab.bosId, eosId: vocab.eosId, addBos: vocab.addBos };
  return new HfTokenizer(buildImpl(json, bpeTokenizerConfig(vocab), source), json, specialIds, vocab.tokens.length, source, description, vocab);
}

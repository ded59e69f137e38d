// The outline of a tokenizer.json checked before @huggingface/tokenizers sees it: the library
// iterates whatever it is given (a string where an array belongs becomes a million one-character
// tokens), so each part it walks must have its type, and every id must fit the model's vocabulary.

import { TokenizerError } from "../errors.js";
import { jsonPreview } from "../formats/json.js";

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Longer than any real token (vocabularies top out at a few hundred bytes); a megabyte "token" cost 380 MB in the library. */
const MAX_TOKEN_CHARS = 4096;
/** Texts inside the normalizer, pre-tokenizer, post-processor and decoder (patterns, replacements, prefixes) are short. */
const MAX_PIPELINE_TEXT = 1024;
/** Numbers there are counts and offsets of a few characters or type ids; a huge one is a loop bound. */
const MAX_PIPELINE_NUMBER = 1 << 20;
/** Fields of the pipeline parts that the library uses as text. */
const PIPELINE_TEXT_FIELDS = new Set(["type", "content", "prepend", "replacement", "String", "Regex", "delimiter", "id"]);
/** Fields that list the steps of a Sequence. */
const PIPELINE_LISTS = new Set(["normalizers", "pretokenizers", "decoders", "processors"]);

/**
 * Walks one pipeline part (normalizer, pre_tokenizer, post_processor, decoder): text fields are
 * short strings, numbers small, step lists arrays of objects. Recursion is bounded by the
 * JSON nesting bound the file was parsed with.
 */
function checkPipelinePart(value: unknown, where: string, fail: (what: string, value: unknown) => never): void {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || Math.abs(value) > MAX_PIPELINE_NUMBER) fail(`${where}, expected a small number,`, value);
  } else if (typeof value === "string") {
    // SentencePiece's precompiled character map is the one long text (a few hundred KB of base64).
    if (value.length > MAX_PIPELINE_TEXT && !where.endsWith(".precompiled_charsmap")) fail(`${where}, a text of ${value.length} characters,`, value);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => checkPipelinePart(v, `${where}[${i}]`, fail));
  } else if (isObject(value)) {
    for (const [key, v] of Object.entries(value)) {
      if (PIPELINE_TEXT_FIELDS.has(key) && typeof v !== "string" && !(key === "id" && typeof v === "number")) fail(`${where}.${key}, expected a string,`, v);
      if (PIPELINE_LISTS.has(key) && (!Array.isArray(v) || !v.every(isObject))) fail(`${where}.${key}, expected a list of steps,`, v);
      checkPipelinePart(v, `${where}.${key}`, fail);
    }
  }
}

/** Throws a TokenizerError naming the first part of `json` that is not what a tokenizer.json holds. */
export function checkTokenizerJsonShape(json: Readonly<Record<string, unknown>>, vocabSize: number, source: string): void {
  const fail = (what: string, value: unknown): never => {
    throw new TokenizerError(`${source}: ${what} is ${jsonPreview(value)}`, { file: source, hint: "the tokenizer file is corrupt; re-download it" });
  };
  const checkId = (where: string, id: unknown): void => {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id >= vocabSize) fail(`${where} has id ${jsonPreview(id)}, outside the model's ${vocabSize} tokens;`, id);
  };
  for (const part of ["normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"]) {
    const v = json[part];
    if (v !== undefined && v !== null && !isObject(v)) fail(`${part}, expected an object or null,`, v);
    if (part !== "truncation" && part !== "padding") checkPipelinePart(v, part, fail);
  }
  const checkText = (where: string, text: string): void => {
    if (text.length > MAX_TOKEN_CHARS) fail(`${where}, a token of ${text.length} characters,`, text);
  };
  const model = json["model"];
  if (!isObject(model)) fail("model, expected an object,", model);
  const m = model as Record<string, unknown>;
  // Besides vocab and merges, a model holds settings: scalars (a list as end_of_word_suffix overflowed the library's stack).
  for (const [key, v] of Object.entries(m)) {
    if (key === "vocab" || key === "merges") continue;
    if (v !== null && typeof v === "object") fail(`model.${key}, expected a string, number, boolean or null,`, v);
    checkPipelinePart(v, `model.${key}`, fail);
  }
  const vocab = m["vocab"];
  if (Array.isArray(vocab)) {
    // Unigram: [piece, score] pairs, the id being the position.
    if (vocab.length > vocabSize) fail(`model.vocab has ${vocab.length} entries for the model's ${vocabSize} tokens:`, vocab.length);
    vocab.forEach((entry, i) => {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number") fail(`model.vocab[${i}], expected [piece, score],`, entry);
      checkText(`model.vocab[${i}]`, (entry as [string, number])[0]);
    });
  } else if (isObject(vocab)) {
    for (const [piece, id] of Object.entries(vocab)) {
      checkId(`model.vocab entry ${jsonPreview(piece)}`, id);
      checkText("model.vocab entry", piece);
    }
  } else if (vocab !== undefined) {
    fail("model.vocab, expected an object or an array,", vocab);
  }
  const merges = m["merges"];
  if (merges !== undefined && merges !== null) {
    if (!Array.isArray(merges)) fail("model.merges, expected an array,", merges);
    (merges as unknown[]).forEach((merge, i) => {
      const pair = Array.isArray(merge) && merge.length === 2 && merge.every((s) => typeof s === "string");
      if (typeof merge !== "string" && !pair) fail(`model.merges[${i}], expected "a b" or ["a", "b"],`, merge);
      checkText(`model.merges[${i}]`, typeof merge === "string" ? merge : (merge as string[]).join(" "));
    });
  }
  const added = json["added_tokens"];
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) fail("added_tokens, expected an array,", added);
    (added as unknown[]).forEach((token, i) => {
      if (!isObject(token) || typeof token["content"] !== "string") fail(`added_tokens[${i}], expected {"id": ..., "content": "..."},`, token);
      checkText(`added_tokens[${i}].content`, (token as { content: string }).content);
      checkId(`added_tokens[${i}]`, (token as Record<string, unknown>)["id"]);
    });
  }
}

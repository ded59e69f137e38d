// The outline of a tokenizer.json checked before @huggingface/tokenizers sees it: the library
// iterates whatever it is given (a string where an array belongs becomes a million one-character
// tokens), so each part it walks must have its type, and every id must fit the model's vocabulary.

import { TokenizerError } from "../errors.js";
import { jsonPreview } from "../formats/json.js";

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
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
  }
  const model = json["model"];
  if (!isObject(model)) fail("model, expected an object,", model);
  const m = model as Record<string, unknown>;
  const vocab = m["vocab"];
  if (Array.isArray(vocab)) {
    // Unigram: [piece, score] pairs, the id being the position.
    if (vocab.length > vocabSize) fail(`model.vocab has ${vocab.length} entries for the model's ${vocabSize} tokens:`, vocab.length);
    vocab.forEach((entry, i) => {
      if (!Array.isArray(entry) || typeof entry[0] !== "string" || typeof entry[1] !== "number") fail(`model.vocab[${i}], expected [piece, score],`, entry);
    });
  } else if (isObject(vocab)) {
    for (const [piece, id] of Object.entries(vocab)) checkId(`model.vocab entry ${jsonPreview(piece)}`, id);
  } else if (vocab !== undefined) {
    fail("model.vocab, expected an object or an array,", vocab);
  }
  const merges = m["merges"];
  if (merges !== undefined && merges !== null) {
    if (!Array.isArray(merges)) fail("model.merges, expected an array,", merges);
    (merges as unknown[]).forEach((merge, i) => {
      const pair = Array.isArray(merge) && merge.length === 2 && merge.every((s) => typeof s === "string");
      if (typeof merge !== "string" && !pair) fail(`model.merges[${i}], expected "a b" or ["a", "b"],`, merge);
    });
  }
  const added = json["added_tokens"];
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) fail("added_tokens, expected an array,", added);
    (added as unknown[]).forEach((token, i) => {
      if (!isObject(token) || typeof token["content"] !== "string") fail(`added_tokens[${i}], expected {"id": ..., "content": "..."},`, token);
      checkId(`added_tokens[${i}]`, (token as Record<string, unknown>)["id"]);
    });
  }
}

// Whether a Hugging Face tokenizer puts BOS before every text, as transformers 5 decides it: the
// tokenizer.json post-processor's template alone (transformers 5 drops tokenizer_config.json's
// add_bos_token when a tokenizer.json exists; 4.x let Llama's and Gemma's classes rebuild the
// template from it). And the template shortgpt writes so that transformers adds BOS.

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

/** The special token a TemplateProcessing's single-sequence template starts with, if any. */
function templateFirstToken(processor: unknown, depth = 0): string | undefined {
  if (!isObject(processor) || depth > 8) return undefined;
  if (processor["type"] === "Sequence" && Array.isArray(processor["processors"])) {
    for (const p of processor["processors"] as unknown[]) {
      const first = templateFirstToken(p, depth + 1);
      if (first !== undefined) return first;
    }
    return undefined;
  }
  if (processor["type"] !== "TemplateProcessing" || !Array.isArray(processor["single"])) return undefined;
  const head: unknown = (processor["single"] as unknown[])[0];
  const special = isObject(head) ? head["SpecialToken"] : undefined;
  return isObject(special) && typeof special["id"] === "string" ? special["id"] : undefined;
}

/** True when encoding with this tokenizer.json starts with the BOS token `bosText`. */
export function addsBosByDefault(json: Json, bosText: string | undefined): boolean {
  return bosText !== undefined && templateFirstToken(json["post_processor"]) === bosText;
}

/** tokenizer.json's post-processor that puts BOS before every sequence (and before each of a pair, as Llama's). */
export function bosPostProcessor(bosText: string, bosId: number): Json {
  const bos = (typeId: number): Json => ({ SpecialToken: { id: bosText, type_id: typeId } });
  const seq = (id: string, typeId: number): Json => ({ Sequence: { id, type_id: typeId } });
  return {
    type: "TemplateProcessing",
    single: [bos(0), seq("A", 0)],
    pair: [bos(0), seq("A", 0), bos(1), seq("B", 1)],
    special_tokens: { [bosText]: { id: bosText, ids: [bosId], tokens: [bosText] } },
  };
}

// Whether a Hugging Face tokenizer puts BOS before every text, as transformers decides it: the
// tokenizer.json post-processor's template (what tokenizers-backed classes apply), unless the
// tokenizer class is one that rebuilds that template from tokenizer_config.json's add_bos_token
// (Llama's and Gemma's). And the template shortgpt writes so that transformers adds BOS.

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === "object" && !Array.isArray(v);

/** Tokenizer classes whose add_bos_token setting decides, whatever tokenizer.json's template says. */
const CLASSES_WITH_ADD_BOS = /^(Llama|CodeLlama|Gemma|Gemma2|Gemma3)Tokenizer(Fast)?$/;

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

/** True when encoding with this tokenizer.json and tokenizer_config.json starts with the BOS token `bosText`. */
export function addsBosByDefault(json: Json, tokenizerConfig: Json, bosText: string | undefined): boolean {
  if (bosText === undefined) return false;
  const explicit = tokenizerConfig["add_bos_token"];
  const tokenizerClass = tokenizerConfig["tokenizer_class"];
  if (typeof explicit === "boolean" && typeof tokenizerClass === "string" && CLASSES_WITH_ADD_BOS.test(tokenizerClass)) return explicit;
  return templateFirstToken(json["post_processor"]) === bosText;
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

// JSON read from model files (config.json, safetensors headers, tokenizer.json): nesting is
// bounded before parsing, because V8 parses any depth but every recursive walker after it
// (JSON.stringify in a message, a tokenizer library) overflows the stack on a few thousand levels.

/** Deeper than any real config or tokenizer (tokenizer.json reaches about 8 levels). */
export const MAX_JSON_DEPTH = 64;

/**
 * The position where `text` first opens a container deeper than `maxDepth`, or -1. Brackets
 * inside strings do not count; the text need not be valid JSON (JSON.parse judges that).
 */
export function jsonTooDeepAt(text: string, maxDepth = MAX_JSON_DEPTH): number {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      // Skip the string, escapes included.
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c) i++;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > maxDepth) return i;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return -1;
}

/** JSON.parse with nesting bounded; throws a SyntaxError (callers wrap it in their typed error) when too deep. */
export function parseJson(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  const at = jsonTooDeepAt(text, maxDepth);
  if (at >= 0) throw new SyntaxError(`nesting deeper than ${maxDepth} levels at position ${at}`);
  try {
    return JSON.parse(text);
  } catch (err) {
    // V8 quotes the text around the error, newlines included; a message must stay one line.
    throw new SyntaxError((err as Error).message.replace(/\s*\n\s*/g, " "));
  }
}

/** A JSON value shortened for a one-line message (a hostile file can hold megabytes in one field). */
export function jsonPreview(value: unknown, maxChars = 80): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    text = Array.isArray(value) ? "[...]" : "{...}"; // too deep or cyclic: only in-memory values get here
  }
  text ??= String(value);
  return text.length > maxChars ? `${text.slice(0, maxChars - 3)}...` : text;
}

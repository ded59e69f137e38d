// JSON written back with the float spelling of the file it came from: JSON.parse turns 3.0 into
// 3, and transformers 5 checks config.json field types strictly (final_logit_softcapping: 3 is
// refused as an int), so a rewritten config.json keeps "3.0" wherever the original had a float.

/** Keys whose value (a number, or an array of numbers) is spelled with a fraction or an exponent somewhere in the text. */
export function floatSpelledKeys(text: string): Set<string> {
  const keys = new Set<string>();
  const number = String.raw`-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?`;
  const scalar = new RegExp(String.raw`"((?:[^"\\]|\\.)*)"\s*:\s*(${number})`, "g");
  // Arrays of numbers, some maybe non-finite floats as transformers spells them ({"__float__": "Infinity"}: Mamba-2's time_step_limit).
  const spelledFloat = String.raw`\{\s*"__float__"\s*:\s*"[^"]*"\s*\}`;
  const array = new RegExp(String.raw`"((?:[^"\\]|\\.)*)"\s*:\s*\[((?:[-+\d.eE,\s]|${spelledFloat})*)\]`, "g");
  const floaty = (s: string): boolean => /[.eE]/.test(s.replace(new RegExp(spelledFloat, "g"), ""));
  for (const m of text.matchAll(scalar)) if (floaty(m[2]!)) keys.add(JSON.parse(`"${m[1]!}"`) as string);
  for (const m of text.matchAll(array)) if (floaty(m[2]!)) keys.add(JSON.parse(`"${m[1]!}"`) as string);
  return keys;
}

const FLOAT_MARK = "\u0000float:";

/** JSON.stringify(value, null, indent), but integral numbers under `floatKeys` (and in their arrays) are written as 3.0. */
export function stringifyKeepingFloats(value: unknown, floatKeys: ReadonlySet<string>, indent = 2): string {
  const mark = (v: unknown): unknown => (typeof v === "number" && Number.isInteger(v) ? `${FLOAT_MARK}${v}` : v);
  const text = JSON.stringify(value, (key, v: unknown) => {
    if (!floatKeys.has(key)) return v;
    return Array.isArray(v) ? v.map(mark) : mark(v);
  }, indent);
  return text.replace(/"\\u0000float:(-?\d+)"/g, "$1.0");
}

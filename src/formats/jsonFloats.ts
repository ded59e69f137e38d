// JSON that keeps a float written as a float: JSON.parse turns 1.0 into 1 and JSON.stringify
// writes it back as 1, which transformers' strict config classes (5.x) refuse for a float field
// (MambaConfig.time_step_scale). A rewritten config.json keeps the original's float spelling.

/** Keys (at any depth) whose value in `text` is a number written with a fraction or an exponent. */
export function floatValuedKeys(text: string): Set<string> {
  const keys = new Set<string>();
  const pattern = /"((?:[^"\\]|\\.)*)"\s*:\s*-?\d+(\.\d+)?([eE][+-]?\d+)?/g;
  for (let m = pattern.exec(text); m !== null; m = pattern.exec(text)) {
    if (m[2] !== undefined || m[3] !== undefined) keys.add(JSON.parse(`"${m[1]!}"`) as string);
  }
  return keys;
}

const MARK = "\u0001float\u0001";

/** JSON.stringify(value, null, 2), with integral numbers under `floatKeys` written as floats (1 -> 1.0). */
export function stringifyKeepingFloats(value: unknown, floatKeys: ReadonlySet<string>): string {
  const text = JSON.stringify(value, (key, v: unknown) => (floatKeys.has(key) && typeof v === "number" && Number.isInteger(v) ? `${MARK}${v}` : v), 2);
  // The marker is a control character, which JSON.stringify escapes as \u0001.
  return text.replace(/"\\u0001float\\u0001(-?\d+)"/g, "$1.0");
}

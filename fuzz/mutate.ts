// Structure-aware mutations: binary fields set to extremes, lengths and counts inflated, values
// replaced by deep nesting, truncations at structure boundaries, bit flips; JSON values replaced,
// deleted, duplicated, retyped and nested. Every choice comes from a seeded generator.

import { mulberry32 } from "../src/util/random.js";
import type { BinaryLayout, Field } from "./fields.js";

export interface Rng {
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
}

export function createRng(seed: number): Rng {
  const next = mulberry32(seed);
  return {
    next,
    int: (n) => Math.floor(next() * n),
    pick: (items) => items[Math.floor(next() * items.length)]!,
  };
}

export interface Mutated {
  bytes: Buffer;
  /** What was done, for the report and for reproducing by hand. */
  what: string;
}

const INT32_EXTREMES = [0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffb, 0x00ffffff, 0x01000000, 0x10000];
const INT64_EXTREMES = [0n, 1n, 0xffffffffn, 1n << 32n, 1n << 40n, (1n << 53n) + 1n, 1n << 62n, 1n << 63n, (1n << 64n) - 1n];
const FLOAT_EXTREMES = [Number.NaN, Infinity, -Infinity, 0, -0, 1e38, -1e38, 1e-45, -1];

function setField(buf: Buffer, field: Field, rng: Rng): string {
  if (field.kind === "float") {
    const v = rng.pick(FLOAT_EXTREMES);
    if (field.width === 4) buf.writeFloatLE(v, field.offset);
    else buf.writeDoubleLE(v, field.offset);
    return `${field.name} = ${v}`;
  }
  const relative = rng.next() < 0.3;
  if (field.width === 4) {
    const old = buf.readUInt32LE(field.offset);
    const v = relative ? (old + rng.pick([1, -1, old, 1000 * old])) >>> 0 : rng.pick(INT32_EXTREMES);
    buf.writeUInt32LE(v >>> 0, field.offset);
    return `${field.name} = ${v >>> 0} (was ${old})`;
  }
  const old = buf.readBigUInt64LE(field.offset);
  const v = relative ? BigInt.asUintN(64, old + rng.pick([1n, -1n, old, 1000n * old])) : rng.pick(INT64_EXTREMES);
  buf.writeBigUInt64LE(v, field.offset);
  return `${field.name} = ${v} (was ${old})`;
}

function truncate(buf: Buffer, layout: BinaryLayout | undefined, rng: Rng): Mutated {
  const at = layout && rng.next() < 0.8
    ? Math.max(0, Math.min(buf.length - 1, rng.pick(layout.boundaries) + rng.pick([0, 0, -1, 1, -4, 4])))
    : rng.int(buf.length);
  return { bytes: buf.subarray(0, at), what: `truncated at ${at} of ${buf.length}` };
}

function bitFlips(buf: Buffer, headerBytes: number, rng: Rng): Mutated {
  const out = Buffer.from(buf);
  const n = 1 + rng.int(8);
  const at: number[] = [];
  for (let i = 0; i < n; i++) {
    // Most flips land in the header, where a flip changes meaning rather than a weight.
    const pos = rng.next() < 0.7 ? rng.int(Math.max(1, Math.min(headerBytes, out.length))) : rng.int(out.length);
    out[pos] = out[pos]! ^ (1 << rng.int(8));
    at.push(pos);
  }
  return { bytes: out, what: `bit flips at ${at.join(",")}` };
}

/** A GGUF array value nested `depth` deep around one u8, as bytes (type tag included). */
function nestedGgufArray(depth: number): Buffer {
  const level = Buffer.alloc(12);
  level.writeUInt32LE(9, 0);
  level.writeBigUInt64LE(1n, 4);
  const inner = Buffer.alloc(13);
  inner.writeBigUInt64LE(1n, 4);
  const tag = Buffer.alloc(4);
  tag.writeUInt32LE(9);
  return Buffer.concat([tag, ...new Array<Buffer>(Math.max(0, depth - 1)).fill(level), inner]);
}

/** One mutation of a binary file whose fields `layout` lists (GGUF regions allow nesting and retagging). */
export function mutateBinary(seed: Buffer, layout: BinaryLayout, rng: Rng): Mutated {
  const headerBytes = Math.max(...layout.boundaries, 64);
  const roll = rng.next();
  if (roll < 0.45 && layout.fields.length > 0) {
    const out = Buffer.from(seed);
    const changes = [setField(out, rng.pick(layout.fields), rng)];
    if (rng.next() < 0.3) changes.push(setField(out, rng.pick(layout.fields), rng));
    return { bytes: out, what: `field ${changes.join("; ")}` };
  }
  if (roll < 0.6) return truncate(seed, layout, rng);
  if (roll < 0.75 || layout.values.length === 0) return bitFlips(seed, headerBytes, rng);
  const region = rng.pick(layout.values);
  if (roll < 0.87) {
    const depth = rng.pick([2, 8, 9, 100, 10_000, 100_000]);
    return { bytes: Buffer.concat([seed.subarray(0, region.typeOffset), nestedGgufArray(depth), seed.subarray(region.end)]), what: `${region.name} replaced by arrays nested ${depth} deep` };
  }
  const out = Buffer.from(seed);
  const type = rng.int(14);
  out.writeUInt32LE(type, region.typeOffset);
  return { bytes: out, what: `${region.name} type tag = ${type}` };
}

// ---------------------------------------------------------------------------------------------
// JSON

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
const PLACEHOLDER = "\u0000fuzz-placeholder\u0000";

function jsonExtreme(rng: Rng): { value: Json; label: string } {
  const choices: [string, () => Json][] = [
    ["0", () => 0], ["-1", () => -1], ["1e9", () => 1e9], ["2^31", () => 2 ** 31], ["2^32+1", () => 2 ** 32 + 1], ["2^53+2", () => 2 ** 53 + 2],
    ["1e308", () => 1e308], ["-1e308", () => -1e308], ["0.5", () => 0.5], ['""', () => ""], ["a 1 MB string", () => "x".repeat(1 << 20)],
    ["a NUL string", () => "\u0000"], ["null", () => null], ["true", () => true], ["[]", () => []], ["{}", () => ({})],
    ["an array of 100000 zeros", () => new Array<Json>(100_000).fill(0)], ['{"a":1}', () => ({ a: 1 })], ['"12"', () => "12"],
  ];
  const [label, make] = rng.pick(choices);
  return { value: make(), label };
}

/** A random path into `root` (random descent that may stop at any level), with the node it reaches. */
function randomPath(root: Json, rng: Rng, shallow: boolean): (string | number)[] {
  const path: (string | number)[] = [];
  let node = root;
  for (;;) {
    const keys: (string | number)[] = Array.isArray(node) ? node.map((_, i) => i) : node !== null && typeof node === "object" ? Object.keys(node) : [];
    if (keys.length === 0 || (path.length > 0 && rng.next() < (shallow ? 0.7 : 0.35))) return path;
    const key = rng.pick(keys);
    path.push(key);
    node = (node as Record<string | number, Json>)[key]!;
  }
}

function getParent(root: Json, path: readonly (string | number)[]): Record<string | number, Json> {
  let node = root as Record<string | number, Json>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  return node;
}

/**
 * One mutation of a JSON text. `shallow` favours fields near the top (config.json, where every
 * top-level key matters); otherwise the descent goes deeper (tokenizer.json).
 */
export function mutateJson(text: string, rng: Rng, shallow: boolean): Mutated {
  const roll = rng.next();
  const bytes = Buffer.from(text, "utf8");
  if (roll < 0.08) return truncate(bytes, undefined, rng);
  if (roll < 0.16) return bitFlips(bytes, bytes.length, rng);
  const root = JSON.parse(text) as Json;
  const path = randomPath(root, rng, shallow);
  const where = path.length === 0 ? "(root)" : path.join(".");
  if (path.length === 0) {
    const depth = rng.pick([65, 1000, 100_000]);
    return { bytes: Buffer.from(`${"[".repeat(depth)}${text}${"]".repeat(depth)}`), what: `whole document nested ${depth} deep` };
  }
  const parent = getParent(root, path);
  const key = path[path.length - 1]!;
  const old = parent[key]!;
  let what: string;
  let nest: number | undefined;
  if (roll < 0.55) {
    const { value, label } = jsonExtreme(rng);
    parent[key] = value;
    what = `${where} = ${label}`;
  } else if (roll < 0.65) {
    if (Array.isArray(parent)) parent.splice(Number(key), 1);
    else delete parent[key];
    what = `${where} deleted`;
  } else if (roll < 0.8) {
    nest = rng.pick([5, 63, 64, 65, 1000, 100_000]);
    parent[key] = PLACEHOLDER;
    what = `${where} nested ${nest} deep`;
  } else if (roll < 0.9) {
    parent[key] = typeof old === "number" ? String(old) : typeof old === "string" ? Number(old.length) : Array.isArray(old) ? Object.fromEntries(old.map((v, i) => [String(i), v])) : old === null ? [] : typeof old === "object" ? Object.values(old) : !old;
    what = `${where} retyped`;
  } else if (!Array.isArray(parent) && typeof key === "string") {
    // Duplicate the key: JSON.stringify cannot, so splice it into the text after the object opens.
    const serialized = JSON.stringify(root);
    const marker = `${JSON.stringify(key)}:`;
    const at = serialized.indexOf(marker);
    const dup = `${marker}${JSON.stringify(rng.next() < 0.5 ? old : jsonExtreme(rng).value)},`;
    return { bytes: Buffer.from(at < 0 ? serialized : serialized.slice(0, at) + dup + serialized.slice(at)), what: `${where} duplicated` };
  } else {
    parent[key] = [old, old];
    what = `${where} doubled into an array`;
  }
  let out = JSON.stringify(root);
  if (nest !== undefined) {
    const inner = JSON.stringify(old) ?? "null";
    const open = rng.next() < 0.5 ? "[" : '{"a":';
    const close = open === "[" ? "]" : "}";
    out = out.replace(JSON.stringify(PLACEHOLDER), `${open.repeat(nest)}${inner}${close.repeat(nest)}`);
  }
  return { bytes: Buffer.from(out, "utf8"), what };
}

/** safetensors: the 8-byte header length, the JSON header (mutated as JSON), truncations and flips. */
export function mutateSafetensors(seed: Buffer, rng: Rng): Mutated {
  const headerLength = Number(seed.readBigUInt64LE(0));
  const header = seed.toString("utf8", 8, 8 + headerLength);
  const roll = rng.next();
  if (roll < 0.15) {
    const out = Buffer.from(seed);
    return { bytes: out, what: `header length ${setField(out, { name: "header length", offset: 0, width: 8, kind: "int" }, rng)}` };
  }
  if (roll < 0.3) {
    const parsed = JSON.parse(header) as Record<string, { data_offsets?: number[] }>;
    const ends = Object.values(parsed).flatMap((t) => (t.data_offsets ? [8 + headerLength + t.data_offsets[1]!] : []));
    return truncate(seed, { fields: [], values: [], boundaries: [0, 8, 8 + headerLength, ...ends] }, rng);
  }
  if (roll < 0.4) return bitFlips(seed, 8 + headerLength, rng);
  const mutated = mutateJson(header, rng, false);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(mutated.bytes.length));
  return { bytes: Buffer.concat([length, mutated.bytes, seed.subarray(8 + headerLength)]), what: `header: ${mutated.what}` };
}

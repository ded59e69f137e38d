// safetensors reader and writer: an 8-byte header length, a JSON header (tensor index and
// `__metadata__`), then the tensor bytes. Every field is checked against the file before
// anything is allocated; tensors are read one at a time. Knows no model.

import { constants as bufferConstants } from "node:buffer";
import { CheckpointError, UnsupportedError } from "../errors.js";
import { type FileRange, RandomAccessFile } from "./file.js";
import { jsonPreview, parseJson } from "./json.js";
import { writeChunks, writeOutputFile } from "./outputFile.js";

/** Element size in bits of every dtype the safetensors format defines. */
export const SAFETENSORS_DTYPE_BITS = {
  BOOL: 8,
  U8: 8,
  I8: 8,
  F8_E4M3: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2: 8,
  F8_E5M2FNUZ: 8,
  F8_E8M0: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U16: 16,
  I16: 16,
  F16: 16,
  BF16: 16,
  U32: 32,
  I32: 32,
  F32: 32,
  U64: 64,
  I64: 64,
  F64: 64,
  C64: 64,
} as const;

export type SafetensorsDtype = keyof typeof SAFETENSORS_DTYPE_BITS;

export function isSafetensorsDtype(s: string): s is SafetensorsDtype {
  return Object.prototype.hasOwnProperty.call(SAFETENSORS_DTYPE_BITS, s);
}

/** The reference implementation refuses headers over 100 MB; so do we, before reading them. */
export const SAFETENSORS_MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = "__metadata__";

export interface SafetensorsTensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Byte range relative to the start of the data section, [begin, end). */
  begin: number;
  end: number;
  byteLength: number;
}

export interface SafetensorsFile {
  path: string;
  /** `__metadata__`, string -> string; empty when the header has none. */
  metadata: Record<string, string>;
  /** In header order. */
  tensors: SafetensorsTensorInfo[];
  byName: Map<string, SafetensorsTensorInfo>;
  /** Absolute file offset of the data section (8 + header length). */
  dataOffset: number;
  file: RandomAccessFile;
}

/** Elements x bits / 8, or undefined when that is not a whole number of bytes or not a safe integer. */
export function safetensorsByteLength(dtype: SafetensorsDtype, shape: readonly number[]): number | undefined {
  let n = 1;
  for (const d of shape) {
    n *= d;
    if (!Number.isSafeInteger(n)) return undefined;
  }
  const bits = n * SAFETENSORS_DTYPE_BITS[dtype];
  if (!Number.isSafeInteger(bits) || bits % 8 !== 0) return undefined;
  return bits / 8;
}

function corrupt(path: string, message: string, details: { tensor?: string; expected?: string | number; got?: string | number; hint?: string } = {}): CheckpointError {
  return new CheckpointError(`${path}: ${message}`, { file: path, hint: "the safetensors file is truncated or corrupt; re-download or re-convert it", ...details });
}

/**
 * Finds the first key that appears twice in one JSON object anywhere in `text`, which must
 * already be valid JSON (JSON.parse keeps the last duplicate silently). Returns the key and the
 * chain of keys leading to its object.
 */
export function findDuplicateJsonKey(text: string): { key: string; path: string[] } | undefined {
  interface Frame {
    keys: Set<string> | undefined; // undefined for arrays
    expectKey: boolean;
    name: string | undefined; // the key this container sits under
  }
  const stack: Frame[] = [];
  let lastKey: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return { key, path: stack.slice(1).map((f) => f.name ?? "[]") };
        top.keys.add(key);
        top.expectKey = false;
        lastKey = key;
      }
      i = j;
    } else if (c === "{" || c === "[") {
      const top = stack[stack.length - 1];
      stack.push({ keys: c === "{" ? new Set() : undefined, expectKey: c === "{", name: top?.keys ? lastKey : undefined });
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
    }
  }
  return undefined;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkIndex(path: string, v: unknown, what: string, tensor: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw corrupt(path, `tensor ${tensor}: ${what} is ${jsonPreview(v)}, expected a non-negative integer`, { tensor, got: jsonPreview(v) });
  }
  return v;
}

/** Parses and validates one tensor entry of the header. */
function parseTensorInfo(path: string, name: string, v: unknown): Omit<SafetensorsTensorInfo, "byteLength"> & { byteLength: number } {
  if (!isPlainObject(v)) throw corrupt(path, `tensor ${name}: header entry is not an object`, { tensor: name });
  const { dtype, shape, data_offsets: offsets } = v;
  if (typeof dtype !== "string") throw corrupt(path, `tensor ${name}: dtype is missing or not a string`, { tensor: name });
  if (!isSafetensorsDtype(dtype)) {
    throw new UnsupportedError(`${path}: tensor ${name} has unknown dtype ${jsonPreview(dtype)}`, {
      file: path, tensor: name, got: dtype, hint: `known safetensors dtypes: ${Object.keys(SAFETENSORS_DTYPE_BITS).join(", ")}`,
    });
  }
  if (!Array.isArray(shape)) throw corrupt(path, `tensor ${name}: shape is missing or not an array`, { tensor: name });
  const dims = shape.map((d, i) => checkIndex(path, d, `shape[${i}]`, name));
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw corrupt(path, `tensor ${name}: data_offsets must be [begin, end]`, { tensor: name, got: jsonPreview(offsets) });
  }
  const begin = checkIndex(path, offsets[0], "data_offsets[0]", name);
  const end = checkIndex(path, offsets[1], "data_offsets[1]", name);
  if (begin > end) throw corrupt(path, `tensor ${name}: data_offsets [${begin}, ${end}] end before they begin`, { tensor: name });
  const byteLength = safetensorsByteLength(dtype, dims);
  if (byteLength === undefined) {
    throw corrupt(path, `tensor ${name}: shape [${dims.join(", ")}] of ${dtype} is not a whole number of bytes or is too large`, { tensor: name });
  }
  if (byteLength !== end - begin) {
    throw corrupt(path, `tensor ${name}: ${dtype} [${dims.join(", ")}] needs ${byteLength} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`, {
      tensor: name, expected: byteLength, got: end - begin,
    });
  }
  return { name, dtype, shape: dims, begin, end, byteLength };
}

/**
 * Reads and validates the header of a safetensors file; tensor data stays on disk. The data
 * section must be covered exactly by the tensors (no overlaps, no gaps, nothing after the
 * last one), as the reference implementation requires. Close `file` when done.
 */
export function readSafetensors(path: string): SafetensorsFile {
  const file = new RandomAccessFile(path);
  try {
    if (file.size < 8) throw corrupt(path, `the file has ${file.size} bytes, too short for the 8-byte header length`, { expected: 8, got: file.size });
    const headerLength64 = file.read(0, 8, "header length").readBigUInt64LE(0);
    const available = file.size - 8;
    if (headerLength64 > BigInt(Math.min(available, SAFETENSORS_MAX_HEADER_BYTES))) {
      throw corrupt(path, `header length ${headerLength64} exceeds the ${available} bytes after it${available > SAFETENSORS_MAX_HEADER_BYTES ? ` or the ${SAFETENSORS_MAX_HEADER_BYTES}-byte limit` : ""}`, {
        expected: `<= ${Math.min(available, SAFETENSORS_MAX_HEADER_BYTES)}`, got: headerLength64.toString(),
      });
    }
    const headerLength = Number(headerLength64);
    if (headerLength < 2) throw corrupt(path, `header length ${headerLength} is too short for a JSON object`, { got: headerLength });
    let text: string;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(file.read(8, headerLength, "header"));
    } catch (err) {
      if (err instanceof CheckpointError) throw err;
      throw corrupt(path, "the header is not valid UTF-8");
    }
    let header: unknown;
    try {
      header = parseJson(text);
    } catch (err) {
      throw corrupt(path, `the header is not valid JSON (${(err as Error).message})`);
    }
    if (!isPlainObject(header)) throw corrupt(path, "the header is not a JSON object");
    const duplicate = findDuplicateJsonKey(text);
    if (duplicate) {
      const where = duplicate.path.length === 0 ? `tensor ${duplicate.key} appears twice in the header` : `key ${duplicate.key} appears twice under ${duplicate.path.join(".")}`;
      throw corrupt(path, where, duplicate.path.length === 0 ? { tensor: duplicate.key } : duplicate.path[0] === METADATA_KEY ? {} : { tensor: duplicate.path[0]! });
    }

    const metadata: Record<string, string> = {};
    const rawMetadata = header[METADATA_KEY];
    if (rawMetadata !== undefined && rawMetadata !== null) {
      if (!isPlainObject(rawMetadata)) throw corrupt(path, `${METADATA_KEY} is not an object`);
      for (const [k, v] of Object.entries(rawMetadata)) {
        if (typeof v !== "string") throw corrupt(path, `${METADATA_KEY}.${k} is ${jsonPreview(v)}, expected a string`, { got: jsonPreview(v) });
        metadata[k] = v;
      }
    }

    const dataOffset = 8 + headerLength;
    const dataBytes = file.size - dataOffset;
    const tensors: SafetensorsTensorInfo[] = [];
    for (const [name, v] of Object.entries(header)) {
      if (name === METADATA_KEY) continue;
      const info = parseTensorInfo(path, name, v);
      if (info.end > dataBytes) {
        throw corrupt(path, `tensor ${name}: data_offsets [${info.begin}, ${info.end}] run past the ${dataBytes}-byte data section`, {
          tensor: name, expected: info.end, got: dataBytes,
        });
      }
      tensors.push(info);
    }
    // Sorted by offset, each tensor must start where the previous one ended.
    const sorted = [...tensors].sort((a, b) => a.begin - b.begin || a.end - b.end);
    let cursor = 0;
    let previous: string | undefined;
    for (const t of sorted) {
      if (t.begin < cursor) {
        throw corrupt(path, `tensors ${previous} and ${t.name} overlap (bytes ${t.begin}..${cursor})`, { tensor: t.name });
      }
      if (t.begin > cursor) {
        throw corrupt(path, `${t.begin - cursor} unused bytes before tensor ${t.name} (data_offsets [${t.begin}, ${t.end}], previous tensor ends at ${cursor})`, {
          tensor: t.name, expected: cursor, got: t.begin,
        });
      }
      cursor = t.end;
      previous = t.name;
    }
    if (cursor !== dataBytes) {
      throw corrupt(path, `the data section has ${dataBytes} bytes but the tensors cover ${cursor}`, { expected: cursor, got: dataBytes });
    }
    return { path, metadata, tensors, byName: new Map(tensors.map((t) => [t.name, t])), dataOffset, file };
  } catch (err) {
    file.close();
    throw err;
  }
}

function tensorInfo(st: SafetensorsFile, name: string): SafetensorsTensorInfo {
  const t = st.byName.get(name);
  if (!t) throw new CheckpointError(`${st.path}: no tensor named ${name}`, { file: st.path, tensor: name, hint: "the checkpoint does not hold this tensor" });
  return t;
}

/** The raw little-endian bytes of one tensor (use readTensorChunks to stream a huge one). */
export function readTensorBytes(st: SafetensorsFile, name: string): Buffer {
  const t = tensorInfo(st, name);
  if (t.byteLength > bufferConstants.MAX_LENGTH) {
    throw new UnsupportedError(`${st.path}: tensor ${name} has ${t.byteLength} bytes, more than one buffer can hold here (${bufferConstants.MAX_LENGTH})`, {
      file: st.path, tensor: name, hint: "read it in chunks (readTensorChunks)",
    });
  }
  return st.file.read(st.dataOffset + t.begin, t.byteLength, `tensor ${name}`);
}

/**
 * Bytes [offset, offset + into.length) of one tensor, read into `into` (a slice of the float32
 * array they decode to, or one row of an embedding): no buffer of their own.
 */
export function readTensorInto(st: SafetensorsFile, name: string, offset: number, into: Uint8Array): void {
  const t = tensorInfo(st, name);
  if (!(Number.isSafeInteger(offset) && offset >= 0 && offset + into.length <= t.byteLength)) {
    throw new CheckpointError(`${st.path}: bytes ${offset}..${offset + into.length} of tensor ${name} are outside its ${t.byteLength} bytes`, { file: st.path, tensor: name });
  }
  st.file.readInto(into, st.dataOffset + t.begin + offset, into.length, `tensor ${name}`);
}

const DEFAULT_CHUNK_BYTES = 16 << 20;

/** The bytes of one tensor as a file range: read in pieces of at most `chunkBytes` as they are consumed, or copied whole by an OutputFile. */
export function readTensorChunks(st: SafetensorsFile, name: string, chunkBytes = DEFAULT_CHUNK_BYTES): FileRange {
  const t = tensorInfo(st, name);
  return st.file.readChunks(st.dataOffset + t.begin, t.byteLength, `tensor ${name}`, chunkBytes);
}

export interface SafetensorsTensorToWrite {
  name: string;
  dtype: SafetensorsDtype;
  shape: readonly number[];
  byteLength: number;
  /** The tensor's bytes, whole or in chunks; called once, when the tensor is written. */
  bytes: () => Uint8Array | Iterable<Uint8Array>;
}

export interface SafetensorsWriteResult {
  /** Bytes of the JSON header including padding (without the 8-byte length). */
  headerLength: number;
  /** Sum of the tensors' byte lengths. */
  dataBytes: number;
}

/** The header JSON for `tensors` sorted by name, padded with spaces so the data starts 8-aligned. */
export function safetensorsHeader(tensors: readonly SafetensorsTensorToWrite[], metadata: Readonly<Record<string, string>> = {}): { json: Buffer; order: SafetensorsTensorToWrite[] } {
  const order = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  const metaKeys = Object.keys(metadata).sort();
  if (metaKeys.length > 0) {
    const meta: Record<string, string> = {};
    for (const k of metaKeys) meta[k] = metadata[k]!;
    header[METADATA_KEY] = meta;
  }
  let offset = 0;
  let previous: string | undefined;
  for (const t of order) {
    if (t.name === METADATA_KEY || t.name.length === 0) throw new CheckpointError(`cannot write a tensor named ${JSON.stringify(t.name)}`, { tensor: t.name });
    if (t.name === previous) throw new CheckpointError(`tensor ${t.name} is listed twice`, { tensor: t.name });
    const expected = safetensorsByteLength(t.dtype, t.shape);
    if (expected === undefined || expected !== t.byteLength || t.shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new CheckpointError(`tensor ${t.name}: ${t.dtype} [${t.shape.join(", ")}] needs ${expected ?? "a non-integral number of"} bytes, got ${t.byteLength}`, {
        tensor: t.name, expected: expected ?? "integral", got: t.byteLength,
      });
    }
    header[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + t.byteLength] };
    offset += t.byteLength;
    previous = t.name;
  }
  const raw = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Buffer.alloc(Math.ceil(raw.length / 8) * 8, 0x20);
  raw.copy(padded);
  return { json: padded, order };
}

/**
 * Writes a safetensors file at `path` (which must not exist; write to a temporary path and
 * rename). Phases: header (sorted names, metadata, offsets), then each tensor's bytes in name
 * order, streamed chunk by chunk and checked against its declared length.
 */
export function writeSafetensors(path: string, tensors: readonly SafetensorsTensorToWrite[], metadata: Readonly<Record<string, string>> = {}): SafetensorsWriteResult {
  const { json, order } = safetensorsHeader(tensors, metadata);
  return writeOutputFile(path, (out) => {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    out.write(length);
    out.write(json);
    let dataBytes = 0;
    for (const t of order) {
      const written = writeChunks(out, t.bytes(), t.byteLength);
      if (written !== t.byteLength) {
        throw new CheckpointError(`${path}: tensor ${t.name} supplied ${written > t.byteLength ? "more than" : written} bytes, expected ${t.byteLength}`, {
          file: path, tensor: t.name, expected: t.byteLength, got: written,
        });
      }
      dataBytes += written;
    }
    return { headerLength: json.length, dataBytes };
  });
}

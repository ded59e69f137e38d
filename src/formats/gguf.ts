// GGUF (llama.cpp's model file) reader and writer: metadata of every value type, tensor
// index, alignment, and byte-exact copying of tensor data. Knows no model.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { ByteCursor, type FileRange, RandomAccessFile } from "./file.js";
import { writeChunks, writeOutputFile } from "./outputFile.js";

export const GGUF_MAGIC = 0x46554747; // "GGUF" little-endian
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const GGUF_MAX_ALIGNMENT = 1 << 20;
/** ggml's GGML_MAX_NAME: a tensor name with its terminating NUL fits 64 bytes. */
export const GGML_MAX_NAME = 64;

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export type GgufScalar = number | bigint | boolean | string;

export type GgufValue =
  | { type: Exclude<GgufValueType, GgufValueType.ARRAY>; value: GgufScalar }
  | { type: GgufValueType.ARRAY; itemType: GgufValueType; value: GgufScalar[] | GgufValue[] };

/** ggml tensor types: elements per block and bytes per block. */
export interface GgmlTypeInfo {
  id: number;
  name: string;
  blockSize: number;
  blockBytes: number;
}

const GGML_TYPES: GgmlTypeInfo[] = [
  { id: 0, name: "F32", blockSize: 1, blockBytes: 4 },
  { id: 1, name: "F16", blockSize: 1, blockBytes: 2 },
  { id: 2, name: "Q4_0", blockSize: 32, blockBytes: 18 },
  { id: 3, name: "Q4_1", blockSize: 32, blockBytes: 20 },
  { id: 6, name: "Q5_0", blockSize: 32, blockBytes: 22 },
  { id: 7, name: "Q5_1", blockSize: 32, blockBytes: 24 },
  { id: 8, name: "Q8_0", blockSize: 32, blockBytes: 34 },
  { id: 9, name: "Q8_1", blockSize: 32, blockBytes: 36 },
  { id: 10, name: "Q2_K", blockSize: 256, blockBytes: 84 },
  { id: 11, name: "Q3_K", blockSize: 256, blockBytes: 110 },
  { id: 12, name: "Q4_K", blockSize: 256, blockBytes: 144 },
  { id: 13, name: "Q5_K", blockSize: 256, blockBytes: 176 },
  { id: 14, name: "Q6_K", blockSize: 256, blockBytes: 210 },
  { id: 15, name: "Q8_K", blockSize: 256, blockBytes: 292 },
  { id: 24, name: "I8", blockSize: 1, blockBytes: 1 },
  { id: 25, name: "I16", blockSize: 1, blockBytes: 2 },
  { id: 26, name: "I32", blockSize: 1, blockBytes: 4 },
  { id: 27, name: "I64", blockSize: 1, blockBytes: 8 },
  { id: 28, name: "F64", blockSize: 1, blockBytes: 8 },
  { id: 30, name: "BF16", blockSize: 1, blockBytes: 2 },
];

export const GGML_TYPE_BY_ID = new Map(GGML_TYPES.map((t) => [t.id, t]));
export const GGML_TYPE_BY_NAME = new Map(GGML_TYPES.map((t) => [t.name, t]));

export interface GgufTensorInfo {
  name: string;
  /** ggml order: dims[0] is the fastest-varying (row length). */
  dims: number[];
  type: GgmlTypeInfo;
  /** Offset relative to the start of the data section. */
  offset: number;
  byteLength: number;
}

export interface GgufFile {
  path: string;
  version: number;
  alignment: number;
  /** Metadata in file order. */
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
  /** Absolute file offset of the data section. */
  dataOffset: number;
  file: RandomAccessFile;
}

// The smallest possible encodings, used to reject counts that cannot fit in the file.
const MIN_KV_BYTES = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8;

const SCALAR_SIZE: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

/**
 * Limits that no real GGUF comes near (a vocabulary's arrays hold ~10^5-10^6 items, its longest
 * string is a chat template of some KB) but that keep a crafted count or length, which a
 * multi-GB file could back with bytes, from exhausting the heap or V8's string limit.
 */
const GGUF_MAX_STRING_BYTES = 64 * 1024 * 1024;
const GGUF_MAX_ARRAY_ITEMS = 1 << 26;

function readString(cur: ByteCursor, what: string): string {
  const length = cur.u64Size(`${what} length`);
  cur.need(length, what); // first what the file can hold, then what it may hold
  if (length > GGUF_MAX_STRING_BYTES) {
    throw new CheckpointError(`${cur.file.path}: ${what} is a string of ${length} bytes, over the ${GGUF_MAX_STRING_BYTES} a GGUF string may hold here`, {
      file: cur.file.path, expected: `<= ${GGUF_MAX_STRING_BYTES}`, got: length, hint: "the file is corrupt or crafted",
    });
  }
  return cur.bytes(length, what).toString("utf8");
}

function readScalar(cur: ByteCursor, type: GgufValueType, what: string): GgufScalar {
  switch (type) {
    case GgufValueType.UINT8:
      return cur.u8(what);
    case GgufValueType.INT8:
      return cur.i8(what);
    case GgufValueType.UINT16:
      return cur.u16(what);
    case GgufValueType.INT16:
      return cur.i16(what);
    case GgufValueType.UINT32:
      return cur.u32(what);
    case GgufValueType.INT32:
      return cur.i32(what);
    case GgufValueType.FLOAT32:
      return cur.f32(what);
    case GgufValueType.BOOL:
      return cur.u8(what) !== 0;
    case GgufValueType.STRING:
      return readString(cur, what);
    case GgufValueType.UINT64:
      return cur.u64(what);
    case GgufValueType.INT64:
      return cur.i64(what);
    case GgufValueType.FLOAT64:
      return cur.f64(what);
    default:
      throw new CheckpointError(`${cur.file.path}: ${what} has unknown value type ${type}`, {
        file: cur.file.path,
        got: type,
        hint: "the file is corrupt or from a newer GGUF version",
      });
  }
}

/**
 * Arrays of arrays may nest this deep. llama.cpp writes none (its reader refuses them); the bound
 * keeps the recursive reader, and every walker of the value after it, off a stack overflow.
 */
export const GGUF_MAX_ARRAY_DEPTH = 8;

function readValue(cur: ByteCursor, type: GgufValueType, what: string, depth = 0): GgufValue {
  if (type !== GgufValueType.ARRAY) {
    return { type, value: readScalar(cur, type, what) } as GgufValue;
  }
  if (depth >= GGUF_MAX_ARRAY_DEPTH) {
    throw new CheckpointError(`${cur.file.path}: ${what} nests arrays more than ${GGUF_MAX_ARRAY_DEPTH} deep`, {
      file: cur.file.path, expected: `<= ${GGUF_MAX_ARRAY_DEPTH}`, hint: "the file is corrupt or crafted; no GGUF writer nests arrays",
    });
  }
  const itemType = cur.u32(`${what} array item type`) as GgufValueType;
  const count = cur.u64Size(`${what} array length`);
  const minItem = SCALAR_SIZE[itemType] ?? (itemType === GgufValueType.STRING ? 8 : 12);
  cur.need(count * minItem, `${what} (${count} array items)`); // before anything is allocated
  if (count > GGUF_MAX_ARRAY_ITEMS) {
    throw new CheckpointError(`${cur.file.path}: ${what} is an array of ${count} items, over the ${GGUF_MAX_ARRAY_ITEMS} a GGUF array may hold here`, {
      file: cur.file.path, expected: `<= ${GGUF_MAX_ARRAY_ITEMS}`, got: count, hint: "the file is corrupt or crafted",
    });
  }
  if (itemType === GgufValueType.ARRAY) {
    const items: GgufValue[] = [];
    for (let i = 0; i < count; i++) items.push(readValue(cur, GgufValueType.ARRAY, `${what}[${i}]`, depth + 1));
    return { type, itemType, value: items };
  }
  const items: GgufScalar[] = new Array(count);
  for (let i = 0; i < count; i++) items[i] = readScalar(cur, itemType, `${what}[${i}]`);
  return { type, itemType, value: items };
}

/** Reads the GGUF header, metadata and tensor index; tensor data stays on disk. */
export function readGguf(path: string): GgufFile {
  const file = new RandomAccessFile(path);
  try {
    const cur = new ByteCursor(file);
    const magic = cur.u32("magic");
    if (magic !== GGUF_MAGIC) {
      throw new CheckpointError(`${path} is not a GGUF file (magic ${magic.toString(16)})`, { file: path, hint: "pass a .gguf model" });
    }
    const version = cur.u32("version");
    if (version !== 2 && version !== 3) {
      throw new UnsupportedError(`${path}: GGUF version ${version} is not supported (2 and 3 are)`, { file: path, got: version });
    }
    const tensorCount = cur.u64Size("tensor count");
    const kvCount = cur.u64Size("metadata count");
    cur.need(kvCount * MIN_KV_BYTES, `metadata (${kvCount} entries)`);
    const metadata = new Map<string, GgufValue>();
    for (let i = 0; i < kvCount; i++) {
      const key = readString(cur, `metadata key #${i}`);
      const type = cur.u32(`type of metadata ${key}`) as GgufValueType;
      if (metadata.has(key)) throw new CheckpointError(`${path}: metadata key ${key} appears twice`, { file: path, hint: "the file is corrupt" });
      metadata.set(key, readValue(cur, type, `metadata ${key}`));
    }
    const alignmentValue = metadata.get("general.alignment");
    const alignment = alignmentValue === undefined ? GGUF_DEFAULT_ALIGNMENT : Number(alignmentValue.value);
    // Bounded: a writer pads with up to `alignment` bytes, and no file aligns beyond a page or two.
    if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0 || alignment > GGUF_MAX_ALIGNMENT) {
      throw new CheckpointError(`${path}: general.alignment is ${alignment}, expected a positive multiple of 8 up to ${GGUF_MAX_ALIGNMENT}`, { file: path, got: alignment });
    }

    cur.need(tensorCount * MIN_TENSOR_INFO_BYTES, `tensor index (${tensorCount} tensors)`);
    const tensors: GgufTensorInfo[] = [];
    const names = new Set<string>();
    for (let i = 0; i < tensorCount; i++) {
      const name = readString(cur, `tensor #${i} name`);
      if (Buffer.byteLength(name) >= GGML_MAX_NAME) {
        throw new CheckpointError(`${path}: tensor #${i} has a ${Buffer.byteLength(name)}-byte name; ggml allows at most ${GGML_MAX_NAME - 1}`, {
          file: path, expected: `< ${GGML_MAX_NAME}`, got: Buffer.byteLength(name), hint: "the file is corrupt; llama.cpp refuses it too",
        });
      }
      const nDims = cur.u32(`tensor ${name} dimension count`);
      if (nDims < 1 || nDims > 4) throw new CheckpointError(`${path}: tensor ${name} has ${nDims} dimensions (1-4 allowed)`, { file: path, tensor: name, got: nDims });
      const dims: number[] = [];
      for (let d = 0; d < nDims; d++) dims.push(cur.u64Size(`tensor ${name} dimension ${d}`));
      const typeId = cur.u32(`tensor ${name} type`);
      const type = GGML_TYPE_BY_ID.get(typeId);
      if (!type) {
        throw new UnsupportedError(`${path}: tensor ${name} has unknown ggml type ${typeId}`, {
          file: path,
          tensor: name,
          got: typeId,
          hint: `supported types: ${GGML_TYPES.map((t) => t.name).join(", ")}`,
        });
      }
      const offset = cur.u64Size(`tensor ${name} offset`);
      if (names.has(name)) throw new CheckpointError(`${path}: tensor ${name} appears twice`, { file: path, tensor: name, hint: "the file is corrupt" });
      names.add(name);
      const nElements = dims.reduce((a, b) => a * b, 1);
      const rowLength = dims[0] ?? 1;
      if (rowLength % type.blockSize !== 0) {
        throw new CheckpointError(`${path}: tensor ${name} row length ${rowLength} is not a multiple of ${type.name}'s block size ${type.blockSize}`, { file: path, tensor: name });
      }
      tensors.push({ name, dims, type, offset, byteLength: (nElements / type.blockSize) * type.blockBytes });
    }
    const dataOffset = alignUp(cur.pos, alignment);
    checkTensorLayout(path, tensors, alignment, file.size - dataOffset);
    return { path, version, alignment, metadata, tensors, dataOffset, file };
  } catch (err) {
    file.close();
    throw err;
  }
}

function checkTensorLayout(path: string, tensors: GgufTensorInfo[], alignment: number, dataBytes: number): void {
  for (const t of tensors) {
    if (t.offset % alignment !== 0) {
      throw new CheckpointError(`${path}: tensor ${t.name} offset ${t.offset} is not aligned to ${alignment}`, { file: path, tensor: t.name });
    }
    if (t.offset + t.byteLength > dataBytes) {
      throw new CheckpointError(`${path}: tensor ${t.name} needs data bytes ${t.offset}..${t.offset + t.byteLength} but the data section has ${Math.max(0, dataBytes)}`, {
        file: path,
        tensor: t.name,
        expected: t.offset + t.byteLength,
        got: Math.max(0, dataBytes),
        hint: "the file is truncated",
      });
    }
  }
  const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (prev.offset + prev.byteLength > cur.offset) {
      throw new CheckpointError(`${path}: tensors ${prev.name} and ${cur.name} overlap`, { file: path, tensor: cur.name, hint: "the file is corrupt" });
    }
  }
}

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

/** The raw bytes of one tensor. */
export function readGgufTensorBytes(gguf: GgufFile, tensor: GgufTensorInfo): Buffer {
  return gguf.file.read(gguf.dataOffset + tensor.offset, tensor.byteLength, `tensor ${tensor.name}`);
}

/** The raw bytes of one tensor in chunks, so copying a large tensor never holds it whole. */
export function readGgufTensorChunks(gguf: GgufFile, tensor: GgufTensorInfo): FileRange {
  return gguf.file.readChunks(gguf.dataOffset + tensor.offset, tensor.byteLength, `tensor ${tensor.name}`);
}

/** A metadata value as a JS number, or undefined when absent. */
export function ggufNumber(gguf: GgufFile, key: string): number | undefined {
  const v = gguf.metadata.get(key);
  if (v === undefined) return undefined;
  if (v.type === GgufValueType.ARRAY || v.type === GgufValueType.STRING) {
    throw new CheckpointError(`${gguf.path}: metadata ${key} should be a number`, { file: gguf.path, hint: "the file is corrupt or from an unsupported converter" });
  }
  return Number(v.value);
}

export function ggufString(gguf: GgufFile, key: string): string | undefined {
  const v = gguf.metadata.get(key);
  if (v === undefined) return undefined;
  if (v.type !== GgufValueType.STRING) throw new CheckpointError(`${gguf.path}: metadata ${key} should be a string`, { file: gguf.path });
  return v.value as string;
}

export function ggufArray(gguf: GgufFile, key: string): GgufScalar[] | undefined {
  const v = gguf.metadata.get(key);
  if (v === undefined) return undefined;
  if (v.type !== GgufValueType.ARRAY) throw new CheckpointError(`${gguf.path}: metadata ${key} should be an array`, { file: gguf.path });
  return v.value as GgufScalar[];
}

// ---------------------------------------------------------------------------------------
// Writer

export interface GgufTensorToWrite {
  name: string;
  dims: number[];
  type: GgmlTypeInfo;
  byteLength: number;
  /** Produces the tensor's bytes when its turn comes, whole or in chunks, so tensors stream one at a time. */
  bytes: () => Uint8Array | Iterable<Uint8Array>;
}

export interface GgufToWrite {
  version: number;
  alignment: number;
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorToWrite[];
}

class ByteSink {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    this.push(bytes);
  }
  concat(): Buffer {
    return Buffer.concat(this.parts);
  }
}

function writeScalar(sink: ByteSink, type: GgufValueType, v: GgufScalar): void {
  const b8 = Buffer.alloc(8);
  switch (type) {
    case GgufValueType.UINT8:
      b8.writeUInt8(Number(v));
      return sink.push(b8.subarray(0, 1));
    case GgufValueType.INT8:
      b8.writeInt8(Number(v));
      return sink.push(b8.subarray(0, 1));
    case GgufValueType.BOOL:
      b8.writeUInt8(v ? 1 : 0);
      return sink.push(b8.subarray(0, 1));
    case GgufValueType.UINT16:
      b8.writeUInt16LE(Number(v));
      return sink.push(b8.subarray(0, 2));
    case GgufValueType.INT16:
      b8.writeInt16LE(Number(v));
      return sink.push(b8.subarray(0, 2));
    case GgufValueType.UINT32:
      b8.writeUInt32LE(Number(v));
      return sink.push(b8.subarray(0, 4));
    case GgufValueType.INT32:
      b8.writeInt32LE(Number(v));
      return sink.push(b8.subarray(0, 4));
    case GgufValueType.FLOAT32:
      b8.writeFloatLE(Number(v));
      return sink.push(b8.subarray(0, 4));
    case GgufValueType.UINT64:
      b8.writeBigUInt64LE(BigInt(v));
      return sink.push(b8);
    case GgufValueType.INT64:
      b8.writeBigInt64LE(BigInt(v));
      return sink.push(b8);
    case GgufValueType.FLOAT64:
      b8.writeDoubleLE(Number(v));
      return sink.push(b8);
    case GgufValueType.STRING:
      return sink.string(String(v));
    default:
      throw new Error(`cannot write GGUF value type ${type}`);
  }
}

function writeValue(sink: ByteSink, value: GgufValue): void {
  if (value.type !== GgufValueType.ARRAY) return writeScalar(sink, value.type, value.value);
  sink.u32(value.itemType);
  sink.u64(value.value.length);
  for (const item of value.value) {
    if (value.itemType === GgufValueType.ARRAY) {
      writeValue(sink, item as GgufValue); // a nested array carries its own item type and count
    } else {
      writeScalar(sink, value.itemType, item as GgufScalar);
    }
  }
}

/**
 * Writes a GGUF file in explicit phases: header, metadata (in the given order), tensor
 * index with offsets aligned to `alignment`, then each tensor's bytes padded to alignment.
 * The caller writes to a temporary path and renames.
 */
export function writeGguf(path: string, gguf: GgufToWrite): void {
  const head = new ByteSink();
  head.u32(GGUF_MAGIC);
  head.u32(gguf.version);
  head.u64(gguf.tensors.length);
  head.u64(gguf.metadata.size);
  for (const [key, value] of gguf.metadata) {
    head.string(key);
    head.u32(value.type);
    writeValue(head, value);
  }
  let offset = 0;
  for (const t of gguf.tensors) {
    head.string(t.name);
    head.u32(t.dims.length);
    for (const d of t.dims) head.u64(d);
    head.u32(t.type.id);
    head.u64(offset);
    offset = alignUp(offset + t.byteLength, gguf.alignment);
  }
  writeOutputFile(path, (out) => {
    const header = head.concat();
    out.write(header);
    out.write(Buffer.alloc(alignUp(header.length, gguf.alignment) - header.length));
    for (const t of gguf.tensors) {
      const written = writeChunks(out, t.bytes());
      if (written !== t.byteLength) throw new Error(`tensor ${t.name}: got ${written} bytes, expected ${t.byteLength}`);
      const pad = alignUp(written, gguf.alignment) - written;
      if (pad > 0) out.write(Buffer.alloc(pad));
    }
  });
}

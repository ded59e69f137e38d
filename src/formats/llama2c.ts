// llama2.c checkpoints (Karpathy): the legacy header-only format and the versioned "ak42"
// format, version 1 (fp32). Both store fp32 tensors grouped by kind, layer after layer.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { RandomAccessFile } from "./file.js";
import { writeChunks, writeOutputFile } from "./outputFile.js";

export const LLAMA2C_MAGIC = 0x616b3432; // "ak42"
const LEGACY_HEADER_BYTES = 7 * 4;
const VERSIONED_HEADER_BYTES = 256;

export interface Llama2cHeader {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  sharedClassifier: boolean;
  /** 0 = legacy (no magic), 1 = "ak42" version 1. */
  version: 0 | 1;
}

/** One stored tensor: its llama2.c / PyTorch name, row-major shape and byte offset. */
export interface Llama2cTensor {
  name: string;
  shape: number[];
  offset: number;
  byteLength: number;
  /** The layer it belongs to, for per-layer tensors. */
  layer?: number;
}

export interface Llama2cFile {
  path: string;
  header: Llama2cHeader;
  tensors: Llama2cTensor[];
  file: RandomAccessFile;
}

/** Per-layer tensor kinds in the order the legacy format stores them. */
const LEGACY_LAYER_KINDS = [
  "attention_norm",
  "attention.wq",
  "attention.wk",
  "attention.wv",
  "attention.wo",
  "ffn_norm",
  "feed_forward.w1",
  "feed_forward.w2",
  "feed_forward.w3",
] as const;
type LayerKind = (typeof LEGACY_LAYER_KINDS)[number];

function layerShape(h: Llama2cHeader, kind: LayerKind): number[] {
  const kvDim = (h.dim / h.nHeads) * h.nKvHeads;
  switch (kind) {
    case "attention_norm":
    case "ffn_norm":
      return [h.dim];
    case "attention.wq":
    case "attention.wo":
      return [h.dim, h.dim];
    case "attention.wk":
    case "attention.wv":
      return [kvDim, h.dim];
    case "feed_forward.w1":
    case "feed_forward.w3":
      return [h.hiddenDim, h.dim];
    case "feed_forward.w2":
      return [h.dim, h.hiddenDim];
  }
}

/**
 * The file size the header implies, by arithmetic: checked against the real size before the
 * tensor list is built, so a header claiming millions of layers costs nothing. Above 2^53 the
 * sum is approximate but still larger than any file.
 */
export function llama2cFileBytes(h: Llama2cHeader): number {
  const headDim = h.dim / h.nHeads;
  const kvDim = headDim * h.nKvHeads;
  const perLayer = 2 * h.dim + 2 * h.dim * h.dim + 2 * kvDim * h.dim + 3 * h.hiddenDim * h.dim;
  const ropeTables = h.version === 0 ? 2 * h.seqLen * (headDim / 2) : 0;
  const classifier = h.sharedClassifier ? 0 : h.vocabSize * h.dim;
  const floats = h.vocabSize * h.dim + h.nLayers * perLayer + h.dim + ropeTables + classifier;
  return (h.version === 0 ? LEGACY_HEADER_BYTES : VERSIONED_HEADER_BYTES) + 4 * floats;
}

/** The ordered list of tensors the header implies, with their offsets. */
export function llama2cLayout(h: Llama2cHeader): Llama2cTensor[] {
  const tensors: Llama2cTensor[] = [];
  let offset = h.version === 0 ? LEGACY_HEADER_BYTES : VERSIONED_HEADER_BYTES;
  const add = (name: string, shape: number[], layer?: number): void => {
    const byteLength = shape.reduce((a, b) => a * b, 1) * 4;
    tensors.push(layer === undefined ? { name, shape, offset, byteLength } : { name, shape, offset, byteLength, layer });
    offset += byteLength;
  };
  const perLayer = (kind: LayerKind): void => {
    for (let layer = 0; layer < h.nLayers; layer++) add(`layers.${layer}.${kind}.weight`, layerShape(h, kind), layer);
  };
  if (h.version === 0) {
    add("tok_embeddings.weight", [h.vocabSize, h.dim]);
    for (const kind of LEGACY_LAYER_KINDS) perLayer(kind);
    add("norm.weight", [h.dim]);
    const headSize = h.dim / h.nHeads;
    add("freqs_cos", [h.seqLen, headSize / 2]);
    add("freqs_sin", [h.seqLen, headSize / 2]);
  } else {
    perLayer("attention_norm");
    perLayer("ffn_norm");
    add("norm.weight", [h.dim]);
    add("tok_embeddings.weight", [h.vocabSize, h.dim]);
    for (const kind of ["attention.wq", "attention.wk", "attention.wv", "attention.wo", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"] as const) perLayer(kind);
  }
  if (!h.sharedClassifier) add("output.weight", [h.vocabSize, h.dim]);
  return tensors;
}

function checkHeader(path: string, h: Llama2cHeader): void {
  const fields: [string, number][] = [
    ["dim", h.dim],
    ["hidden_dim", h.hiddenDim],
    ["n_layers", h.nLayers],
    ["n_heads", h.nHeads],
    ["n_kv_heads", h.nKvHeads],
    ["vocab_size", h.vocabSize],
    ["seq_len", h.seqLen],
  ];
  for (const [name, value] of fields) {
    if (!Number.isInteger(value) || value <= 0 || value > 1 << 24) {
      throw new CheckpointError(`${path}: llama2.c header field ${name} is ${value}`, { file: path, got: value, hint: "not a llama2.c checkpoint, or a corrupt one" });
    }
  }
  if (h.dim % h.nHeads !== 0 || h.nHeads % h.nKvHeads !== 0 || (h.dim / h.nHeads) % 2 !== 0) {
    throw new CheckpointError(`${path}: llama2.c header has dim ${h.dim}, ${h.nHeads} heads, ${h.nKvHeads} KV heads: heads must divide dim evenly into even head sizes`, { file: path });
  }
}

/** Parses the header, checks the file size against it, and lists the tensors. */
export function readLlama2c(path: string): Llama2cFile {
  const file = new RandomAccessFile(path);
  try {
    const first = file.read(0, Math.min(file.size, VERSIONED_HEADER_BYTES), "header");
    if (first.length < LEGACY_HEADER_BYTES) {
      throw new CheckpointError(`${path}: ${file.size} bytes is too short for a llama2.c header`, { file: path, got: file.size });
    }
    let header: Llama2cHeader;
    if (first.readUInt32LE(0) === LLAMA2C_MAGIC) {
      const version = first.length >= 8 ? first.readInt32LE(4) : -1;
      if (version !== 1) {
        throw new UnsupportedError(`${path}: llama2.c format version ${version} is not supported (legacy and version 1 fp32 are)`, { file: path, got: version });
      }
      if (first.length < VERSIONED_HEADER_BYTES) throw new CheckpointError(`${path}: truncated llama2.c version 1 header`, { file: path });
      const ints = [0, 1, 2, 3, 4, 5, 6].map((i) => first.readInt32LE(8 + 4 * i)) as [number, number, number, number, number, number, number];
      header = {
        dim: ints[0], hiddenDim: ints[1], nLayers: ints[2], nHeads: ints[3], nKvHeads: ints[4], vocabSize: ints[5], seqLen: ints[6],
        sharedClassifier: first.readUInt8(36) !== 0,
        version: 1,
      };
    } else {
      const ints = [0, 1, 2, 3, 4, 5, 6].map((i) => first.readInt32LE(4 * i)) as [number, number, number, number, number, number, number];
      header = {
        dim: ints[0], hiddenDim: ints[1], nLayers: ints[2], nHeads: ints[3], nKvHeads: ints[4],
        vocabSize: Math.abs(ints[5]), seqLen: ints[6],
        sharedClassifier: ints[5] > 0, // legacy: a negative vocab size means a separate classifier
        version: 0,
      };
    }
    checkHeader(path, header);
    const expected = llama2cFileBytes(header);
    if (expected !== file.size) {
      throw new CheckpointError(`${path}: the llama2.c header implies ${expected} bytes but the file has ${file.size}`, {
        file: path,
        expected,
        got: file.size,
        hint: expected > 2 * file.size ? "the header does not fit this file: not a llama2.c checkpoint, or a corrupt one"
          : expected > file.size ? "the file is truncated" : "the header does not describe this file (wrong format or version?)",
      });
    }
    return { path, header, tensors: llama2cLayout(header), file };
  } catch (err) {
    file.close();
    throw err;
  }
}

export function readLlama2cTensor(ckpt: Llama2cFile, tensor: Llama2cTensor): Float32Array {
  const bytes = ckpt.file.read(tensor.offset, tensor.byteLength, `tensor ${tensor.name}`);
  return new Float32Array(bytes.buffer, bytes.byteOffset, tensor.byteLength / 4).slice();
}

/** Encodes the header bytes for a file in the given version. */
export function encodeLlama2cHeader(h: Llama2cHeader): Buffer {
  const ints = [h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.seqLen];
  if (h.version === 0) {
    const buf = Buffer.alloc(LEGACY_HEADER_BYTES);
    ints[5] = h.sharedClassifier ? h.vocabSize : -h.vocabSize;
    ints.forEach((v, i) => buf.writeInt32LE(v, 4 * i));
    return buf;
  }
  const buf = Buffer.alloc(VERSIONED_HEADER_BYTES);
  buf.writeUInt32LE(LLAMA2C_MAGIC, 0);
  buf.writeInt32LE(1, 4);
  ints.forEach((v, i) => buf.writeInt32LE(v, 8 + 4 * i));
  buf.writeUInt8(h.sharedClassifier ? 1 : 0, 36);
  return buf;
}

/**
 * Writes a llama2.c checkpoint: the header, then every tensor that `llama2cLayout(header)`
 * lists, in that order, with bytes supplied by name. The caller writes to a temporary path.
 */
export function writeLlama2c(path: string, header: Llama2cHeader, tensorBytes: (tensor: Llama2cTensor) => Uint8Array | Iterable<Uint8Array>): void {
  writeOutputFile(path, (out) => {
    out.write(encodeLlama2cHeader(header));
    for (const t of llama2cLayout(header)) {
      const written = writeChunks(out, tensorBytes(t));
      if (written !== t.byteLength) throw new Error(`tensor ${t.name}: got ${written} bytes, expected ${t.byteLength}`);
    }
  });
}

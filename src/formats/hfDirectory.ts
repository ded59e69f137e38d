// A Hugging Face model directory: config.json kept as raw JSON, the weights in one
// model.safetensors or in shards listed by model.safetensors.index.json, seen as one lazy set
// of tensors, and every other file (tokenizer, generation config, ...) listed as-is. Knows no model.

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { CheckpointError, UnsupportedError } from "../errors.js";
import { COMPUTE_DTYPES, decodeToF32, elementBytes, readDecodedF32 } from "../tensor/dtype.js";
import { checkRowIndex, gatherTensorRows, type TensorEntry, type TensorProvider } from "../tensor/provider.js";
import { takeU16 } from "../tensor/hostMemory.js";
import { type FileRange, fileSystemError, pathKind, readWholeFile } from "./file.js";
import { jsonPreview, parseJson } from "./json.js";
import {
  readSafetensors, readTensorBytes as readShardTensorBytes, readTensorChunks as readShardTensorChunks, readTensorInto as readShardTensorInto,
  type SafetensorsDtype, type SafetensorsFile, findDuplicateJsonKey,
} from "./safetensors.js";

export const HF_CONFIG = "config.json";
export const HF_SINGLE_WEIGHTS = "model.safetensors";
export const HF_SHARD_INDEX = "model.safetensors.index.json";

export interface HfTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  byteLength: number;
  /** The safetensors file (name inside the directory) that holds it. */
  file: string;
}

export interface HfShardIndex {
  /** Path of model.safetensors.index.json. */
  path: string;
  /** The index's `metadata` object as stored (total_size, ...). */
  metadata: Record<string, unknown>;
  /** Tensor name -> shard file name, in index order. */
  weightMap: Map<string, string>;
}

export interface HfDirectory {
  dir: string;
  configPath: string;
  /** config.json exactly as parsed, for reading and rewriting. */
  config: Record<string, unknown>;
  /** The shard index, or null for a single model.safetensors. */
  index: HfShardIndex | null;
  /** Weight file names, sorted (one for an unsharded checkpoint). */
  weightFiles: string[];
  /** `__metadata__` of each weight file. */
  fileMetadata: Map<string, Record<string, string>>;
  /** Every tensor, grouped by weight file in `weightFiles` order, in each file's header order. */
  tensors: HfTensor[];
  /** Regular files at the top of the directory other than config.json, the index and the weight files. */
  otherFiles: string[];
  /** Sub-directories (not read). */
  subdirectories: string[];
  tensor(name: string): HfTensor;
  readTensorBytes(name: string): Buffer;
  /** Bytes [offset, offset + into.length) of a tensor, read into `into`. */
  readTensorInto(name: string, offset: number, into: Uint8Array): void;
  readTensorChunks(name: string): FileRange;
  close(): void;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** True when `path` is a directory holding config.json (the cheap check used to pick a loader). */
export function isHfDirectory(path: string): boolean {
  return pathKind(path) === "dir" && pathKind(join(path, HF_CONFIG)) !== "missing";
}

/** Reads a JSON file that must hold an object, with duplicate keys refused. */
export function readJsonObject(path: string, what: string): Record<string, unknown> {
  const text = readWholeFile(path).toString("utf8");
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (err) {
    throw new CheckpointError(`${path}: ${what} is not valid JSON (${(err as Error).message})`, { file: path, hint: "the file is corrupt; re-download it" });
  }
  if (!isPlainObject(value)) throw new CheckpointError(`${path}: ${what} is not a JSON object`, { file: path, hint: "the file is corrupt; re-download it" });
  const duplicate = findDuplicateJsonKey(text);
  if (duplicate) {
    throw new CheckpointError(`${path}: key ${[...duplicate.path, duplicate.key].join(".")} appears twice`, { file: path, hint: "the file is corrupt or hand-edited; keep one of the two" });
  }
  return value;
}

/** The names in a folder, a failure (permission denied, ...) as a typed error naming it. */
function listDirectory(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch (err) {
    throw fileSystemError(err, dir);
  }
}

/** A shard named by the index must be a plain file name inside the directory. */
function checkShardName(indexPath: string, tensor: string, shard: unknown): string {
  if (typeof shard !== "string" || shard.length === 0 || shard.includes("/") || shard.includes("\\") || shard === "." || shard === "..") {
    throw new CheckpointError(`${indexPath}: weight_map entry for ${tensor} is ${jsonPreview(shard)}, expected a file name in the same directory`, {
      file: indexPath, tensor, got: jsonPreview(shard), hint: "the index is corrupt",
    });
  }
  return shard;
}

function readShardIndex(dir: string): HfShardIndex {
  const path = join(dir, HF_SHARD_INDEX);
  const raw = readJsonObject(path, "the shard index");
  const weightMap = raw["weight_map"];
  if (!isPlainObject(weightMap)) {
    throw new CheckpointError(`${path}: weight_map is missing or not an object`, { file: path, hint: "the index is corrupt" });
  }
  const metadata = raw["metadata"];
  if (metadata !== undefined && metadata !== null && !isPlainObject(metadata)) {
    throw new CheckpointError(`${path}: metadata is not an object`, { file: path, hint: "the index is corrupt" });
  }
  const map = new Map<string, string>();
  for (const [tensor, shard] of Object.entries(weightMap)) map.set(tensor, checkShardName(path, tensor, shard));
  if (map.size === 0) throw new CheckpointError(`${path}: weight_map is empty`, { file: path, hint: "the index is corrupt" });
  return { path, metadata: isPlainObject(metadata) ? metadata : {}, weightMap: map };
}

/**
 * Opens a Hugging Face model directory: parses config.json and the index, opens every weight
 * file and checks that the index and the files agree (every shard exists, every indexed tensor
 * is in its shard, no tensor is in two files or missing from the index). Tensor data is read
 * on demand. Close it when done.
 */
export function openHfDirectory(dir: string): HfDirectory {
  if (pathKind(dir) !== "dir") {
    throw new CheckpointError(`${dir} is not a directory`, { file: dir, hint: "pass a Hugging Face model directory (with config.json and *.safetensors)" });
  }
  const configPath = join(dir, HF_CONFIG);
  if (pathKind(configPath) === "missing") {
    throw new CheckpointError(`${dir} has no config.json`, { file: configPath, hint: "pass a Hugging Face model directory (with config.json and *.safetensors)" });
  }
  const config = readJsonObject(configPath, "config.json");
  const hasSingle = pathKind(join(dir, HF_SINGLE_WEIGHTS)) !== "missing";
  const hasIndex = pathKind(join(dir, HF_SHARD_INDEX)) !== "missing";
  if (hasSingle && hasIndex) {
    throw new CheckpointError(`${dir} holds both ${HF_SINGLE_WEIGHTS} and ${HF_SHARD_INDEX}; it is unclear which is the model`, {
      file: dir, hint: "remove the stale one",
    });
  }
  if (!hasSingle && !hasIndex) {
    const legacy = listDirectory(dir).filter((f) => /^pytorch_model.*\.bin$|\.pth?$/.test(f));
    if (legacy.length > 0) {
      throw new UnsupportedError(`${dir} holds PyTorch pickle weights (${legacy.join(", ")}), not safetensors`, {
        file: dir, hint: "convert it to safetensors first (e.g. save_pretrained(..., safe_serialization=True) in transformers)",
      });
    }
    throw new CheckpointError(`${dir} has neither ${HF_SINGLE_WEIGHTS} nor ${HF_SHARD_INDEX}`, { file: dir, hint: "the model directory is incomplete; download its weights" });
  }

  const index = hasIndex ? readShardIndex(dir) : null;
  const weightFiles = index ? [...new Set(index.weightMap.values())].sort() : [HF_SINGLE_WEIGHTS];
  const files = new Map<string, SafetensorsFile>();
  const closeAll = (): void => {
    for (const f of files.values()) f.file.close();
  };
  try {
    if (index) {
      for (const shard of weightFiles) {
        if (pathKind(join(dir, shard)) === "missing") {
          const first = [...index.weightMap].find(([, s]) => s === shard)![0];
          throw new CheckpointError(`${index.path}: shard ${shard} (holding ${first}, ...) does not exist`, {
            file: index.path, tensor: first, expected: join(dir, shard), hint: "the download is incomplete; fetch the missing shard",
          });
        }
      }
    }
    for (const f of weightFiles) files.set(f, readSafetensors(join(dir, f)));

    const tensors: HfTensor[] = [];
    const byName = new Map<string, HfTensor>();
    for (const f of weightFiles) {
      const st = files.get(f)!;
      for (const t of st.tensors) {
        const other = byName.get(t.name);
        if (other) {
          throw new CheckpointError(`${dir}: tensor ${t.name} is in both ${other.file} and ${f}`, { file: join(dir, f), tensor: t.name, hint: "the checkpoint is inconsistent" });
        }
        if (index) {
          const listed = index.weightMap.get(t.name);
          if (listed === undefined) {
            throw new CheckpointError(`${index.path}: tensor ${t.name} is in shard ${f} but not in weight_map`, { file: index.path, tensor: t.name, hint: "the index is stale; regenerate it" });
          }
          if (listed !== f) {
            throw new CheckpointError(`${index.path}: weight_map puts ${t.name} in ${listed} but it is in ${f}`, { file: index.path, tensor: t.name, expected: listed, got: f, hint: "the index is stale; regenerate it" });
          }
        }
        const entry: HfTensor = { name: t.name, dtype: t.dtype, shape: t.shape, byteLength: t.byteLength, file: f };
        tensors.push(entry);
        byName.set(t.name, entry);
      }
    }
    if (index) {
      for (const [name, shard] of index.weightMap) {
        if (!byName.has(name)) {
          throw new CheckpointError(`${index.path}: tensor ${name} is listed in shard ${shard} but that file does not hold it`, {
            file: index.path, tensor: name, expected: shard, hint: "the shard or the index is wrong; re-download them",
          });
        }
      }
    }

    const known = new Set([HF_CONFIG, ...(index ? [HF_SHARD_INDEX] : []), ...weightFiles]);
    const otherFiles: string[] = [];
    const subdirectories: string[] = [];
    for (const name of listDirectory(dir).sort()) {
      if (known.has(name)) continue;
      // Hugging Face cache snapshots are made of symbolic links; follow them (a broken or looping link is skipped).
      let stat: ReturnType<typeof statSync>;
      try {
        stat = statSync(join(dir, name), { throwIfNoEntry: false });
      } catch {
        stat = undefined;
      }
      if (stat?.isDirectory()) subdirectories.push(name);
      else if (stat?.isFile()) otherFiles.push(name);
    }

    const lookup = (name: string): HfTensor => {
      const t = byName.get(name);
      if (!t) throw new CheckpointError(`${dir}: no tensor named ${name}`, { file: dir, tensor: name, hint: "the checkpoint does not hold this tensor" });
      return t;
    };
    return {
      dir, configPath, config, index, weightFiles, tensors, otherFiles, subdirectories,
      fileMetadata: new Map(weightFiles.map((f) => [f, files.get(f)!.metadata])),
      tensor: lookup,
      readTensorBytes: (name) => readShardTensorBytes(files.get(lookup(name).file)!, name),
      readTensorInto: (name, offset, into) => readShardTensorInto(files.get(lookup(name).file)!, name, offset, into),
      readTensorChunks: (name) => readShardTensorChunks(files.get(lookup(name).file)!, name),
      close: closeAll,
    };
  } catch (err) {
    closeAll();
    throw err;
  }
}

/** Whether a stored dtype decodes element by element, so that a tensor or a row can be read into its float32 array's own memory. */
function isElementwise(dtype: string): dtype is "F32" | "F16" | "BF16" {
  return elementBytes(dtype) !== undefined;
}

/** The directory's tensors as float32 for a model to load (F32, F16 and BF16 are decoded). */
export function hfTensorProvider(hf: HfDirectory): TensorProvider {
  return {
    source: hf.dir,
    entries: (): TensorEntry[] => hf.tensors.map((t) => ({ name: t.name, shape: [...t.shape], dtype: t.dtype })),
    readF32: (name: string): Float32Array => {
      const t = hf.tensor(name);
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (isElementwise(t.dtype)) return readDecodedF32(t.dtype, n, (into) => hf.readTensorInto(name, 0, into));
      const out = new Float32Array(n);
      const bytes = hf.readTensorBytes(name);
      if (!decodeToF32(t.dtype, bytes, out)) {
        throw new UnsupportedError(`${join(hf.dir, t.file)}: tensor ${name} is ${t.dtype}; computing with this dtype is not supported yet (${COMPUTE_DTYPES.join(", ")} are)`, {
          file: join(hf.dir, t.file), tensor: name, got: t.dtype,
          hint: "convert the checkpoint to bfloat16 or float32, or prune it without evaluating (shortgpt prune --layers)",
        });
      }
      return out;
    },
    readRowsF32(name: string, rows: Int32Array): Float32Array {
      const t = hf.tensor(name);
      const { dtype } = t;
      const nRows = t.shape[0] ?? 1;
      if (!isElementwise(dtype)) return gatherTensorRows(this.readF32(name), nRows, rows, name, hf.dir);
      const width = t.shape.slice(1).reduce((a, b) => a * b, 1);
      const rowBytes = width * elementBytes(dtype)!;
      const out = new Float32Array(rows.length * width);
      rows.forEach((r, i) => {
        checkRowIndex(r, nRows, name, hf.dir);
        readDecodedF32(dtype, width, (into) => hf.readTensorInto(name, r * rowBytes, into), out.subarray(i * width, (i + 1) * width));
      });
      return out;
    },
    readBF16: (name: string): Uint16Array | undefined => {
      if (hf.tensor(name).dtype !== "BF16") return undefined;
      // Read into memory from the pool of finished layers' arrays (fresh memory is slow to touch);
      // a caller done with the bits hands them back with recycleU16.
      const bits = takeU16(hf.tensor(name).shape.reduce((a, b) => a * b, 1));
      hf.readTensorInto(name, 0, new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
      return bits;
    },
  };
}

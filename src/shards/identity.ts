// A cheap identity of a model for checking that shards ran on the same one: sha256 of the resolved
// config, the tensor index (names, shapes, dtypes) and, of every checkpoint and tokenizer file, its
// size and first and last MiB. Hashing whole files would cost minutes per shard on a 70B model;
// this catches a different model, a different conversion or quantization, and a truncated copy.

import { createHash, type Hash } from "node:crypto";
import { closeSync, openSync, readdirSync, readSync, statSync } from "node:fs";
import { join } from "node:path";
import type { OpenedModel } from "../load.js";

const SAMPLE = 1 << 20;

function hashFileSample(hash: Hash, path: string): void {
  const size = statSync(path).size;
  hash.update(`${size}\0`);
  const fd = openSync(path, "r");
  try {
    const read = (at: number, length: number): void => {
      const buffer = Buffer.alloc(length);
      const n = readSync(fd, buffer, 0, length, at);
      hash.update(buffer.subarray(0, n));
    };
    read(0, Math.min(SAMPLE, size));
    if (size > SAMPLE) read(Math.max(SAMPLE, size - SAMPLE), Math.min(SAMPLE, size - SAMPLE));
  } finally {
    closeSync(fd);
  }
}

function checkpointFiles(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).filter((name) => /\.safetensors$|^config\.json$/i.test(name)).sort().map((name) => join(path, name));
}

export function modelIdentity(opened: OpenedModel): string {
  const hash = createHash("sha256");
  const description = { format: opened.format, architecture: opened.architecture, config: opened.config, tensors: opened.provider.entries() };
  hash.update(JSON.stringify(description, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value)));
  for (const file of checkpointFiles(opened.path)) hashFileSample(hash, file);
  if (opened.tokenizerPath !== opened.path) hashFileSample(hash, opened.tokenizerPath);
  return hash.digest("hex");
}

/**
 * What of the backend decides the numbers, for parts that must merge: its kind and, on a GPU, the
 * GEMM precision (bf16 and fp32 parts differ), but not which GPU or how many threads.
 */
export function backendIdentity(backend: { name: string; precision?: string }): string {
  const kind = backend.name.replace(/:\d+$/, "");
  return backend.precision === undefined ? kind : `${kind}/${backend.precision}`;
}

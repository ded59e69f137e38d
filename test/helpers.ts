// Shared test helpers: paths to the real model and data, running the CLI, temp folders.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type GgufTensorToWrite, type GgufValue, readGguf, readGgufTensorBytes, writeGguf } from "../src/formats/gguf.js";
import { repoRoot, sharedPath } from "../src/shared.js";

export const MODEL_BIN = sharedPath("models", "stories260K", "stories260K.bin");
export const MODEL_GGUF = sharedPath("models", "stories260K", "stories260K.gguf");
export const TOKENIZER = sharedPath("models", "stories260K", "tok512.bin");
export const TINYSTORIES = sharedPath("data", "tinystories", "tinystories_val.txt");

/** The greedy sample from BOS documented for stories260K. */
export const DOCUMENTED_SAMPLE =
  "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high.";

export interface CliRun {
  status: number;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[]): CliRun {
  const r = spawnSync(process.execPath, [join(repoRoot(), "dist", "src", "cli", "main.js"), ...args], { encoding: "utf8", env: { ...process.env, CI: "true" } });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function tempDir(prefix = "shortgpt-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** |got - want| <= rel * |want| + abs, elementwise; returns the worst violation for messages. */
export function maxRelativeError(got: ArrayLike<number>, want: ArrayLike<number>, floor = 1e-6): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  let worst = 0;
  for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / Math.max(Math.abs(want[i]!), floor));
  return worst;
}

/** JSON.parse reviver for the oracles' golden files: {"f32": base64} (little-endian float32) becomes an array of numbers. */
export function decodeGoldenFloats(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  const { f32 } = value as { f32?: unknown };
  if (typeof f32 !== "string") return value;
  return Array.from(new Float32Array(new Uint8Array(Buffer.from(f32, "base64")).buffer));
}

/** max |got - want| / max |want|: the error relative to the tensor's scale (elementwise ratios blow up near zero). */
export function scaledError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new Error(`length ${got.length} != ${want.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
    scale = Math.max(scale, Math.abs(want[i]!));
  }
  return diff / scale;
}

/**
 * Copies the GGUF file `input` to `output` with `edit` applied: it may change the metadata in
 * place and change the tensor list in place or return a new one (tensor bytes are read lazily
 * from the input). Returns `output`.
 */
export function rewriteGguf(input: string, output: string, edit: (metadata: Map<string, GgufValue>, tensors: GgufTensorToWrite[]) => GgufTensorToWrite[] | void): string {
  const file = readGguf(input);
  try {
    const metadata = new Map(file.metadata);
    const tensors: GgufTensorToWrite[] = file.tensors.map((t) => ({ name: t.name, dims: t.dims, type: t.type, byteLength: t.byteLength, bytes: () => readGgufTensorBytes(file, t) }));
    writeGguf(output, { version: file.version, alignment: file.alignment, metadata, tensors: edit(metadata, tensors) ?? tensors });
  } finally {
    file.file.close();
  }
  return output;
}

/** JSON.parse reviver for the oracles' float arrays, stored as base64 little-endian {"f32": ...}: decoded to numbers. */
export function decodeOracleFloats(_key: string, value: unknown): unknown {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return value;
  const { f32 } = value as { f32?: unknown };
  if (typeof f32 !== "string") return value;
  return Array.from(new Float32Array(new Uint8Array(Buffer.from(f32, "base64")).buffer));
}

/** Block Influence from transformers' residual streams: 1 - mean cosine of each layer's input and output rows. */
export function goldenBlockInfluence(residual: number[][], dim: number): number[] {
  const out: number[] = [];
  for (let layer = 0; layer + 1 < residual.length; layer++) {
    const a = residual[layer]!;
    const b = residual[layer + 1]!;
    let sum = 0;
    const rows = a.length / dim;
    for (let r = 0; r < rows; r++) {
      let ab = 0, aa = 0, bb = 0;
      for (let i = r * dim; i < (r + 1) * dim; i++) {
        ab += a[i]! * b[i]!;
        aa += a[i]! ** 2;
        bb += b[i]! ** 2;
      }
      sum += ab / Math.sqrt(aa * bb);
    }
    out.push(1 - sum / rows);
  }
  return out;
}

/** Mean next-token NLL of ids under every position's logits (T, vocab). */
export function goldenNll(logits: number[], ids: number[], vocab: number): number {
  let nll = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    const row = logits.slice(t * vocab, (t + 1) * vocab);
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    nll += lse - row[ids[t + 1]!]!;
  }
  return nll / (ids.length - 1);
}

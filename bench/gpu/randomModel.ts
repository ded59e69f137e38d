// Random-weight Llama models of real shapes held in memory (no file), and random token windows:
// what the GPU speed checks and profiles run on.

import type { PerplexityWindow } from "../../src/data/windows.js";
import { GGUF_LLAMA_NAMES, type LlamaConfig } from "../../src/models/llama.js";
import type { StreamingSource } from "../../src/models/streaming.js";
import type { TensorEntry, TensorProvider } from "../../src/tensor/provider.js";

export function prng(seed: number): () => number {
  let s = (seed * 2654435761) >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

export function uniform(rand: () => number, n: number, scale: number, offset = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = offset + (rand() * 2 - 1) * scale;
  return out;
}

export interface ModelShape { name: string; dim: number; hiddenDim: number; nLayers: number; nHeads: number; nKvHeads: number; vocabSize: number; ropeTheta: number }
export const SHAPES: ModelShape[] = [
  { name: "tinyllama", dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocabSize: 32000, ropeTheta: 10000 },
  { name: "llama2-7b", dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, ropeTheta: 10000 },
  { name: "llama3-8b", dim: 4096, hiddenDim: 14336, nLayers: 32, nHeads: 32, nKvHeads: 8, vocabSize: 128256, ropeTheta: 500000 },
];

/**
 * Random weights without a file: every tensor is a window into one block of 2^22 uniform values
 * (std 0.02, as transformers initializes), starting at an offset hashed from its name; norms are 1.
 * Filling by copies keeps a 7B model's load to seconds; the numbers are random enough for timing.
 */
/** Llama-2-70B: 80 layers, GQA 64/8, 129 GiB in bf16 with embedding and head. Not in SHAPES: run on its own (--with-70b). */
export const LLAMA2_70B: ModelShape = { name: "llama2-70b", dim: 8192, hiddenDim: 28672, nLayers: 80, nHeads: 64, nKvHeads: 8, vocabSize: 32000, ropeTheta: 10000 };

/**
 * sharedTensors: tensors of one shape are the same host array (layer l's weights equal layer 0's),
 * so a 70B model costs uploads only; its BI is then meaningless, its speed is not.
 */
export function randomSource(shape: ModelShape, options: { sharedTensors?: boolean } = {}): StreamingSource {
  const config: LlamaConfig = {
    nLayers: shape.nLayers, dim: shape.dim, hiddenDim: shape.hiddenDim, nHeads: shape.nHeads, nKvHeads: shape.nKvHeads, headDim: shape.dim / shape.nHeads,
    vocabSize: shape.vocabSize, contextLength: 4096, normEps: 1e-5, ropeTheta: shape.ropeTheta,
  };
  const names = { ...GGUF_LLAMA_NAMES, interleavedRope: false };
  const entries: TensorEntry[] = [
    { name: names.embedding, shape: [shape.vocabSize, shape.dim], dtype: "BF16" },
    { name: names.finalNorm, shape: [shape.dim], dtype: "BF16" },
    { name: names.classifier, shape: [shape.vocabSize, shape.dim], dtype: "BF16" },
  ];
  const qDim = shape.dim;
  const kvDim = shape.nKvHeads * config.headDim;
  for (let l = 0; l < shape.nLayers; l++) {
    const n = names.layer(l);
    entries.push(
      { name: n.attnNorm!, shape: [shape.dim], dtype: "BF16" }, { name: n.ffnNorm!, shape: [shape.dim], dtype: "BF16" },
      { name: n.wq!, shape: [qDim, shape.dim], dtype: "BF16" }, { name: n.wk!, shape: [kvDim, shape.dim], dtype: "BF16" }, { name: n.wv!, shape: [kvDim, shape.dim], dtype: "BF16" },
      { name: n.wo!, shape: [shape.dim, qDim], dtype: "BF16" }, { name: n.wGate!, shape: [shape.hiddenDim, shape.dim], dtype: "BF16" },
      { name: n.wUp!, shape: [shape.hiddenDim, shape.dim], dtype: "BF16" }, { name: n.wDown!, shape: [shape.dim, shape.hiddenDim], dtype: "BF16" },
    );
  }
  const byName = new Map(entries.map((e) => [e.name, e]));
  const block = uniform(prng(5), 1 << 22, 0.0346);
  const shared = new Map<string, Float32Array>();
  const provider: TensorProvider = {
    source: `random:${shape.name}`,
    entries: () => entries,
    readF32(name) {
      const e = byName.get(name);
      if (!e) throw new Error(`no tensor ${name}`);
      if (options.sharedTensors) {
        const key = `${e.shape.join("x")}/${e.shape.length === 1 ? "norm" : "linear"}`;
        const have = shared.get(key);
        if (have) return have;
        const made = fill(name, e.shape);
        shared.set(key, made);
        return made;
      }
      return fill(name, e.shape);
    },
  };
  function fill(name: string, dims: readonly number[]): Float32Array {
    const n = dims.reduce((a, b) => a * b, 1);
    const out = new Float32Array(n);
    if (dims.length === 1) return out.fill(1);
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
    let at = (h >>> 0) % block.length;
    for (let i = 0; i < n;) {
      const take = Math.min(block.length - at, n - i);
      out.set(block.subarray(at, at + take), i);
      i += take;
      at = 0;
    }
    return out;
  }
  return { config, provider, names };
}

export function randomWindows(shape: ModelShape, nWindows: number, seqLen: number, seed: number): PerplexityWindow[] {
  const r = prng(seed);
  return Array.from({ length: nWindows }, (_, d) => ({ document: d, begin: 0, firstTarget: 1, tokens: Array.from({ length: seqLen }, () => Math.floor(r() * shape.vocabSize)) }));
}


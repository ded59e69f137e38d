// Text generation with a key/value cache: greedy at temperature 0, else seeded sampling.

import type { DecoderBackend, DecodeSupport } from "../backend/backend.js";
import { KvCache, type LlamaModel } from "../models/llama.js";
import { checkedLayerShapes, prepareEmbedding, prepareHead, prepareLayer, type StreamingSource } from "../models/streaming.js";

export interface GenerateOptions {
  maxTokens: number;
  temperature: number;
  seed: number;
  topP?: number;
  skip?: ReadonlySet<number>;
  /** Stop when this token is produced (not included). */
  stopTokens?: ReadonlySet<number>;
  onToken?: (id: number) => void;
}

/** A small deterministic PRNG (xorshift64*), so a seed reproduces a sample everywhere. */
export class Rng {
  private state: bigint;
  constructor(seed: number) {
    this.state = BigInt.asUintN(64, BigInt(seed) ^ 0x9e3779b97f4a7c15n) || 1n;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let x = this.state;
    x ^= x >> 12n;
    x ^= BigInt.asUintN(64, x << 25n);
    x ^= x >> 27n;
    this.state = x;
    const r = BigInt.asUintN(64, x * 0x2545f4914f6cdd1dn);
    return Number(r >> 11n) / 2 ** 53;
  }
}

export function argmax(x: Float64Array, offset: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[offset + i]! > x[offset + best]!) best = i;
  return best;
}

export function sample(logits: Float64Array, n: number, temperature: number, topP: number, rng: Rng): number {
  const probs = new Float64Array(n);
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += probs[i] = Math.exp((logits[i]! - max) / temperature);
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => probs[b]! - probs[a]! || a - b);
  // Nucleus: keep the smallest prefix of the sorted tokens whose mass reaches topP.
  let kept = 0;
  let mass = 0;
  while (kept < n && (kept === 0 || mass < topP * sum)) mass += probs[order[kept++]!]!;
  let r = rng.next() * mass;
  for (let i = 0; i < kept; i++) {
    r -= probs[order[i]!]!;
    if (r <= 0) return order[i]!;
  }
  return order[kept - 1]!;
}

/** Picks the next token from the last position's logits: argmax at temperature 0, else a seeded sample. */
function nextToken(logits: Float64Array, vocab: number, options: GenerateOptions, rng: Rng): number {
  return options.temperature === 0 ? argmax(logits, 0, vocab) : sample(logits, vocab, options.temperature, options.topP ?? 1, rng);
}

/** Generates up to maxTokens ids after `prompt` (which should start with BOS). */
export function generate(model: LlamaModel, prompt: readonly number[], options: GenerateOptions): number[] {
  const capacity = Math.min(model.config.contextLength, prompt.length + options.maxTokens);
  const cache = new KvCache(model.config, capacity);
  const rng = new Rng(options.seed);
  const vocab = model.config.vocabSize;
  const out: number[] = [];
  const skip = options.skip ? { skip: options.skip } : {};
  let logits = model.forward(prompt, { cache, logits: "last", ...skip }).logits;
  while (out.length < options.maxTokens) {
    const next = nextToken(logits, vocab, options, rng);
    if (options.stopTokens?.has(next)) break;
    out.push(next);
    options.onToken?.(next);
    // The last token needs no forward pass; a full context allows no more.
    if (out.length >= options.maxTokens || cache.length >= capacity) break;
    logits = model.forward([next], { cache, logits: "last", ...skip }).logits;
  }
  return out;
}

/** Prompt tokens per decoding step on a backend. */
const PROMPT_STEP = 512;

/**
 * generate() on a backend that decodes with its own key/value cache (the cuda backend: weights,
 * cache and activations stay on the device; only the last position's logits come back). Same
 * tokens as generate() up to the backend's arithmetic: the prompt runs as one step, then one
 * token per step.
 */
export async function generateOnBackend(source: StreamingSource, backend: DecoderBackend & { decode: DecodeSupport }, prompt: readonly number[], options: GenerateOptions): Promise<number[]> {
  const { config } = source;
  const shapes = checkedLayerShapes(source, backend);
  const running = Array.from({ length: config.nLayers }, (_, l) => l).filter((l) => !options.skip?.has(l));
  const capacity = Math.min(config.contextLength, prompt.length + options.maxTokens);
  const cache = backend.decode.createKvCache(Math.max(1, running.length), capacity, shapes[running[0] ?? 0]!);
  const rng = new Rng(options.seed);
  const out: number[] = [];
  try {
    const embedding = await prepareEmbedding(source, backend);
    const head = await prepareHead(source, backend);
    const step = async (ids: readonly number[]): Promise<Float64Array> => {
      const positions = Int32Array.from(ids, (_, i) => cache.length + i);
      let x = await backend.embed(embedding, Int32Array.from(ids), ids.length, positions);
      for (const [slot, layer] of running.entries()) {
        // Resident weights come back at once; streamed ones are uploaded again each step.
        const prepared = await prepareLayer(source, backend, layer);
        const y = await backend.decode.runLayerCached(x, prepared, shapes[layer]!, cache, slot);
        backend.release(x);
        x = y;
      }
      cache.length += ids.length;
      const result = await backend.runHead(x, Int32Array.of(ids.length - 1), head, config.normEps);
      backend.release(x);
      if (result.kind !== "logits") throw new Error("internal: the backend returned log-likelihoods where logits were asked for");
      return Float64Array.from(result.logits);
    };
    // The prompt in steps of PROMPT_STEP tokens: bounds the attention scores of the GEMM path (new tokens x keys).
    for (let at = 0; at + PROMPT_STEP < prompt.length; at += PROMPT_STEP) await step(prompt.slice(at, at + PROMPT_STEP));
    let logits = await step(prompt.slice(Math.floor((prompt.length - 1) / PROMPT_STEP) * PROMPT_STEP));
    while (out.length < options.maxTokens) {
      const next = nextToken(logits, config.vocabSize, options, rng);
      if (options.stopTokens?.has(next)) break;
      out.push(next);
      options.onToken?.(next);
      if (out.length >= options.maxTokens || cache.length >= capacity) break;
      logits = await step([next]);
    }
    return out;
  } finally {
    backend.decode.releaseKvCache(cache);
  }
}

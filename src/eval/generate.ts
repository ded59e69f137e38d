// Text generation with a key/value cache: greedy at temperature 0, else seeded sampling.

import { KvCache, type LlamaModel } from "../models/llama.js";

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

function sample(logits: Float64Array, n: number, temperature: number, topP: number, rng: Rng): number {
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
    const next = options.temperature === 0 ? argmax(logits, 0, vocab) : sample(logits, vocab, options.temperature, options.topP ?? 1, rng);
    if (options.stopTokens?.has(next)) break;
    out.push(next);
    options.onToken?.(next);
    // The last token needs no forward pass; a full context allows no more.
    if (out.length >= options.maxTokens || cache.length >= capacity) break;
    logits = model.forward([next], { cache, logits: "last", ...skip }).logits;
  }
  return out;
}

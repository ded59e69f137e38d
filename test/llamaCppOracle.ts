// llama.cpp (node-llama-cpp's prebuilt CPU binaries) as the oracle for a GGUF file's meaning:
// its next-token probabilities at every position, and their largest difference from the engine's.

import { getLlama, type Llama, type Token } from "node-llama-cpp";
import type { LoadedModel } from "../src/load.js";

/** llama.cpp on the CPU, from the binaries in the npm package: no compiler, no download. */
export function cpuLlama(): Promise<Llama> {
  return getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
}

/**
 * llama.cpp's next-token probabilities after each position, in a context of 256 with an F32
 * key/value cache and no flash attention (then they agree with an exact forward pass to ~1e-6).
 */
export async function llamaCppProbabilities(llama: Llama, path: string, ids: number[]): Promise<Map<number, number>[]> {
  const model = await llama.loadModel({ modelPath: path });
  const context = await model.createContext({ contextSize: 256, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
  try {
    const results = await context.getSequence().controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { token: true, probabilities: true, options: { temperature: 0 } } }]));
    return results.map((r, pos) => {
      const probs = r?.next?.probabilities;
      if (!probs) throw new Error(`no probabilities at position ${pos}`);
      return probs;
    });
  } finally {
    await context.dispose();
    await model.dispose();
  }
}

/** max over positions and tokens of |softmax(engine logits) - llama.cpp's probability|. */
export function maxProbabilityDifference(loaded: LoadedModel, ids: number[], theirs: Map<number, number>[]): number {
  const { logits } = loaded.model.forward(ids);
  const V = loaded.model.config.vocabSize;
  let worst = 0;
  ids.forEach((_, pos) => {
    const row = logits.slice(pos * V, (pos + 1) * V);
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (let i = 0; i < V; i++) sum += row[i] = Math.exp(row[i]! - max);
    for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(row[i]! / sum - (theirs[pos]!.get(i) ?? 0)));
  });
  return worst;
}

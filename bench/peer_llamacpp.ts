// llama.cpp (node-llama-cpp's prebuilt CPU binaries) as the peer of a GGUF family row, in its own process so its peak
// RSS is its own: prompt evaluation of the same windows shortgpt scores, each window from a fresh state, and the
// next-token log-probabilities at a few positions for the correctness column.
//   node dist/bench/peer_llamacpp.js MODEL.gguf --tokens ids.json --threads 2 --positions 0,85,170,255 [--top 32]
// Prints one JSON object: tokensPerSecond (load + context + evaluation, as shortgpt's rate includes reading its
// weights), evalTokensPerSecond (evaluation only), and per (window, position) llama.cpp's most likely tokens with
// their log-probabilities.

import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { Token } from "node-llama-cpp";
import { cpuLlama } from "../test/llamaCppOracle.js";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { tokens: { type: "string" }, threads: { type: "string" }, positions: { type: "string" }, top: { type: "string" } } });
const [modelPath] = positionals;
if (!modelPath || !values.tokens || !values.positions) throw new Error("usage: peer_llamacpp MODEL.gguf --tokens ids.json --positions p,q,... [--threads 2] [--top 32]");
const windows = (JSON.parse(readFileSync(values.tokens, "utf8")) as { windows: number[][] }).windows;
const positions = new Set(values.positions.split(",").map(Number));
const threads = Number(values.threads ?? "2");
const top = Number(values.top ?? "32");
const seqLen = windows[0]!.length;

const llama = await cpuLlama();
const started = process.hrtime.bigint();
const model = await llama.loadModel({ modelPath });
// F32 state and no flash attention, as the tests' oracle runs it; one window per ubatch.
const context = await model.createContext({ contextSize: Math.max(512, seqLen), batchSize: seqLen, threads, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
const loaded = process.hrtime.bigint();
const sequence = context.getSequence();
const logprobs: { window: number; pos: number; top: [number, number][] }[] = [];
for (const [w, ids] of windows.entries()) {
  // Each window from a fresh state, as shortgpt scores it.
  if (w > 0) await sequence.clearHistory();
  const results = await sequence.controlledEvaluate(ids.map((id, pos) => (positions.has(pos) ? [id as Token, { generateNext: { probabilities: true } }] : (id as Token))));
  for (const pos of positions) {
    const probs = results[pos]?.next?.probabilities;
    if (!probs) throw new Error(`llama.cpp returned no probabilities at window ${w} position ${pos}`);
    const best = [...probs].sort((a, b) => b[1] - a[1]).slice(0, top).map(([token, p]): [number, number] => [token, Math.log(p)]);
    logprobs.push({ window: w, pos, top: best });
  }
}
const finished = process.hrtime.bigint();
const seconds = Number(finished - started) / 1e9;
const evalSeconds = Number(finished - loaded) / 1e9;
const tokens = windows.length * seqLen;
console.log(JSON.stringify({
  engine: `llama.cpp (node-llama-cpp ${llama.buildType === "prebuilt" ? "prebuilt" : llama.buildType} CPU)`, threads, tokens, seconds, evalSeconds,
  tokensPerSecond: tokens / seconds, evalTokensPerSecond: tokens / evalSeconds, peakRssBytes: process.resourceUsage().maxRSS * 1024, logprobs,
}));
await context.dispose();
await model.dispose();
await llama.dispose();

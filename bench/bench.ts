// npm run bench: throughput baseline of the reference engine on stories260K (tokens/s for
// Block Influence scoring and perplexity). Writes bench/results.json and bench/RESULTS.md.

import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { loadModel } from "../src/load.js";
import { perplexityData, resolveWindows, tokenizeFile } from "../src/pipeline.js";
import { scoreData } from "../src/pipeline.js";
import { repoRoot, sharedPath } from "../src/shared.js";

const TOKENS = 8192;
const SEQ_LEN = 512;

function timed<T>(run: () => T): { value: T; seconds: number } {
  const start = process.hrtime.bigint();
  const value = run();
  return { value, seconds: Number(process.hrtime.bigint() - start) / 1e9 };
}

const modelPath = sharedPath("models", "stories260K", "stories260K.bin");
const loaded = loadModel(modelPath);
const data = tokenizeFile(loaded, sharedPath("data", "tinystories", "tinystories_val.txt"));
const windows = resolveWindows(loaded, { seqLen: SEQ_LEN, maxTokens: TOKENS });
const params = loaded.model.parameterCount();

const rows: { task: string; tokens: number; seconds: number; tokensPerSecond: number }[] = [];
const score = timed(() => scoreData(loaded, data, windows));
rows.push({ task: "BI scoring", tokens: score.value.tokens, seconds: score.seconds, tokensPerSecond: score.value.tokens / score.seconds });
const ppl = timed(() => perplexityData(loaded, data, windows));
rows.push({ task: "perplexity", tokens: TOKENS, seconds: ppl.seconds, tokensPerSecond: TOKENS / ppl.seconds });

const machine = `${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
const table = [
  "| task | tokens | seconds | tokens/s |",
  "| --- | ---: | ---: | ---: |",
  ...rows.map((r) => `| ${r.task} | ${r.tokens} | ${r.seconds.toFixed(2)} | ${r.tokensPerSecond.toFixed(0)} |`),
].join("\n");
console.log(`stories260K (${params} parameters), windows of ${SEQ_LEN}, reference TypeScript engine, 1 thread\n${table}`);

const results = { date: new Date().toISOString(), machine, model: modelPath, parameters: params, seqLen: SEQ_LEN, engine: "reference (TypeScript, float64 activations)", rows };
writeFileSync(join(repoRoot(), "bench", "results.json"), JSON.stringify(results, null, 2) + "\n");
writeFileSync(
  join(repoRoot(), "bench", "RESULTS.md"),
  `# Benchmark results\n\nMachine: ${machine}. Command: \`npm run bench\`. Date: ${results.date}.\n\n` +
    `stories260K (${params} parameters), ${TOKENS} TinyStories tokens in windows of ${SEQ_LEN}, reference TypeScript engine (float64 activations), one thread.\n\n${table}\n\n` +
    "This is the baseline of the plain reference engine; the fast engine and the PyTorch peer comparison are tracked separately.\n",
);

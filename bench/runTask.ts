// One benchmark measurement in its own process, so its peak RSS is its own:
//   node dist/bench/runTask.js score|ppl MODEL --tokens ids.json [--backend onnx] [--threads 2] [--precision bf16|fp32]
//   node dist/bench/runTask.js logprobs MODEL --tokens ids.json --positions p,q,... [--backend onnx] [--threads 2]
//     (next-token log-probabilities of the whole vocabulary after those positions of every window, for a peer's correctness column)
//   node dist/bench/runTask.js prune MODEL --out DIR --layers i,j,...
// Prints one JSON object on stdout.

import { rmSync } from "node:fs";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { parseBackendName, parsePrecision, selectBackend } from "../src/backend/select.js";
import { cpuBf16Availability, type CpuFeatures } from "../src/backend/cpuBf16/native.js";
import { openModel, type OpenedModel } from "../src/load.js";
import { prepareHead, releaseBatches, runLayersStreaming, streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { removeLayers } from "../src/prune/removeLayers.js";
import { evaluateTask } from "../src/eval/evaluateTasks.js";
import { parseTaskList } from "../src/eval/tasks/tasks.js";
import { outputStats, setNativeOutput } from "../src/formats/outputFile.js";

/** Matrix FLOPs per token of the decoder layers (and the head when it runs), for effective GFLOP/s. */
export function flopsPerToken(m: OpenedModel, seqLen: number, withHead: boolean): number {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, nLayers, vocabSize } = m.config;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const layerParams = 2 * qDim * dim + 2 * kvDim * dim + 3 * dim * hiddenDim;
  const attention = 2 * seqLen * qDim; // causal: on average seqLen/2 keys, for scores and for values
  return nLayers * (2 * layerParams + attention) + (withHead ? 2 * vocabSize * dim : 0);
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tokens: { type: "string" }, backend: { type: "string" }, threads: { type: "string" }, out: { type: "string" }, layers: { type: "string" }, "no-native-output": { type: "boolean" },
    tasks: { type: "string" }, "data-dir": { type: "string" }, limit: { type: "string" }, precision: { type: "string" }, positions: { type: "string" },
  },
});
const [task, modelPath] = positionals;
if (!task || !modelPath) throw new Error("usage: runTask score|ppl|logprobs|prune|tasks MODEL ...");

if (task === "tasks") {
  // One benchmark task on one model: items per second, as `shortgpt eval --tasks` runs it.
  const { backend } = await selectBackend(parseBackendName(values.backend ?? "onnx"), { threads: Number(values.threads ?? "2") });
  const opened = openModel(modelPath);
  const definition = parseTaskList(values.tasks!)[0]!;
  const result = await evaluateTask(opened, opened.tokenizer, definition, {
    dataDir: values["data-dir"]!, shots: 0, backend, ...(values.limit === undefined ? {} : { limit: Number(values.limit) }),
  });
  console.log(JSON.stringify({ task: definition.name, items: result.items, seconds: result.seconds, itemsPerSecond: result.itemsPerSecond, acc: result.metrics["acc"]!.value, peakRssBytes: process.resourceUsage().maxRSS * 1024 }));
  await backend.dispose();
} else if (task === "logprobs") {
  // The streaming engine's layers, then the head on the asked positions only: log-softmax of their logits in float64.
  const windowsIds = (JSON.parse(readFileSync(values.tokens!, "utf8")) as { windows: number[][] }).windows;
  const positions = values.positions!.split(",").map(Number);
  const { backend } = await selectBackend(parseBackendName(values.backend ?? "onnx"), { threads: Number(values.threads ?? "2") });
  const opened = openModel(modelPath);
  const seqLen = windowsIds[0]!.length;
  const windows = scoringWindows(windowsIds, { seqLen, stride: seqLen });
  const batches = await runLayersStreaming(opened, windows, { backend });
  const head = await prepareHead(opened, backend);
  const V = opened.config.vocabSize;
  const logprobs: { window: number; pos: number; values: number[] }[] = [];
  for (const batch of batches) {
    const owners = batch.windows.flatMap((w) => positions.map((pos) => ({ window: windows.indexOf(w), pos })));
    const rows = Int32Array.from(batch.windows.flatMap((_, i) => positions.map((pos) => i * batch.seqLen + pos)));
    const result = await backend.runHead(batch.hidden!, rows, head, opened.config.normEps);
    if (result.kind !== "logits") throw new Error("internal: the backend returned log-likelihoods where logits were asked for");
    owners.forEach(({ window, pos }, r) => {
      const row = result.logits.subarray(r * V, (r + 1) * V);
      let max = -Infinity;
      for (const v of row) max = Math.max(max, v);
      let sum = 0;
      for (const v of row) sum += Math.exp(v - max);
      const lse = max + Math.log(sum);
      logprobs.push({ window, pos, values: Array.from(row, (v) => v - lse) });
    });
  }
  releaseBatches(batches, backend);
  console.log(JSON.stringify({ task, backend: backend.name, logprobs }));
  opened.close();
  await backend.dispose();
} else if (task === "prune") {
  const out = values.out!;
  rmSync(out, { recursive: true, force: true });
  setNativeOutput(!values["no-native-output"]);
  const started = process.hrtime.bigint();
  const result = removeLayers(modelPath, out, values.layers!.split(",").map(Number));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ task, seconds, bytesWritten: result.bytesWritten, mbPerSecond: result.bytesWritten / 1e6 / seconds, layersBefore: result.layersBefore, layersAfter: result.layersAfter, nativeBytes: outputStats.nativeBytes, directBytes: outputStats.directBytes, peakRssBytes: process.resourceUsage().maxRSS * 1024 }));
  rmSync(out, { recursive: true, force: true });
} else {
  const windowsIds = (JSON.parse(readFileSync(values.tokens!, "utf8")) as { windows: number[][] }).windows;
  const threads = Number(values.threads ?? "2");
  const precision = values.precision === undefined ? {} : { precision: parsePrecision(values.precision) };
  const { backend, notes } = await selectBackend(parseBackendName(values.backend ?? "onnx"), { threads, ...precision });
  for (const note of notes) process.stderr.write(`${note}\n`);
  const opened = openModel(modelPath);
  const seqLen = windowsIds[0]!.length;
  const tokens = windowsIds.length * seqLen;
  const started = process.hrtime.bigint();
  let extra: Record<string, unknown>;
  if (task === "score") {
    const windows = scoringWindows(windowsIds, { seqLen, stride: seqLen });
    const bi = await streamingBlockInfluence(opened, windows, { backend });
    extra = { bi: bi.layers.map((l) => l.bi) };
  } else {
    const ppl = await streamingPerplexity(opened, perplexityWindows(windowsIds, { seqLen, stride: seqLen }), { backend });
    extra = { nll: ppl.nll };
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const flops = flopsPerToken(opened, seqLen, task === "ppl") * tokens;
  console.log(JSON.stringify({
    // The CPU bf16 engine's GEMM: "native" or "oneDNN x.y.z (brg:...)", the implementation oneDNN dispatched to.
    ...("features" in backend ? { gemm: gemmName((backend as { features: CpuFeatures }).features) } : {}),
    task, backend: backend.name, threads, tokens, seconds, tokensPerSecond: tokens / seconds, gflops: flops / seconds / 1e9,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, ...extra,
  }));
  opened.close();
  await backend.dispose();
}

/** The GEMM the bf16 engine ran, with oneDNN's implementation as it stands after the run. */
function gemmName(features: CpuFeatures): string {
  const now = cpuBf16Availability();
  const current = now.ok ? now.native.features() : features;
  return current.gemmImpl ? `${current.gemm} (${current.gemmImpl})` : current.gemm;
}

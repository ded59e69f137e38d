// The GPU device check's combine step on hand-made inputs: ratios, share of the bf16 peak, BI
// differences, and rows where one side is missing or the input is junk.

import assert from "node:assert/strict";
import { test } from "node:test";
import { combine, flopsPerToken, layerParameters, renderMarkdown, SHAPES } from "../bench/gpu/combineResults.js";

const shortgpt = {
  device: "cuda: NVIDIA H200",
  correctness: [{ check: "layer vs reference", ok: true, detail: "max rel 1e-3" }, { check: "bi", ok: false, detail: "off" }],
  speed: [
    { shape: "tinyllama", windows: 8, seqLen: 512, task: "score", tokensPerSecond: 200_000, seconds: 0.02, bi: [0.5, 0.25, 0.125] },
    { shape: "tinyllama", windows: 8, seqLen: 512, task: "ppl", tokensPerSecond: 100_000, seconds: 0.04, nll: 10.5 },
    { shape: "llama3-8b", windows: 8, seqLen: 512, task: "score", tokensPerSecond: 30_000, seconds: 0.1 },
  ],
};
const peer = (shape: string, seqLen: number, tflops: number, tasks: Record<string, unknown>): unknown =>
  ({ shape, seq_len: seqLen, windows: 8, gpu: "NVIDIA H200", torch: "2.11.0+cu130", transformers: "5.17.0", gemm_bf16: { tflops }, tasks });

test("layer parameters match the published model sizes (peer_cuda.py counted the same on the real modules)", () => {
  assert.equal(layerParameters(SHAPES["tinyllama"]!), 968_974_336); // TinyLlama 1.1B minus embeddings and head
  assert.equal(layerParameters(SHAPES["tiny"]!), 172_544);
  assert.equal(layerParameters(SHAPES["llama2-7b"]!), 6_476_267_520); // 6.74e9 - 2 * 4096 * 32000 - 4096
  assert.equal(flopsPerToken("llama3-8b", "ppl")! - flopsPerToken("llama3-8b", "score")!, 2 * 4096 * 128256);
  assert.equal(flopsPerToken("gpt-9", "score"), null);
});

test("ratio, peak fraction (best peak over peer files), BI and nll differences", () => {
  const peers = [
    peer("tinyllama", 512, 700, {
      score: { tokens_per_second: 100_000, seconds: 0.04, warmup_seconds: 1.5, bi: [0.5, 0.2, 0.125] },
      ppl: { tokens_per_second: 50_000, nll: 10.25 },
    }),
    peer("llama3-8b", 512, 800, { score: { tokens_per_second: 40_000, bi: [0.1] } }),
  ];
  const c = combine(shortgpt, peers);
  assert.equal(c.peakTflops, 800);
  assert.equal(c.gpu, "NVIDIA H200");
  assert.equal(c.correctness.length, 2);
  assert.equal(c.correctness[1]!.ok, false);
  const row = (shape: string, task: string) => c.rows.find((r) => r.shape === shape && r.task === task)!;
  const score = row("tinyllama", "score");
  assert.equal(score.ratio, 2);
  const flops = 2 * 968_974_336;
  assert.ok(Math.abs(score.peakFraction! - 200_000 * flops / 800e12) < 1e-12);
  assert.ok(Math.abs(score.peerPeakFraction! - 100_000 * flops / 800e12) < 1e-12);
  assert.ok(Math.abs(score.maxBiDiff! - 0.05) < 1e-12);
  assert.equal(score.peer!.coldSeconds, 1.5);
  assert.equal(score.shortgpt!.coldSeconds, undefined);
  const ppl = row("tinyllama", "ppl");
  assert.equal(ppl.ratio, 2);
  assert.equal(ppl.nllDiff, 0.25);
  assert.equal(ppl.maxBiDiff, null);
  assert.ok(ppl.flopsPerToken! > score.flopsPerToken!);
  // shortgpt has no BI for llama3-8b: no difference, but the speed columns still join.
  const big = row("llama3-8b", "score");
  assert.equal(big.ratio, 0.75);
  assert.equal(big.maxBiDiff, null);
  assert.equal(c.rows.length, 3);
});

test("missing peer rows and a missing shortgpt.json leave blanks, not errors", () => {
  const noPeers = combine(shortgpt, []);
  assert.equal(noPeers.peakTflops, null);
  assert.ok(noPeers.rows.every((r) => r.peer === null && r.ratio === null && r.peakFraction === null));
  assert.ok(noPeers.notes.some((n) => n.includes("peak")));

  const onlyPeer = combine(null, [peer("llama2-7b", 2048, 750, { score: { tokens_per_second: 9000 } })]);
  assert.equal(onlyPeer.rows.length, 1);
  assert.equal(onlyPeer.rows[0]!.shortgpt, null);
  assert.equal(onlyPeer.rows[0]!.seqLen, 2048);
  assert.ok(onlyPeer.rows[0]!.peerPeakFraction! > 0);
  assert.ok(onlyPeer.notes.some((n) => n.includes("shortgpt.json missing")));
  const md = renderMarkdown(onlyPeer);
  assert.match(md, /\| llama2-7b \| 2048 \| score \| - \| 9000 \| - \|/);
});

test("junk entries and BI lists of different lengths are noted and skipped", () => {
  const c = combine({ speed: [{ shape: "tinyllama", task: "score" }, 7, { shape: "tinyllama", seqLen: 512, task: "score", tokensPerSecond: "fast", bi: [1, 2] }] },
    [{ nothing: true }, 3, peer("tinyllama", 512, Number.NaN, { score: { bi: [1, 2, 3] } })]);
  assert.equal(c.rows.length, 1);
  assert.equal(c.rows[0]!.shortgpt!.tokensPerSecond, undefined);
  assert.equal(c.rows[0]!.maxBiDiff, null);
  assert.equal(c.peakTflops, null); // NaN is not a peak
  assert.ok(c.notes.some((n) => n.includes("differ in length")));
  assert.equal(c.notes.filter((n) => n.includes("skipped")).length, 4);
});

// Window cutting for scoring and perplexity, and layer-list parsing, on hand-made inputs.

import assert from "node:assert/strict";
import { test } from "node:test";
import { perplexityWindows, scoringWindows, truncateDocuments } from "../src/data/windows.js";
import { OptionError } from "../src/errors.js";
import { lowestK, parseLayerList, renumbering } from "../src/prune/plan.js";

const doc = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

test("scoring windows: stride = length, a short final window is kept if it has >= 2 tokens", () => {
  const w = scoringWindows([doc(10), doc(9)], { seqLen: 4, stride: 4 });
  assert.deepEqual(w.map((x) => [x.document, x.begin, x.tokens.length]), [[0, 0, 4], [0, 4, 4], [0, 8, 2], [1, 0, 4], [1, 4, 4]]);
});

test("scoring windows: overlapping stride stops at the first window reaching the end", () => {
  const w = scoringWindows([doc(10)], { seqLen: 8, stride: 4 });
  assert.deepEqual(w.map((x) => [x.begin, x.tokens.length]), [[0, 8], [4, 6]]);
});

test("scoring windows: max tokens cuts the last window to fit", () => {
  const w = scoringWindows([doc(10), doc(10)], { seqLen: 4, stride: 4, maxTokens: 11 });
  assert.deepEqual(w.map((x) => [x.document, x.begin, x.tokens.length]), [[0, 0, 4], [0, 4, 4], [0, 8, 2]]);
  assert.equal(w.reduce((n, x) => n + x.tokens.length, 0), 10); // 1 token left cannot make a window
});

test("perplexity windows: stride = length scores all but the first token of each window", () => {
  const w = perplexityWindows([doc(10)], { seqLen: 4, stride: 4 });
  assert.deepEqual(w.map((x) => [x.begin, x.tokens.length, x.firstTarget]), [[0, 4, 1], [4, 4, 1], [8, 2, 1]]);
});

test("perplexity windows: stride < length scores each token once, with context", () => {
  const w = perplexityWindows([doc(10)], { seqLen: 4, stride: 2 });
  // targets: [1,4) then [4,6) then [6,8) then [8,10)
  assert.deepEqual(w.map((x) => [x.begin, x.firstTarget + x.begin, x.begin + x.tokens.length]), [[0, 1, 4], [2, 4, 6], [4, 6, 8], [6, 8, 10]]);
  const scored = w.reduce((n, x) => n + x.tokens.length - x.firstTarget, 0);
  assert.equal(scored, 9);
});

test("truncateDocuments keeps the first N tokens across documents", () => {
  assert.deepEqual(truncateDocuments([doc(3), doc(3)], 4), [[0, 1, 2], [0]]);
});

test("layer lists: sorted, duplicates and out-of-range refused with the option named", () => {
  assert.deepEqual(parseLayerList("3, 1", 5), [1, 3]);
  assert.throws(() => parseLayerList("1,1", 5), (e: unknown) => e instanceof OptionError && /listed twice/.test(e.message) && e.details.option === "--layers");
  assert.throws(() => parseLayerList("5", 5), (e: unknown) => e instanceof OptionError && /out of range/.test(e.message));
  assert.throws(() => parseLayerList("-1", 5), OptionError);
  assert.throws(() => parseLayerList("a", 5), OptionError);
  assert.throws(() => lowestK([0, 1, 2], 3, 3), (e: unknown) => e instanceof OptionError && e.details.option === "--remove");
  assert.deepEqual(lowestK([4, 2, 0, 1, 3], 2, 5), [2, 4]);
  assert.deepEqual([...renumbering([1, 3], 5)], [[0, 0], [2, 1], [4, 2]]);
});

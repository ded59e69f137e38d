// The layer-by-layer engine on every backend against the numpy float64 oracle: Block
// Influence within 1e-5 and perplexity within 1e-5 relative, with proof the fast path ran.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DecoderBackend } from "../src/backend/backend.js";
import { createOrtBackend, type OrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { BACKEND_FACTORIES, parseBackendName, selectBackend } from "../src/backend/select.js";
import { readTextData, tokenizeDocuments } from "../src/data/documents.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { OptionError, UnsupportedError } from "../src/errors.js";
import { openModel } from "../src/load.js";
import { streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { MODEL_BIN, MODEL_GGUF, TINYSTORIES, maxRelativeError } from "./helpers.js";

interface Golden {
  documents: { count: number };
  bi: { window: number; stride: number; max_tokens: number | null; skip: number[]; bi: number[]; tokens: number }[];
  perplexity: { window: number; stride: number; skip: number[]; nll: number; tokens: number }[];
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "stories260K.json"), "utf8")) as Golden;
const opened = [openModel(MODEL_BIN), openModel(MODEL_GGUF)];
const documents = tokenizeDocuments(opened[0]!.tokenizer, readTextData(TINYSTORIES, "blank-line").documents.slice(0, golden.documents.count));
const backends: DecoderBackend[] = [];
after(async () => {
  for (const b of backends) await b.dispose();
  for (const o of opened) o.close();
});

/** Runs the oracle's cases (all, or every `every`-th) on the given checkpoints; returns the worst relative errors. */
async function checkAgainstOracle(backend: DecoderBackend, batchTokens: number, sources = opened, every = 1): Promise<{ bi: number; nll: number }> {
  let worstBi = 0;
  let worstNll = 0;
  const pick = <T>(cases: T[]): T[] => cases.filter((_, i) => i % every === 0);
  for (const source of sources) {
    for (const c of pick(golden.bi)) {
      const windows = scoringWindows(documents, { seqLen: c.window, stride: c.stride, ...(c.max_tokens === null ? {} : { maxTokens: c.max_tokens }) });
      const result = await streamingBlockInfluence(source, windows, { backend, skip: new Set(c.skip), batchTokens });
      assert.equal(result.tokens, c.tokens);
      worstBi = Math.max(worstBi, maxRelativeError(result.layers.map((l) => l.bi), c.bi));
    }
    for (const c of pick(golden.perplexity)) {
      const result = await streamingPerplexity(source, perplexityWindows(documents, { seqLen: c.window, stride: c.stride }), { backend, skip: new Set(c.skip), batchTokens });
      assert.equal(result.tokens, c.tokens);
      worstNll = Math.max(worstNll, Math.abs(result.nll - c.nll) / c.nll);
    }
  }
  return { bi: worstBi, nll: worstNll };
}

test("reference backend, layer by layer: BI and perplexity equal the oracle", async (t) => {
  const backend = createReferenceBackend();
  backends.push(backend);
  // The slow plain kernels: a third of the cases on one format keep the suite fast.
  const err = await checkAgainstOracle(backend, 4096, [opened[0]!], 3);
  t.diagnostic(`reference: max relative error BI ${err.bi.toExponential(2)}, nll ${err.nll.toExponential(2)}`);
  assert.ok(err.bi < 1e-5 && err.nll < 1e-5, JSON.stringify(err));
});

for (const flavor of ["node", "web"] as const) {
  test(`onnxruntime-${flavor} backend: BI within 1e-5 and perplexity within 1e-5 of the oracle, and it really ran`, async (t) => {
    const backend: OrtBackend = await createOrtBackend({ threads: 2, flavor });
    backends.push(backend);
    // Small batches too, so windows of several lengths and several batches per layer are exercised.
    const err = await checkAgainstOracle(backend, 700, flavor === "node" ? opened : [opened[1]!]);
    t.diagnostic(`onnxruntime-${flavor}: max relative error BI ${err.bi.toExponential(2)}, nll ${err.nll.toExponential(2)}; ${backend.stats.sessionRuns} session runs`);
    assert.equal(backend.name, `onnxruntime-${flavor}`);
    assert.ok(backend.stats.sessionRuns > 100, "the ONNX sessions ran");
    assert.ok(err.bi > 0, "float32 on the fast path differs from float64 by a little, so the fast path computed this");
    assert.ok(err.bi < 1e-5 && err.nll < 1e-5, JSON.stringify(err));
  });
}

test("backend selection: auto picks onnxruntime-node; bad names and thread counts are clear errors", async () => {
  const { backend, notes } = await selectBackend("auto", { threads: 2 });
  backends.push(backend);
  assert.equal(backend.name, "onnxruntime-node");
  assert.deepEqual(notes, []);
  await assert.rejects(selectBackend("onnx", { threads: 0 }), (e: unknown) => e instanceof OptionError && /--threads 0 must be a positive integer/.test(e.message));
  assert.throws(() => parseBackendName("gpu"), (e: unknown) => e instanceof OptionError && /choose one of: auto, cuda, onnx, wasm, reference/.test(e.describe()));
});

test("backend selection: a runtime that fails to load falls back with a message naming the reason", async () => {
  const failing = async (): Promise<never> => {
    throw new UnsupportedError("the onnxruntime-node backend cannot load: libonnxruntime.so.1: cannot open shared object file");
  };
  const { backend, notes } = await selectBackend("auto", { threads: 2 }, { ...BACKEND_FACTORIES, onnx: failing });
  backends.push(backend);
  assert.equal(backend.name, "onnxruntime-web");
  assert.equal(notes.length, 1);
  assert.match(notes[0]!, /backend onnx unavailable \(the onnxruntime-node backend cannot load: libonnxruntime\.so\.1: cannot open shared object file\); falling back/);
  const last = await selectBackend("auto", { threads: 1 }, { ...BACKEND_FACTORIES, onnx: failing, wasm: failing });
  backends.push(last.backend);
  assert.equal(last.backend.name, "reference");
  assert.equal(last.notes.length, 2);
});

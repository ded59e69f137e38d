// Differential tests of the compute backends: onnxruntime-node and onnxruntime-web against
// the float64 reference backend on random layers (GQA and MHA) and on the real stories260K.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, test, type TestContext } from "node:test";
import type { LayerShape, LayerWeightsF32, PackedLayout } from "../src/backend/backend.js";
import { ProtoWriter } from "../src/backend/onnx/protobuf.js";
import { createOrtKernels, type OrtKernels, type OrtFlavor } from "../src/backend/ortBackend.js";
import { createReferenceKernels } from "../src/backend/referenceBackend.js";
import { OptionError } from "../src/errors.js";
import { loadModel } from "../src/load.js";
import { logProb } from "../src/models/llama.js";
import { mulberry32 } from "./fixtures/hfLlama.js";
import { MODEL_GGUF, TINYSTORIES, maxRelativeError, scaledError } from "./helpers.js";

const TOL = 1e-4;
const FLAVORS: OrtFlavor[] = ["node", "web"];

const prng = mulberry32;

/** n values uniform in center ± spread. */
function uniform(rand: () => number, n: number, spread: number, center = 0): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = center + (2 * rand() - 1) * spread;
  return out;
}

/** Weights scaled by 1/sqrt(fan-in), the size real checkpoints have, so activations stay O(1). */
function randomLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const r = prng(seed);
  const { dim: C, hiddenDim: F, nHeads, nKvHeads, headDim } = shape;
  const q = nHeads * headDim;
  const kv = nKvHeads * headDim;
  const s = (fanIn: number): number => Math.sqrt(3 / fanIn);
  return {
    attnNorm: uniform(r, C, 0.3, 1), wq: uniform(r, q * C, 2 * s(C)), wk: uniform(r, kv * C, 2 * s(C)), wv: uniform(r, kv * C, s(C)),
    wo: uniform(r, C * q, s(q)), ffnNorm: uniform(r, C, 0.3, 1), wGate: uniform(r, F * C, s(C)), wDown: uniform(r, C * F, s(F)), wUp: uniform(r, F * C, s(C)),
  };
}


/** y - x, the part of the residual stream the layer added: a stricter comparison than y itself. */
function delta(y: Float32Array, x: Float32Array): Float32Array {
  return y.map((v, i) => v - x[i]!);
}

test("protobuf writer: varints, negative int64, strings, packed varints, floats encode as the wire format says", () => {
  const bytes = (write: (w: ProtoWriter) => void): number[] => {
    const w = new ProtoWriter();
    write(w);
    return [...w.finish()];
  };
  assert.deepEqual(bytes((w) => w.varint(1, 150)), [0x08, 0x96, 0x01]);
  assert.deepEqual(bytes((w) => w.varint(1, -1)), [0x08, ...Array<number>(9).fill(0xff), 0x01]);
  assert.deepEqual(bytes((w) => w.varint(3, 2n ** 40n)), [0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
  assert.deepEqual(bytes((w) => w.string(2, "hi")), [0x12, 0x02, 0x68, 0x69]);
  assert.deepEqual(bytes((w) => w.packedVarints(4, [3, 270])), [0x22, 0x03, 0x03, 0x8e, 0x02]);
  assert.deepEqual(bytes((w) => w.float(5, 1)), [0x2d, 0x00, 0x00, 0x80, 0x3f]);
  assert.deepEqual(bytes((w) => w.packedFloats(7, [1])), [0x3a, 0x04, 0x00, 0x00, 0x80, 0x3f]);
  assert.deepEqual(bytes((w) => w.message(6, (m) => m.varint(1, 1))), [0x32, 0x02, 0x08, 0x01]);
});

const GQA: LayerShape = { dim: 64, hiddenDim: 172, nHeads: 8, nKvHeads: 4, headDim: 8, normEps: 1e-5, ropeTheta: 10000 };
const MHA: LayerShape = { ...GQA, nKvHeads: 8 };
const B = 3;
const T = 33;
const VOCAB = 97;

const reference = createReferenceKernels();
const backends = new Map<OrtFlavor, OrtKernels>();
async function backend(flavor: OrtFlavor): Promise<OrtKernels> {
  let b = backends.get(flavor);
  if (!b) {
    b = await createOrtKernels({ threads: 2, flavor });
    backends.set(flavor, b);
  }
  return b;
}
after(async () => {
  for (const b of backends.values()) await b.dispose();
});

/** Checks a fast result against the reference: close, but not bit-identical (float32 vs float64 proves the fast path ran). */
function assertClose(t: TestContext, label: string, got: Float32Array, want: Float32Array): number {
  const err = scaledError(got, want);
  const elementwise = maxRelativeError(got, want, 1e-2);
  t.diagnostic(`${label}: max |error| / max |value| = ${err.toExponential(2)}; elementwise relative (floor 1e-2) = ${elementwise.toExponential(2)}`);
  assert.ok(err <= TOL, `${label}: error ${err} exceeds ${TOL}`);
  assert.ok(err > 0, `${label}: bit-identical to the float64 reference, so the fast path cannot have run`);
  return err;
}

for (const flavor of FLAVORS) {
  for (const [caseName, shape] of [["GQA 8/4", GQA], ["MHA 8/8", MHA]] as const) {
    test(`onnxruntime-${flavor} runLayer matches the reference (${caseName}, B=${B}, T=${T})`, async (t) => {
      const fast = await backend(flavor);
      const weights = randomLayer(shape, 1);
      const x = uniform(prng(2), B * T * shape.dim, 1);
      const runsBefore = fast.stats.sessionRuns;
      const got = await fast.runLayer(x, B, T, weights, shape);
      assert.equal(fast.stats.sessionRuns, runsBefore + 1);
      assert.equal(fast.name, `onnxruntime-${flavor}`);
      const want = await reference.runLayer(x, B, T, weights, shape);
      assertClose(t, `${flavor} ${caseName} layer output`, got, want);
      assertClose(t, `${flavor} ${caseName} layer delta (y - x)`, delta(got, x), delta(want, x));
      // Windows are independent: the second window alone gives the same rows.
      const second = x.subarray(T * shape.dim, 2 * T * shape.dim);
      const alone = await fast.runLayer(second, 1, T, weights, shape);
      assert.ok(scaledError(alone, got.subarray(T * shape.dim, 2 * T * shape.dim)) < 1e-6);
    });
  }

  test(`onnxruntime-${flavor} runHead matches the reference: logits, log-sum-exp, target logit`, async (t) => {
    const fast = await backend(flavor);
    const r = prng(3);
    const n = B * T;
    const x = uniform(r, n * GQA.dim, 1);
    const norm = uniform(r, GQA.dim, 0.3, 1);
    const classifier = uniform(r, VOCAB * GQA.dim, 0.5);
    const targets = Int32Array.from({ length: n }, () => Math.floor(r() * VOCAB));
    const got = await fast.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5);
    const want = await reference.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5);
    assert.ok(got.kind === "logits" && want.kind === "logits");
    assertClose(t, `${flavor} head logits`, got.logits, want.logits);
    const gotNll = await fast.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5, targets);
    const wantNll = await reference.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5, targets);
    assert.ok(gotNll.kind === "nll" && wantNll.kind === "nll");
    assertClose(t, `${flavor} head logSumExp`, gotNll.logSumExp, wantNll.logSumExp);
    assertClose(t, `${flavor} head targetLogit`, gotNll.targetLogit, wantNll.targetLogit);
    // the target logit is the logits entry it names
    for (let i = 0; i < n; i++) assert.equal(gotNll.targetLogit[i], got.logits[i * VOCAB + targets[i]!]);
  });
}

/**
 * Two windows of T tokens, each a prefix of P tokens then branches of the given lengths and
 * padding (a branch of its own); every token's position is its index in its own sequence.
 */
function packedCase(P: number, branchLengths: readonly number[]): { layout: PackedLayout; sequences: { rows: number[] }[] } {
  const positions: number[] = [];
  const branches: number[] = [];
  const sequences: { rows: number[] }[] = [];
  for (let b = 0; b < 2; b++) {
    const base = b * T;
    for (let i = 0; i < P; i++) positions.push(i), branches.push(0);
    branchLengths.forEach((length, k) => {
      const rows = Array.from({ length: P }, (_, i) => base + i);
      for (let i = 0; i < length; i++) {
        rows.push(positions.length); // the global row this token lands in
        positions.push(P + i);
        branches.push(k + 1);
      }
      sequences.push({ rows });
    });
    const padStart = positions.length - base;
    for (let j = padStart; j < T; j++) positions.push(P + j - padStart), branches.push(branchLengths.length + 1);
  }
  return { layout: { positions: Int32Array.from(positions), branches: Int32Array.from(branches) }, sequences };
}

/** The rows of x (width `dim`) listed, end to end. */
function gatherRows(x: Float32Array, rows: readonly number[], dim: number): Float32Array {
  const out = new Float32Array(rows.length * dim);
  rows.forEach((r, i) => out.set(x.subarray(r * dim, (r + 1) * dim), i * dim));
  return out;
}

test("packed windows (shared prefix + branches, tree attention): every branch equals its own causal sequence; onnxruntime matches the reference", async (t) => {
  const { layout, sequences } = packedCase(10, [7, 1, 9]); // 27 tokens + 6 of padding in T = 33
  const shape = GQA;
  const weights = randomLayer(shape, 5);
  const x = uniform(prng(6), B * T * shape.dim, 1).subarray(0, 2 * T * shape.dim);
  const want = await reference.runLayer(x, 2, T, weights, shape, layout);
  for (const [i, { rows }] of sequences.entries()) {
    // The same tokens as one plain causal window through the reference: identical rows.
    const alone = await reference.runLayer(gatherRows(x, rows, shape.dim), 1, rows.length, weights, shape);
    assert.ok(scaledError(gatherRows(want, rows, shape.dim), alone) < 1e-12, `branch sequence ${i}`);
  }
  for (const flavor of FLAVORS) {
    const fast = await backend(flavor);
    const got = await fast.runLayer(x, 2, T, weights, shape, layout);
    assertClose(t, `${flavor} packed layer delta (y - x)`, delta(got, x), delta(want, x));
  }
  await assert.rejects(reference.runLayer(x, 2, T, weights, shape, { ...layout, branches: new Int32Array(3) }), (e: unknown) => e instanceof OptionError && /layout.branches/.test(e.message));
});

test("onnxruntime-node splits large batches into runs of whole windows (rows) and gives the same results", async () => {
  const whole = await backend("node");
  const chunked = await createOrtKernels({ threads: 2, flavor: "node", maxRowsPerRun: 40 });
  try {
    const weights = randomLayer(GQA, 1);
    const x = uniform(prng(2), B * T * GQA.dim, 1);
    const got = await chunked.runLayer(x, B, T, weights, GQA);
    assert.equal(chunked.stats.sessionRuns, B, "one window (33 rows) per run");
    assert.ok(scaledError(got, await whole.runLayer(x, B, T, weights, GQA)) < 1e-6);
    const r = prng(4);
    const n = B * T;
    const norm = uniform(r, GQA.dim, 0.3, 1);
    const classifier = uniform(r, VOCAB * GQA.dim, 0.5);
    const targets = Int32Array.from({ length: n }, () => Math.floor(r() * VOCAB));
    const nll = await chunked.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5, targets);
    const nllWhole = await whole.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5, targets);
    assert.equal(chunked.stats.sessionRuns, B + 3, "99 rows in runs of at most 40");
    assert.ok(nll.kind === "nll" && nllWhole.kind === "nll");
    assert.ok(scaledError(nll.logSumExp, nllWhole.logSumExp) < 1e-6 && scaledError(nll.targetLogit, nllWhole.targetLogit) < 1e-6);
    const logits = await chunked.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5);
    const logitsWhole = await whole.runHead(x, n, { finalNorm: norm, classifier }, VOCAB, 1e-5);
    assert.ok(logits.kind === "logits" && logitsWhole.kind === "logits");
    assert.ok(scaledError(logits.logits, logitsWhole.logits) < 1e-6);
  } finally {
    await chunked.dispose();
  }
});

test("backends refuse arrays of the wrong length with an OptionError naming the array", async () => {
  const fast = await backend("node");
  const weights = randomLayer(GQA, 1);
  await assert.rejects(fast.runLayer(new Float32Array(10), 1, T, weights, GQA), (e: unknown) => e instanceof OptionError && /x has 10 values/.test(e.message));
  await assert.rejects(reference.runLayer(new Float32Array(T * GQA.dim), 1, T, { ...weights, wo: new Float32Array(3) }, GQA), (e: unknown) => e instanceof OptionError && /wo/.test(e.message));
});

test("stories260K: layers one by one through onnxruntime match the reference forward pass", async (t) => {
  const loaded = loadModel(MODEL_GGUF);
  const { model } = loaded;
  const { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta, vocabSize, nLayers } = model.config;
  const shape: LayerShape = { dim, hiddenDim, nHeads, nKvHeads, headDim, normEps, ropeTheta };
  const seqLen = 64;
  const ids = loaded.tokenizer.encode(readFileSync(TINYSTORIES, "utf8").slice(0, 4000), { bos: true });
  assert.ok(ids.length >= 2 * seqLen + 1);
  const windows = [ids.slice(0, seqLen), ids.slice(seqLen, 2 * seqLen)];

  // The reference: one forward pass per window, capturing the last layer's output.
  const wantHidden = new Float32Array(2 * seqLen * dim);
  const wantLogits = new Float32Array(2 * seqLen * vocabSize);
  windows.forEach((w, b) => {
    const result = model.forward(w, {
      hooks: { onLayer: (layer, _input, output) => { if (layer === nLayers - 1) wantHidden.set(output.subarray(0, seqLen * dim), b * seqLen * dim); } },
    });
    wantLogits.set(result.logits, b * seqLen * vocabSize);
  });

  for (const flavor of FLAVORS) {
    const fast = await backend(flavor);
    const runsBefore = fast.stats.sessionRuns;
    let x: Float32Array = new Float32Array(2 * seqLen * dim);
    windows.flat().forEach((id, row) => x.set(model.weights.embedding.subarray(id * dim, (id + 1) * dim), row * dim));
    for (const layer of model.weights.layers) x = await fast.runLayer(x, 2, seqLen, layer, shape);
    const head = await fast.runHead(x, 2 * seqLen, model.weights, vocabSize, normEps);
    assert.ok(head.kind === "logits");
    assert.equal(fast.stats.sessionRuns, runsBefore + nLayers + 1, "every layer and the head ran in onnxruntime");
    assertClose(t, `stories260K ${flavor} final hidden state`, x, wantHidden);
    assertClose(t, `stories260K ${flavor} logits`, head.logits, wantLogits);
    // log p(next token) through the nll head, against log-softmax of the reference logits
    const rows = 2 * seqLen - 1;
    const targets = Int32Array.from(windows.flat().slice(1));
    const nll = await fast.runHead(x.subarray(0, rows * dim), rows, model.weights, vocabSize, normEps, targets);
    assert.ok(nll.kind === "nll");
    const wantLogProb = Float32Array.from(targets, (id, r) => logProb(Float64Array.from(wantLogits.subarray(r * vocabSize, (r + 1) * vocabSize)), 0, vocabSize, id));
    assertClose(t, `stories260K ${flavor} log p(next)`, nll.targetLogit.map((v, r) => v - nll.logSumExp[r]!), wantLogProb);
  }
});

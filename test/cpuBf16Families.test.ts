// The CPU bf16 engine on Gemma 2, Gemma 3 and Phi-3 layers: each family feature of the native
// layer (GELU-tanh gate, sandwich norms, score scale, soft-capping, sliding window, per-head q/k
// norms, LongRoPE's factors) against the float64 reference layer, one at a time and as each family
// combines them (plain and packed windows); then the transformers fixtures of test/fixtures/hf-attn
// scored by the bf16 engine against transformers' residual streams and logits (the goldens of
// test/oracle/hf_attention_families_oracle.py) and against the fp32 engine; and BF16 GGUF files of
// llama.cpp's gemma2, gemma3 and phi3 architectures against llama.cpp (node-llama-cpp) on the same file.

import assert from "node:assert/strict";
import { cpSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import type { DecoderBackend, LayerShape, LayerWeightsF32, PackedLayout } from "../src/backend/backend.js";
import { createCpuBf16Backend, createCpuBf16Kernels, type CpuBf16Backend, nativeLayerSupports } from "../src/backend/cpuBf16/bf16Kernels.js";
import { cpuBf16Availability } from "../src/backend/cpuBf16/native.js";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceKernels } from "../src/backend/referenceBackend.js";
import { bf16ByDefault } from "../src/cli/common.js";
import { readSafetensors, readTensorBytes, writeSafetensors } from "../src/formats/safetensors.js";
import { openModel } from "../src/load.js";
import { layerShape } from "../src/models/llama.js";
import { streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import { encodeF32 } from "../src/tensor/encode.js";
import { clearF32Pool, f32PoolStats, recycleU16 } from "../src/tensor/hostMemory.js";
import { xorshiftFill as fill } from "../src/util/random.js";
import { decodeGoldenFloats, goldenBlockInfluence, goldenNll, runCli, tempDir, TOKENIZER } from "./helpers.js";
import { cpuLlama, llamaCppProbabilities } from "./llamaCppOracle.js";

const available = cpuBf16Availability();
const skip = available.ok ? false : `bf16 engine unavailable here: ${available.reason}`;

/** Rounds to bf16 (nearest even) in place, as a bf16 checkpoint's weights are. */
function roundBf16(a: Float32Array): Float32Array {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < u.length; i++) u[i] = (((u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16) << 16) >>> 0;
  return a;
}

const BASE: LayerShape = { dim: 64, hiddenDim: 172, nHeads: 4, nKvHeads: 2, headDim: 16, normEps: 1e-6, ropeTheta: 10000 };

/** A layer with every weight a family may use (norm scales around 1, as Gemma's 1 + w are). */
function randomLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const { dim: C, hiddenDim: F, nHeads, nKvHeads, headDim: d } = shape;
  const q = nHeads * d;
  const kv = nKvHeads * d;
  const s = (fanIn: number): number => Math.sqrt(3 / fanIn);
  return {
    attnNorm: fill(C, 0.3, seed + 1, 1), wq: roundBf16(fill(q * C, s(C), seed + 2)), wk: roundBf16(fill(kv * C, s(C), seed + 3)), wv: roundBf16(fill(kv * C, s(C), seed + 4)),
    wo: roundBf16(fill(C * q, s(q), seed + 5)), ffnNorm: fill(C, 0.3, seed + 6, 1), wGate: roundBf16(fill(F * C, s(C), seed + 7)), wDown: roundBf16(fill(C * F, s(F), seed + 8)),
    wUp: roundBf16(fill(F * C, s(C), seed + 9)), attnPostNorm: fill(C, 0.5, seed + 10, 0.8), ffnPostNorm: fill(C, 0.5, seed + 11, 1.2),
    qNorm: fill(d, 0.5, seed + 12, 1), kNorm: fill(d, 0.5, seed + 13, 1),
  };
}

/** Each feature alone on BASE, then as Gemma 2 (a local layer), Gemma 3 (local and global) and Phi-3 combine them. */
const FEATURES: [string, Partial<LayerShape>][] = [
  ["GELU-tanh gate", { activation: "gelu_tanh" }],
  ["sandwich norms", { postNorms: true }],
  ["score scale", { attnScale: 0.6 }],
  ["soft-capping", { attnSoftcap: 1.5, attnScale: 1 }],
  ["sliding window", { slidingWindow: 7 }],
  ["q/k norms", { qkNorm: true }],
  ["LongRoPE", { ropeFreqFactors: [1, 1.3, 2.1, 3.7, 5, 8, 13, 21], ropeAttentionFactor: 1.19 }],
  ["gemma2 local", { activation: "gelu_tanh", postNorms: true, attnScale: 256 ** -0.5 * 2, attnSoftcap: 2, slidingWindow: 9 }],
  ["gemma3 local", { activation: "gelu_tanh", postNorms: true, attnScale: 0.4, qkNorm: true, slidingWindow: 5, ropeTheta: 10000 }],
  ["gemma3 global", { activation: "gelu_tanh", postNorms: true, attnScale: 0.4, qkNorm: true, ropeTheta: 1e6, ropeFreqFactors: [8, 8, 8, 8, 8, 8, 8, 8] }],
  ["phi3", { ropeFreqFactors: [1, 1.1, 1.4, 2, 2.9, 4.2, 6, 9], ropeAttentionFactor: 1.1902 }],
];

/** Worst over rows of |got - want| / |want - x| (the change the layer makes), and of |other - want| / |want - x|. */
function rowErrors(x: Float32Array, want: Float32Array, got: Float32Array, other: Float32Array, dim: number, rows: Iterable<number>): { worst: number; effect: number } {
  let worst = 0;
  let effect = 0;
  for (const r of rows) {
    let diff = 0, norm = 0, moved = 0;
    for (let i = r * dim; i < (r + 1) * dim; i++) {
      diff += (got[i]! - want[i]!) ** 2;
      norm += (want[i]! - x[i]!) ** 2;
      moved += (other[i]! - want[i]!) ** 2;
    }
    worst = Math.max(worst, Math.sqrt(diff / norm));
    effect = Math.max(effect, Math.sqrt(moved / norm));
  }
  return { worst, effect };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

test("the new native pieces on values checked by hand: GELU-tanh gate, sandwich norm add, per-head q/k norms, soft-capped and windowed attention", { skip }, () => {
  const { native } = available as Extract<typeof available, { ok: true }>;
  // geluGate: gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); gelu_tanh(1) = 0.8411920, (-1) = -0.1588080, (0) = 0, (3) = 2.9963627.
  const gate = [1, -1, 0, 3, -12, 40];
  const up = [2, 1, 5, 1, 1, 0.5];
  const out = new Float32Array(6);
  native.geluGate(out, new Float32Array([...gate, ...up]), 1, 6, 1);
  [0.841192 * 2, -0.158808, 0, 2.9963627, 0, 20].forEach((want, i) => assert.ok(Math.abs(out[i]! - want) < 2e-6 * Math.max(1, Math.abs(want)), `geluGate ${gate[i]}: ${out[i]} vs ${want}`));
  // addRmsNorm: x = (3, 4) has mean square 12.5; y += x / sqrt(12.5) * w.
  const y = new Float32Array([1, 1]);
  native.addRmsNorm(y, new Float32Array([3, 4]), new Float32Array([1, 2]), 1, 2, 0);
  assert.ok(Math.abs(y[0]! - (1 + 3 / Math.sqrt(12.5))) < 1e-6 && Math.abs(y[1]! - (1 + 8 / Math.sqrt(12.5))) < 1e-6, `addRmsNorm ${y.join(",")}`);
  // headRmsNorm: one q head (2, 0), one k head (0, -4), v (7, 7) untouched: each head to unit RMS times its norm weight.
  const qkv = new Float32Array([2, 0, 0, -4, 7, 7]);
  native.headRmsNorm(qkv, new Float32Array([1, 1]), new Float32Array([0.5, 0.5]), 1, 1, 1, 2, 0);
  assert.deepEqual(Array.from(qkv).map((v) => Math.round(v * 1e5) / 1e5), [Math.round(Math.SQRT2 * 1e5) / 1e5, 0, 0, -Math.round(0.5 * Math.SQRT2 * 1e5) / 1e5, 7, 7]);
  // Attention of one head (headDim 2, no rotation: cos 1, sin 0) over 3 tokens, with q = (a, 0), k_j = (1, 0) * j, v_j = (j, 0):
  // query 2's scores are a * j * scale for keys j = 0, 1, 2 (small integers, exact in bf16); the probabilities are
  // rounded to bf16 before P @ V, so the output (at most 2) is right to 2 * 2^-9 = 4e-3.
  const T = 3;
  const attend = (options: { scale?: number; softcap?: number; window?: number }): number => {
    const rows = new Float32Array(T * 6);
    for (let j = 0; j < T; j++) rows.set([2, 0, j, 0, j, 0], j * 6); // q = (2, 0), k = (j, 0), v = (j, 0)
    const o = new Float32Array(T * 2);
    native.attention(o, rows, 1, T, 1, 1, 2, new Float32Array(T).fill(1), new Float32Array(T), 1, null, null, options);
    return o[2 * 2]!; // query 2's output, first element: sum_j p_j * j
  };
  const expected = (scores: number[]): number => {
    const e = scores.map((v) => Math.exp(v));
    return e.reduce((acc, v, j) => acc + v * j, 0) / e.reduce((a, b) => a + b, 0);
  };
  const scale = 0.5;
  const plain = attend({ scale });
  const capped = attend({ scale, softcap: 1.5 });
  const windowed = attend({ scale, window: 2 });
  // The three differ by 0.15..0.2: each option changes the result by far more than the tolerance.
  assert.ok(Math.abs(plain - capped) > 0.1 && Math.abs(plain - windowed) > 0.1, `${plain} ${capped} ${windowed}`);
  assert.ok(Math.abs(plain - expected([0, 1, 2])) < 5e-3, `plain ${plain}`);
  assert.ok(Math.abs(capped - expected([0, 1.5 * Math.tanh(1 / 1.5), 1.5 * Math.tanh(2 / 1.5)])) < 5e-3, `softcap ${capped}`);
  assert.ok(Math.abs(windowed - expected([-Infinity, 1, 2])) < 5e-3, `window ${windowed}`);
  assert.ok(Math.abs(attend({}) - expected([0, 2 / Math.SQRT2, 4 / Math.SQRT2])) < 5e-3, "default scale 1/sqrt(headDim)");
  assert.throws(() => native.attention(new Float32Array(6), new Float32Array(18), 1, T, 1, 1, 2, new Float32Array(T).fill(1), new Float32Array(T), 1, null, null, { window: 1.5 }), /window a whole number/);
});

test("bf16 layer, each Gemma 2/3 and Phi-3 feature and each family's combination: within 2% (relative L2 per row) of the float64 reference layer and within 2x the plain layer's error, while the feature itself moves rows by far more", { skip }, async (t) => {
  const kernels = await createCpuBf16Kernels({ threads: 2, maxRowsPerRun: 80 });
  const reference = createReferenceKernels();
  try {
    const [nWindows, seqLen] = [3, 37];
    const x = fill(nWindows * seqLen * BASE.dim, 1, 17);
    const run = async (shape: LayerShape, w: LayerWeightsF32, layout?: PackedLayout, windows = nWindows): Promise<{ want: Float32Array; got: Float32Array }> => ({
      want: await reference.runLayer(x.subarray(0, windows * seqLen * shape.dim), windows, seqLen, w, shape, layout),
      // A fresh object per call: the kernels keep a layer packed per weights object (for one shape).
      got: await kernels.runLayer(x.subarray(0, windows * seqLen * shape.dim), windows, seqLen, { ...w }, shape, layout),
    });
    const w = randomLayer(BASE, 50);
    const plain = await run(BASE, w);
    const base = rowErrors(x, plain.want, plain.got, plain.want, BASE.dim, range(nWindows * seqLen)).worst;
    t.diagnostic(`plain Llama layer: worst row error ${base.toExponential(2)}`);
    const failures: string[] = [];
    for (const [name, features] of FEATURES) {
      const shape: LayerShape = { ...BASE, ...features };
      const { want, got } = await run(shape, w);
      // plain.want: the same weights as a plain Llama layer, what the feature changes.
      const { worst, effect } = rowErrors(x, want, got, plain.want, shape.dim, range(nWindows * seqLen));
      t.diagnostic(`${name}: worst row |bf16 - ref| / |ref delta| = ${worst.toExponential(2)}; the feature moves rows by up to ${effect.toExponential(2)}`);
      // bf16 GEMM inputs (2^-9 relative rounding each): measured 7.7e-3..1.6e-2 (the plain layer 1.0e-2 with these
      // weights; a larger score scale sharpens the softmax, 1.6e-2); a wrong feature would be off by its effect, 0.2..1.4.
      if (!(worst > 0 && worst < 2e-2 && worst < 2 * base && effect > 10 * worst)) failures.push(`${name}: error ${worst}, plain layer ${base}, feature effect ${effect}`);
    }
    // Packed windows with a sliding window: positions restart in branch 2, so the window follows positions, not rows.
    const positions = new Int32Array(2 * seqLen);
    const branches = new Int32Array(2 * seqLen);
    for (let tok = 0; tok < seqLen; tok++) {
      const branch = tok < 10 ? 0 : tok < 22 ? 1 : 2;
      for (const win of [0, 1]) {
        branches[win * seqLen + tok] = branch;
        positions[win * seqLen + tok] = branch === 2 ? tok - 12 : tok;
      }
    }
    for (const [name, features] of FEATURES.filter(([n]) => n.startsWith("gemma"))) {
      const shape: LayerShape = { ...BASE, ...features };
      const { want, got } = await run(shape, w, { positions, branches }, 2);
      const unpacked = await reference.runLayer(x.subarray(0, 2 * seqLen * shape.dim), 2, seqLen, w, shape);
      const { worst, effect } = rowErrors(x, want, got, unpacked, shape.dim, [...range(seqLen).slice(22), ...range(seqLen).slice(22).map((r) => r + seqLen)]);
      t.diagnostic(`${name}, packed windows: worst row error ${worst.toExponential(2)} (the layout changes rows by up to ${effect.toExponential(2)})`);
      if (!(worst < 2e-2 && effect > 10 * worst)) failures.push(`${name} packed: error ${worst}, layout effect ${effect}`);
    }
    assert.deepEqual(failures, []);
    assert.deepEqual({ bf16: kernels.stats.bf16Layers, fallback: kernels.stats.fallbackLayers }, { bf16: 1 + FEATURES.length + 3, fallback: 0 });
  } finally {
    await kernels.dispose();
  }
});

test("the native layer takes the Gemma 2/3 and Phi-3 features and refuses the rest (biases, LayerNorm, plain MLP, learned positions, llama.cpp's table GELU, recurrent kinds)", () => {
  for (const [name, features] of FEATURES) assert.equal(nativeLayerSupports({ ...BASE, ...features }), true, name);
  const refused: Partial<LayerShape>[] = [
    { qkvBias: true }, { layerNorm: true }, { plainMlp: true }, { noRope: true }, { outputBiases: true }, { activation: "gelu_tanh_f16" },
    { kind: "mamba" }, { kind: "rwkv7" }, { attnSoftcap: 0 }, { attnScale: -1 }, { slidingWindow: 2.5 }, { headDim: 15 }, { nKvHeads: 3 },
  ];
  for (const other of refused) assert.equal(nativeLayerSupports({ ...BASE, ...other }), false, JSON.stringify(other));
});

interface GoldenCase {
  name: string;
  logits: number[];
  residual: number[][];
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test/oracle/golden/hf_attention_families.json"), "utf8"), decodeGoldenFloats) as { ids: number[]; cases: GoldenCase[] };
const fixture = (name: string): string => join(repoRoot(), "test/fixtures/hf-attn", name);

/** A copy of a float32 fixture directory with every tensor stored as bf16 (rounded to nearest even). */
function bf16Copy(dir: string): string {
  const out = tempDir("shortgpt-bf16-family-");
  for (const name of ["config.json", "generation_config.json"]) cpSync(join(dir, name), join(out, name));
  const st = readSafetensors(join(dir, "model.safetensors"));
  const tensors = st.tensors.map((info) => {
    const bytes = readTensorBytes(st, info.name);
    const values = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const encoded = encodeF32(values, "BF16");
    return { name: info.name, dtype: "BF16" as const, shape: info.shape, byteLength: encoded.byteLength, bytes: () => encoded };
  });
  st.file.close();
  writeSafetensors(join(out, "model.safetensors"), tensors, { format: "pt" });
  return out;
}

const backends: DecoderBackend[] = [];
after(async () => {
  for (const b of backends) await b.dispose();
});

const rank = (bi: number[]): number[] => bi.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]).map(([, i]) => i);

for (const c of golden.cases) {
  test(`${c.name} (transformers fixture): the bf16 engine computes every layer; BI ranked as transformers' and the fp32 engine's, BI and perplexity close to both`, { skip }, async (t) => {
    const bf16: CpuBf16Backend = await createCpuBf16Backend({ threads: 2 });
    const fp32 = await createOrtBackend({ threads: 2, flavor: "node" });
    backends.push(bf16, fp32);
    const opened = openModel(fixture(c.name));
    try {
      const shapes = range(opened.config.nLayers).map((l) => layerShape(opened.config, l));
      assert.ok(shapes.every(nativeLayerSupports), `${c.name}: every layer shape native`);
      const window = { document: 0, begin: 0, tokens: golden.ids };
      const ours = await streamingBlockInfluence(opened, [window], { backend: bf16 });
      const theirs = await streamingBlockInfluence(opened, [window], { backend: fp32 });
      const want = goldenBlockInfluence(c.residual, opened.config.dim);
      const bi = ours.layers.map((l) => l.bi);
      assert.deepEqual(ours.ranking, theirs.ranking, `${c.name}: bf16 ranking vs the fp32 engine's`);
      assert.deepEqual(rank(bi), rank(want), `${c.name}: bf16 ranking vs transformers'`);
      const biErr = Math.max(...bi.map((v, i) => Math.abs(v - want[i]!) / want[i]!));
      const biErrFp32 = Math.max(...bi.map((v, i) => Math.abs(v - theirs.layers[i]!.bi) / theirs.layers[i]!.bi));
      const ppl = await streamingPerplexity(opened, [{ ...window, firstTarget: 1 }], { backend: bf16 });
      const pplFp32 = await streamingPerplexity(opened, [{ ...window, firstTarget: 1 }], { backend: fp32 });
      const nll = goldenNll(c.logits, golden.ids, opened.config.vocabSize);
      const nllErr = Math.abs(ppl.nll - nll) / nll;
      const nllErrFp32 = Math.abs(ppl.nll - pplFp32.nll) / pplFp32.nll;
      t.diagnostic(`${c.name}: BI ${bi.map((v) => v.toFixed(5)).join(" ")}; max relative BI error vs transformers ${biErr.toExponential(2)}, vs fp32 engine ${biErrFp32.toExponential(2)}; ` +
        `NLL ${ppl.nll.toFixed(6)} vs transformers ${nll.toFixed(6)} (${nllErr.toExponential(2)}), vs fp32 engine ${nllErrFp32.toExponential(2)}; stats ${JSON.stringify(bf16.stats)}`);
      // 4 layers x 2 passes, none on the fp32 kernels.
      assert.deepEqual({ bf16: bf16.stats.bf16Layers, fallback: bf16.stats.fallbackLayers }, { bf16: 2 * opened.config.nLayers, fallback: 0 });
      // A float32 checkpoint's GEMM weights round to bf16 here, and every GEMM input: measured BI 6.8e-4 (gemma2),
      // 7.1e-4 (gemma3), 4.3e-3 (phi3); NLL 6.9e-4, 3.6e-4 and 6.6e-3. This Phi-3's logits are large (NLL 8.6, uniform
      // would be 4.6), so its NLL moves with the rounding: the same model stored in bf16 gives 8.603 on this engine,
      // 8.543 from float32 weights, 8.598 on the fp32 engine (next test: 1e-3 there, where both engines have the same weights).
      assert.ok(biErr > 0 && biErr < 1.5e-2 && biErrFp32 < 1.5e-2, `${c.name}: BI relative error ${biErr} (transformers), ${biErrFp32} (fp32 engine)`);
      assert.ok(nllErr < 1e-2 && nllErrFp32 < 1e-2, `${c.name}: NLL relative error ${nllErr} (transformers), ${nllErrFp32} (fp32 engine)`);
    } finally {
      opened.close();
    }
  });
}

test("a bf16 Gemma 2/3 or Phi-3 checkpoint: bf16 by default, every GEMM weight packed from its stored bits; BI ranked as on the fp32 engine, BI and perplexity close to its", { skip }, async (t) => {
  for (const c of golden.cases) {
    const dir = bf16Copy(fixture(c.name));
    const opened = openModel(dir);
    try {
      assert.equal(bf16ByDefault(opened), true, c.name);
      const bf16 = await createCpuBf16Backend({ threads: 2 });
      const fp32 = await createOrtBackend({ threads: 2, flavor: "node" });
      backends.push(bf16, fp32);
      const window = { document: 0, begin: 0, tokens: golden.ids };
      // The same bf16 weights on both engines: what differs is the bf16 engine's rounding of the GEMM activations.
      const ours = await streamingBlockInfluence(opened, [window], { backend: bf16 });
      const theirs = await streamingBlockInfluence(opened, [window], { backend: fp32 });
      // q/k/v, o, gate/up, down: 7 weights per layer, every one from bf16 bits (Phi-3's fused ones as row views).
      assert.equal(bf16.stats.bf16Tensors, 7 * opened.config.nLayers, `${c.name}: ${JSON.stringify(bf16.stats)}`);
      assert.equal(bf16.stats.fallbackLayers, 0);
      assert.deepEqual(ours.ranking, theirs.ranking, c.name);
      const biErr = Math.max(...ours.layers.map((l, i) => Math.abs(l.bi - theirs.layers[i]!.bi) / theirs.layers[i]!.bi));
      const target = [{ ...window, firstTarget: 1 }];
      const nll = (await streamingPerplexity(opened, target, { backend: bf16 })).nll;
      const nllFp32 = (await streamingPerplexity(opened, target, { backend: fp32 })).nll;
      const nllErr = Math.abs(nll - nllFp32) / nllFp32;
      t.diagnostic(`${c.name} stored in bf16, bf16 vs fp32 engine: max relative BI difference ${biErr.toExponential(2)}, NLL ${nll.toFixed(6)} vs ${nllFp32.toFixed(6)} (${nllErr.toExponential(2)})`);
      // Measured: BI 8.2e-4 (gemma2), 6.4e-4 (gemma3), 8.8e-3 (phi3: its last layer's BI, 0.13, moves by 1e-3);
      // NLL 3.2e-4, 5.3e-4, 6.6e-4.
      assert.ok(biErr > 0 && biErr < 1.5e-2, `${c.name}: BI ${biErr}`);
      assert.ok(nllErr < 1e-3, `${c.name}: NLL ${nllErr}`);
    } finally {
      opened.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test("Gemma 2, Gemma 3 and Phi-3 as BF16 GGUF files (llama.cpp's gemma2, gemma3, phi3): the bf16 engine's perplexity within 1e-3 relative of llama.cpp's on the same file", { skip }, async (t) => {
  const ggufGolden = JSON.parse(readFileSync(join(repoRoot(), "test/oracle/golden/gguf_attention_families.json"), "utf8"), decodeGoldenFloats) as { ids: number[]; cases: { name: string; folder: string }[] };
  const ids = ggufGolden.ids;
  const llama = await cpuLlama();
  const dir = tempDir("shortgpt-bf16-gguf-");
  try {
    for (const c of ggufGolden.cases) {
      const gguf = join(dir, `${c.name}.gguf`);
      // The fixture has no tokenizer.json; stories260K's 512-token vocabulary stands in (as in ggufFamilies.test.ts).
      const run = runCli(["convert", join(repoRoot(), "test/fixtures/gguf-attn", c.folder), "--to", "gguf", gguf, "--dtype", "BF16", "--tokenizer", TOKENIZER]);
      assert.equal(run.status, 0, run.stderr);
      const opened = openModel(gguf);
      try {
        assert.ok(range(opened.config.nLayers).every((l) => nativeLayerSupports(layerShape(opened.config, l))), c.name);
        const bf16 = await createCpuBf16Backend({ threads: 2 });
        backends.push(bf16);
        const ours = (await streamingPerplexity(opened, [{ document: 0, begin: 0, tokens: ids, firstTarget: 1 }], { backend: bf16 })).nll;
        assert.deepEqual({ bf16: bf16.stats.bf16Layers, fallback: bf16.stats.fallbackLayers }, { bf16: opened.config.nLayers, fallback: 0 }, c.name);
        const probabilities = await llamaCppProbabilities(llama, gguf, ids);
        let theirs = 0;
        for (let pos = 0; pos + 1 < ids.length; pos++) theirs -= Math.log(probabilities[pos]!.get(ids[pos + 1]!) ?? 0);
        theirs /= ids.length - 1;
        const err = Math.abs(ours - theirs) / theirs;
        t.diagnostic(`${c.name} (BF16 GGUF): mean NLL bf16 engine ${ours.toFixed(6)}, llama.cpp ${theirs.toFixed(6)}: ${err.toExponential(2)} relative`);
        assert.ok(err < 1e-3, `${c.name}: NLL ${ours} vs llama.cpp ${theirs}`);
      } finally {
        opened.close();
      }
    }
  } finally {
    await llama.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("Phi-3's fused tensors as stored bf16 bits: each part equals its rows of the fused tensor, parts come from the pool, and the fused tensor goes back to it once its last part is read", () => {
  const dir = bf16Copy(fixture("phi3"));
  const opened = openModel(dir);
  try {
    const provider = opened.provider;
    const st = readSafetensors(join(dir, "model.safetensors"));
    const fusedBytes = readTensorBytes(st, "model.layers.0.self_attn.qkv_proj.weight");
    const fused = new Uint16Array(fusedBytes.buffer.slice(fusedBytes.byteOffset, fusedBytes.byteOffset + fusedBytes.byteLength));
    st.file.close();
    clearF32Pool();
    let row = 0;
    const parts = ["q", "k", "v"].map((p) => provider.readBF16!(`model.layers.0.self_attn.${p}_proj.weight`)!);
    for (const part of parts) {
      assert.deepEqual(part, fused.subarray(row, row + part.length), "a part is its rows of the fused bits");
      row += part.length;
    }
    assert.equal(row, fused.length, "q, k and v cover the fused tensor");
    assert.equal(f32PoolStats().arrays, 1, "the fused tensor's memory went back to the pool after v");
    recycleU16(parts);
    assert.equal(f32PoolStats().arrays, 4, "each part's memory was the pool's too (before, fresh copies: the bf16 engine ran Phi-3-mini slower than fp32)");
    clearF32Pool();
  } finally {
    opened.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

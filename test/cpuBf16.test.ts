// The CPU bf16 engine (native/cpu_bf16.c through src/backend/cpuBf16/): the bf16 GEMM against a
// float64 product of the same bf16-rounded inputs, one decoder layer against the float64
// reference layer, BI and perplexity on stories260K against the numpy oracle's goldens and the
// fp32 engine, and the fallback to fp32 (one line why) where the bf16 engine cannot run.

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import type { LayerShape, LayerWeightsF32 } from "../src/backend/backend.js";
import { createCpuBf16Backend, createCpuBf16Kernels, type CpuBf16Backend, nativeLayerSupports } from "../src/backend/cpuBf16/bf16Kernels.js";
import { bf16ByDefault } from "../src/cli/common.js";
import { type CpuBf16Native, cpuBf16Availability, emptyPacked, setCpuBf16Disabled } from "../src/backend/cpuBf16/native.js";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceKernels } from "../src/backend/referenceBackend.js";
import { selectBackend } from "../src/backend/select.js";
import { readTextData, tokenizeDocuments } from "../src/data/documents.js";
import { perplexityWindows, scoringWindows } from "../src/data/windows.js";
import { openModel } from "../src/load.js";
import { streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { repoRoot } from "../src/shared.js";
import type { DecoderBackend } from "../src/backend/backend.js";
import { MODEL_BIN, TINYSTORIES } from "./helpers.js";
import { writeHfLlamaFixture } from "./fixtures/hfLlama.js";
import { xorshiftFill } from "../src/util/random.js";
import { recycleU16, takeU16 } from "../src/tensor/hostMemory.js";
import { layerShape, loadLayerTensor, loadLayerTensorBf16 } from "../src/models/llama.js";

const available = cpuBf16Availability();
const skip = available.ok ? false : `bf16 engine unavailable here: ${available.reason}`;

const fill = xorshiftFill;

/** Rounds to bf16 (nearest even) in place, as a bf16 checkpoint's weights are. */
function roundBf16(a: Float32Array): Float32Array {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < u.length; i++) u[i] = (((u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16) << 16) >>> 0;
  return a;
}

/** The layer GEMM kernels this build has: the helper's own, and oneDNN's when it was built with it. */
function gemmKernels(native: CpuBf16Native): ("native" | "onednn")[] {
  return native.features().onednnBuilt ? ["native", "onednn"] : ["native"];
}

/** Runs body with each GEMM kernel in turn (packing included), then restores the default one. */
function withEachGemm(native: CpuBf16Native, body: (kernel: "native" | "onednn") => void): void {
  const initial = native.features().gemm === "native" ? "native" : "onednn";
  try {
    for (const kernel of gemmKernels(native)) {
      native.useGemm(kernel);
      body(kernel);
    }
  } finally {
    native.useGemm(initial);
  }
}

test("oneDNN: the helper is built with it wherever its header is installed (CI installs libdnnl-dev) and uses it by default; weights packed for one kernel are refused by the other", { skip }, () => {
  const { native } = available as Extract<typeof available, { ok: true }>;
  // scripts/build-native.mjs looks in both; SHORTGPT_ONEDNN=0 builds without, SHORTGPT_CPU_GEMM=native starts on the own kernel.
  const header = ["/usr/include", "/usr/local/include"].some((dir) => existsSync(join(dir, "oneapi", "dnnl", "dnnl.h"))) && process.env["SHORTGPT_ONEDNN"] !== "0";
  const f = native.features();
  assert.equal(f.onednnBuilt, header, `oneDNN header ${header ? "present" : "absent"}, helper built ${f.onednnBuilt ? "with" : "without"} it`);
  if (!header) {
    assert.throws(() => native.useGemm("onednn"), /no oneDNN/);
    return;
  }
  const initial = process.env["SHORTGPT_CPU_GEMM"] === "native" ? "native" : "onednn";
  assert.match(f.gemm, initial === "native" ? /^native$/ : /^oneDNN \d+\.\d+\.\d+$/);
  try {
    const [m, n, k] = [4, 64, 32];
    const a = fill(m * k, 1, 1);
    const w = fill(n * k, 1, 2);
    assert.equal(native.useGemm("native"), "native");
    assert.equal(native.features().gemm, "native");
    const forNative = native.packWeights([w], k);
    assert.equal(native.useGemm("onednn"), "onednn");
    const forOnednn = native.packWeights([w], k);
    const out = new Float32Array(m * n);
    // n = 64: both layouts' lengths would pass a size check; the layout tag tells them apart.
    assert.throws(() => native.gemm(out, a, forNative, m, n, k, false, 1), /other GEMM kernel/);
    assert.throws(() => native.packRows(forNative, w, 0, k), /other GEMM kernel/);
    native.gemm(out, a, forOnednn, m, n, k, false, 1);
    native.useGemm("native");
    assert.throws(() => native.gemm(out, a, forOnednn, m, n, k, false, 1), /other GEMM kernel/);
    native.gemm(out, a, forNative, m, n, k, false, 1);
  } finally {
    native.useGemm(initial);
  }
});

test("bf16 GEMM (each kernel): out (+)= a @ w^T equals the float64 product of the bf16-rounded inputs to fp32 accumulation error", { skip }, (t) => {
  if (!available.ok) return;
  const { native } = available;
  withEachGemm(native, (kernel) => {
  // Odd sizes: partial row blocks (6), partial column panels (16, 64), odd k, several k blocks (512), two weight parts.
  for (const [m, n, k, accumulate] of [[1, 1, 1, false], [7, 70, 33, true], [13, 130, 1030, false], [50, 300, 517, true], [200, 96, 64, true]] as const) {
    const a = fill(m * k, 1, 3 + m);
    const w = fill(n * k, 1, 5 + n);
    const split = Math.floor(n / 3) * k;
    const packed = native.packWeights([w.subarray(0, split), w.subarray(split)], k);
    const out = fill(m * n, 1, 7);
    const before = out.slice();
    native.gemm(out, a, packed, m, n, k, accumulate, 2);
    const ra = roundBf16(a.slice());
    const rw = roundBf16(w.slice());
    let worst = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = accumulate ? before[i * n + j]! : 0;
        let scale = Math.abs(sum);
        for (let q = 0; q < k; q++) {
          sum += ra[i * k + q]! * rw[j * k + q]!;
          scale += Math.abs(ra[i * k + q]! * rw[j * k + q]!);
        }
        worst = Math.max(worst, Math.abs(out[i * n + j]! - sum) / scale);
      }
    }
    // Products of bf16 values are exact in fp32; only the fp32 sums round: k * 2^-24 of the absolute sum, bounded well below.
    assert.ok(worst < 1e-6, `${kernel}: m=${m} n=${n} k=${k}: worst error ${worst} of the absolute sum`);
  }
  t.diagnostic(`${kernel}: ${JSON.stringify(native.features())}`);
  });
});

const SMALL: LayerShape = { dim: 64, hiddenDim: 172, nHeads: 8, nKvHeads: 4, headDim: 8, normEps: 1e-5, ropeTheta: 10000 };
const WIDE: LayerShape = { dim: 256, hiddenDim: 688, nHeads: 4, nKvHeads: 2, headDim: 64, normEps: 1e-5, ropeTheta: 10000 };

function randomLayer(shape: LayerShape, seed: number): LayerWeightsF32 {
  const { dim: C, hiddenDim: F, nHeads, nKvHeads, headDim } = shape;
  const q = nHeads * headDim;
  const kv = nKvHeads * headDim;
  const s = (fanIn: number): number => Math.sqrt(3 / fanIn);
  return {
    attnNorm: fill(C, 0.1, seed + 1, 1), wq: roundBf16(fill(q * C, s(C), seed + 2)), wk: roundBf16(fill(kv * C, s(C), seed + 3)), wv: roundBf16(fill(kv * C, s(C), seed + 4)),
    wo: roundBf16(fill(C * q, s(q), seed + 5)), ffnNorm: fill(C, 0.1, seed + 6, 1), wGate: roundBf16(fill(F * C, s(C), seed + 7)), wDown: roundBf16(fill(C * F, s(F), seed + 8)), wUp: roundBf16(fill(F * C, s(C), seed + 9)),
  };
}

test("bf16 layer: the change it makes to the stream is within 1% (relative L2 per row) of the float64 reference layer's", { skip }, async (t) => {
  const kernels = await createCpuBf16Kernels({ threads: 2, maxRowsPerRun: 200 });
  const reference = createReferenceKernels();
  try {
    for (const [shape, nWindows, seqLen] of [[SMALL, 3, 37], [WIDE, 2, 130]] as const) {
      const w = randomLayer(shape, 20);
      const x = fill(nWindows * seqLen * shape.dim, 1, 11);
      const want = await reference.runLayer(x, nWindows, seqLen, w, shape);
      const got = await kernels.runLayer(x, nWindows, seqLen, w, shape);
      let worst = 0;
      for (let r = 0; r < nWindows * seqLen; r++) {
        let diff = 0;
        let norm = 0;
        for (let i = r * shape.dim; i < (r + 1) * shape.dim; i++) {
          diff += (got[i]! - want[i]!) ** 2;
          norm += (want[i]! - x[i]!) ** 2;
        }
        worst = Math.max(worst, Math.sqrt(diff / norm));
      }
      t.diagnostic(`C=${shape.dim} d=${shape.headDim}: worst row |bf16 - ref| / |ref delta| = ${worst.toExponential(2)}`);
      // bf16 keeps 8 significant bits (relative rounding 2^-9 = 2e-3 per GEMM input); measured 6e-3..7.5e-3.
      assert.ok(worst > 0 && worst < 1e-2, `worst relative error ${worst}`);
    }
    {
      // Packed windows (tree attention): a prefix of 10 tokens, then branches of 12 and 15 that see it but not each other.
      const positions = new Int32Array(2 * 37);
      const branches = new Int32Array(2 * 37);
      for (let t = 0; t < 37; t++) {
        const branch = t < 10 ? 0 : t < 22 ? 1 : 2;
        for (const w of [0, 1]) {
          branches[w * 37 + t] = branch;
          positions[w * 37 + t] = branch === 2 ? t - 12 : t;
        }
    }
    const w = randomLayer(SMALL, 40);
    const x = fill(2 * 37 * SMALL.dim, 1, 13);
    const want = await reference.runLayer(x, 2, 37, w, SMALL, { positions, branches });
    const got = await kernels.runLayer(x, 2, 37, w, SMALL, { positions, branches });
    const plain = await reference.runLayer(x, 2, 37, w, SMALL);
    let worst = 0;
    let layoutEffect = 0;
    for (let r = 22; r < 37; r++) {
      let diff = 0;
      let norm = 0;
      let effect = 0;
      for (let i = r * SMALL.dim; i < (r + 1) * SMALL.dim; i++) {
        diff += (got[i]! - want[i]!) ** 2;
        norm += (want[i]! - x[i]!) ** 2;
        effect += (plain[i]! - want[i]!) ** 2;
      }
      worst = Math.max(worst, Math.sqrt(diff / norm));
      layoutEffect = Math.max(layoutEffect, Math.sqrt(effect / norm));
    }
    t.diagnostic(`packed windows: worst row error ${worst.toExponential(2)} (the layout itself changes rows by up to ${layoutEffect.toExponential(2)})`);
    assert.ok(worst < 1e-2 && layoutEffect > 10 * worst, `packed: ${worst}, layout effect ${layoutEffect}`);
    }
    assert.equal(kernels.stats.bf16Layers, 3);
    assert.equal(kernels.stats.fallbackLayers, 0);
    // A shape the native layer does not compute (Qwen2 biases) runs on the fp32 kernels.
    const biased: LayerShape = { ...SMALL, qkvBias: true };
    const w = { ...randomLayer(SMALL, 30), bq: fill(64, 0.1, 1), bk: fill(32, 0.1, 2), bv: fill(32, 0.1, 3) };
    const x = fill(37 * 64, 1, 12);
    const want = await reference.runLayer(x, 1, 37, w, biased);
    const got = await kernels.runLayer(x, 1, 37, w, biased);
    assert.equal(kernels.stats.fallbackLayers, 1);
    for (let i = 0; i < x.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-4, `fp32 fallback element ${i}`);
  } finally {
    await kernels.dispose();
  }
});

interface Golden {
  documents: { count: number };
  bi: { window: number; stride: number; max_tokens: number | null; skip: number[]; bi: number[]; tokens: number }[];
  perplexity: { window: number; stride: number; skip: number[]; nll: number; tokens: number }[];
}

const backends: DecoderBackend[] = [];
after(async () => {
  for (const b of backends) await b.dispose();
});

test("stories260K in bf16 (each GEMM kernel): BI ranking equal to the oracle's and the fp32 engine's, BI within 2e-3 relative (measured 9e-4), perplexity within 1e-3 relative (measured 7e-4)", { skip }, async (t) => {
  const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", "stories260K.json"), "utf8")) as Golden;
  const source = openModel(MODEL_BIN);
  const { native } = available as Extract<typeof available, { ok: true }>;
  const initial = native.features().gemm === "native" ? "native" : "onednn";
  try {
    const documents = tokenizeDocuments(source.tokenizer, readTextData(TINYSTORIES, "blank-line").documents.slice(0, golden.documents.count));
    const fp32 = await createOrtBackend({ threads: 2, flavor: "node" });
    backends.push(fp32);
    const rank = (bi: number[]): number[] => bi.map((v, i) => [v, i] as const).sort((a, b) => a[0] - b[0]).map(([, i]) => i);
    for (const kernel of gemmKernels(native)) {
      native.useGemm(kernel);
      const bf16: CpuBf16Backend = await createCpuBf16Backend({ threads: 2 });
      backends.push(bf16);
      let worstBi = 0;
      // Half of the oracle's cases (windows 128 and 512, a skipped layer) keep the file fast.
      for (const c of golden.bi.filter((_, i) => i === 0 || i === 3)) {
        const windows = scoringWindows(documents, { seqLen: c.window, stride: c.stride, ...(c.max_tokens === null ? {} : { maxTokens: c.max_tokens }) });
        const ours = await streamingBlockInfluence(source, windows, { backend: bf16, skip: new Set(c.skip) });
        const theirs = await streamingBlockInfluence(source, windows, { backend: fp32, skip: new Set(c.skip) });
        const bi = ours.layers.map((l) => l.bi);
        assert.deepEqual(ours.ranking, theirs.ranking, `${kernel}, window ${c.window}: bf16 ranking vs fp32 engine`);
        assert.deepEqual(rank(bi), rank(c.bi), `${kernel}, window ${c.window}: bf16 ranking vs oracle`);
        for (let i = 0; i < bi.length; i++) worstBi = Math.max(worstBi, Math.abs(bi[i]! - c.bi[i]!) / c.bi[i]!);
      }
      let worstNll = 0;
      for (const c of golden.perplexity.filter((_, i) => i % 2 === 0)) {
        const result = await streamingPerplexity(source, perplexityWindows(documents, { seqLen: c.window, stride: c.stride }), { backend: bf16, skip: new Set(c.skip) });
        assert.equal(result.tokens, c.tokens);
        worstNll = Math.max(worstNll, Math.abs(result.nll - c.nll) / c.nll);
      }
      t.diagnostic(`${kernel} bf16 vs oracle: max relative error BI ${worstBi.toExponential(2)}, nll ${worstNll.toExponential(2)}; ${bf16.stats.bf16Layers} bf16 layer calls`);
      assert.ok(bf16.stats.bf16Layers > 10 && bf16.stats.fallbackLayers === 0, JSON.stringify(bf16.stats));
      assert.ok(worstBi > 0 && worstBi < 2e-3, `${kernel}: BI relative error ${worstBi}`);
      assert.ok(worstNll < 1e-3, `${kernel}: nll relative error ${worstNll}`);
    }
  } finally {
    native.useGemm(initial);
    source.close();
  }
});

test("bf16 packing: bf16 bits pack to the bytes their float32 expansion does, and packRows one part at a time equals packWeights, at ragged sizes", { skip }, () => {
  const { native } = available as Extract<typeof available, { ok: true }>;
  withEachGemm(native, (kernel) => {
  for (const [rows, k] of [[[16], 16], [[17, 5], 33], [[100, 3, 29], 47], [[48, 16], 4096 / 8], [[7], 1]] as const) {
    const f32 = rows.map((r, i) => roundBf16(fill(r * k, 1, 11 + i)));
    const bits = f32.map((a) => new Uint16Array(Uint32Array.from(new Uint32Array(a.buffer), (u) => u >>> 16)));
    for (const threads of [1, 3]) {
      const want = native.packWeights(f32, k, threads);
      assert.deepEqual(native.packWeights(bits, k, threads), want, `rows ${rows.join("+")}, k ${k}: bf16 parts`);
      const oneByOne = emptyPacked(native, rows.reduce((a, b) => a + b, 0), k);
      let row0 = 0;
      rows.forEach((r, i) => {
        native.packRows(oneByOne, i % 2 === 0 ? bits[i]! : f32[i]!, row0, k, threads);
        row0 += r;
      });
      assert.deepEqual(oneByOne, want, `${kernel}: rows ${rows.join("+")}, k ${k}: packRows`);
    }
  }
  // 16 rows (padded to 64 for the native kernel): 65 do not fit either way.
  assert.throws(() => native.packRows(emptyPacked(native, 16, 8), new Float32Array(65 * 8), 0, 8), /too small/, kernel);
  });
});

test("bf16 checkpoint: layers packed tensor by tensor from the stored bf16 bits give the same BI, bit for bit, as packing the float32 layer", { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "shortgpt-bf16-direct-"));
  try {
    writeHfLlamaFixture(dir, { dtype: "BF16" });
    const source = openModel(dir);
    try {
      const windows = Array.from({ length: 3 }, (_, w) => ({ document: w, begin: 0, tokens: Array.from({ length: 40 }, (_, i) => (i * 7 + w * 13 + 1) % 512) }));
      const direct = await createCpuBf16Backend({ threads: 2 });
      const whole = await createCpuBf16Backend({ threads: 2 });
      backends.push(direct, whole);
      // The same backend without the per-tensor source: prepareLayer gets only load() (float32).
      const wholeOnly: DecoderBackend = { ...whole, prepareLayer: (key, load, shape) => whole.prepareLayer(key, load, shape) };
      const a = await streamingBlockInfluence(source, windows, { backend: direct });
      const b = await streamingBlockInfluence(source, windows, { backend: wholeOnly });
      t.diagnostic(`direct: ${JSON.stringify(direct.stats)}; whole: ${JSON.stringify(whole.stats)}`);
      assert.equal(direct.stats.bf16Tensors, 7 * source.config.nLayers, "every GEMM weight came as bf16 bits");
      assert.equal(whole.stats.bf16Tensors, 0);
      assert.ok(direct.stats.bf16Layers === source.config.nLayers && whole.stats.bf16Layers === source.config.nLayers);
      assert.deepEqual(a.layers.map((l) => l.bi), b.layers.map((l) => l.bi));
      assert.ok(a.layers.every((l) => l.bi > 0));
      // The streamed path packs into the pool's arrays and lists them for the loop to hand back;
      // the stored bits are read into pooled memory too, and given back once packed.
      const bits = source.provider.readBF16!(source.names.layer(0).wq!)!;
      recycleU16([bits]);
      assert.equal(takeU16(bits.length).buffer, bits.buffer, "readBF16's bits come from the pool and go back to it");
      const prepared = await direct.prepareLayer("probe", () => { throw new Error("not read whole"); }, layerShape(source.config, 0), {
        f32: (key) => loadLayerTensor(source.provider, source.config, source.names, 0, key),
        bf16: (key) => loadLayerTensorBf16(source.provider, source.config, source.names, 0, key),
      });
      assert.equal(prepared.recyclable?.length, 4, "qkv, o, gate/up and down packed in pooled arrays");
    } finally {
      source.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the native bf16 layer takes Llama attention layers (and Gemma 2/3's and Phi-3's: cpuBf16Families.test.ts); bf16 is the CLI default only for all-bf16 models it computes whole", () => {
  const llama: LayerShape = { dim: 64, hiddenDim: 160, nHeads: 8, nKvHeads: 4, headDim: 8, normEps: 1e-5, ropeTheta: 10000 };
  assert.equal(nativeLayerSupports(llama), true);
  for (const other of [{ kind: "mamba" }, { kind: "rwkv6" }, { qkvBias: true }, { layerNorm: true }, { plainMlp: true }, { activation: "gelu_tanh_f16" }] as Partial<LayerShape>[]) {
    assert.equal(nativeLayerSupports({ ...llama, ...other }), false, JSON.stringify(other));
  }
  const dir = mkdtempSync(join(tmpdir(), "shortgpt-bf16-default-"));
  try {
    writeHfLlamaFixture(dir, { dtype: "BF16" });
    const bf16 = openModel(dir);
    assert.equal(bf16ByDefault(bf16), true);
    assert.equal(bf16ByDefault({ dtypes: { BF16: 10, F32: 2 }, config: bf16.config }), false, "a model not stored all in bf16");
    bf16.close();
    const mamba = openModel(join(repoRoot(), "test", "fixtures", "mamba2_tiny"));
    assert.equal(bf16ByDefault({ dtypes: { BF16: 1 }, config: mamba.config }), false, "a recurrent model stays fp32");
    mamba.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("--precision bf16 where the bf16 engine cannot run: onnxruntime's fp32 engine, and one line saying why", async () => {
  setCpuBf16Disabled("this CPU has no AVX512_BF16 instructions");
  try {
    const { backend, notes } = await selectBackend("onnx", { threads: 1, precision: "bf16" });
    backends.push(backend);
    assert.equal(backend.name, "onnxruntime-node");
    assert.deepEqual(notes, ["--precision bf16 on the CPU: this CPU has no AVX512_BF16 instructions; computing in fp32"]);
  } finally {
    setCpuBf16Disabled(undefined);
  }
  const fp32 = await selectBackend("onnx", { threads: 1, precision: "fp32" });
  backends.push(fp32.backend);
  assert.equal(fp32.backend.name, "onnxruntime-node");
  assert.deepEqual(fp32.notes, []);
  if (available.ok) {
    const bf16 = await selectBackend("onnx", { threads: 1, precision: "bf16" });
    backends.push(bf16.backend);
    assert.equal(bf16.backend.name, "cpu-bf16");
    assert.deepEqual(bf16.notes, []);
  }
});

// Gemma 2, Gemma 3 (text) and Phi-3 against transformers: tiny random checkpoints written by
// transformers' save_pretrained (test/fixtures/hf-attn, made by test/oracle/hf_attention_families_oracle.py)
// and the golden logits, per-layer residual streams (forward hooks), greedy continuations and
// logits with layers deleted that the same script recorded.

import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import type { DecoderBackend } from "../src/backend/backend.js";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend, createReferenceKernels } from "../src/backend/referenceBackend.js";
import { assertShapeFeatures } from "../src/backend/shapeFeatures.js";
import { convertModel } from "../src/convert/convertModel.js";
import { UnsupportedError } from "../src/errors.js";
import { floatSpelledKeys, stringifyKeepingFloats } from "../src/formats/jsonFloats.js";
import { generate } from "../src/eval/generate.js";
import { inspectCommand } from "../src/cli/commands/inspect.js";
import { loadModel, openModel } from "../src/load.js";
import { parseHfLlamaConfig, resolveHfLlamaConfig } from "../src/models/hfLlamaConfig.js";
import { layerShape, loadHeadWeights, loadLlamaLayer } from "../src/models/llama.js";
import { streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { patchHfConfig, removeHfLayers } from "../src/prune/removeLayersHf.js";
import { repoRoot } from "../src/shared.js";
import { decodeGoldenFloats, goldenBlockInfluence, goldenNll, scaledError, tempDir } from "./helpers.js";

interface GoldenCase {
  name: string;
  config: Record<string, unknown>;
  logits: number[];
  residual: number[][];
  greedy: number[];
  deleted: { removed: number[]; logits: number[] }[];
}
interface Golden {
  ids: number[];
  prompt: number[];
  cases: GoldenCase[];
  pruned: { name: string; removed: number[]; config: Record<string, unknown>; max_abs_diff: number }[];
}

const golden = JSON.parse(readFileSync(join(repoRoot(), "test/oracle/golden/hf_attention_families.json"), "utf8"), decodeGoldenFloats) as Golden;
const fixture = (name: string): string => join(repoRoot(), "test/fixtures/hf-attn", name);
const TOLERANCE = 1e-4;

for (const c of golden.cases) {
  test(`${c.name}: logits, residual stream and greedy generation match transformers`, () => {
    const { model } = loadModel(fixture(c.name));
    const residual: number[][] = [];
    const { logits } = model.forward(golden.ids, {
      hooks: { onLayer: (layer, input, output) => { if (layer === 0) residual.push(Array.from(input)); residual.push(Array.from(output)); } },
    });
    const err = scaledError(logits, c.logits);
    assert.ok(err < TOLERANCE, `${c.name}: logits differ from transformers by ${err} of their scale`);
    assert.equal(residual.length, c.residual.length);
    residual.forEach((r, i) => {
      const e = scaledError(r, c.residual[i]!);
      assert.ok(e < TOLERANCE, `${c.name}: residual stream ${i} differs by ${e} of its scale`);
    });
    const tokens = generate(model, golden.prompt, { maxTokens: 20, temperature: 0, seed: 0 });
    assert.deepEqual(tokens, c.greedy);
  });

  test(`${c.name}: logits with layers deleted match transformers, in memory and after removeHfLayers`, () => {
    const { model } = loadModel(fixture(c.name));
    for (const d of c.deleted) {
      const skipped = model.forward(golden.ids, { skip: new Set(d.removed) }).logits;
      assert.ok(scaledError(skipped, d.logits) < TOLERANCE, `${c.name} without ${d.removed}: skipped layers`);
      const out = join(tempDir(), "pruned");
      removeHfLayers(fixture(c.name), out, d.removed);
      const pruned = loadModel(out).model;
      assert.equal(pruned.config.nLayers, 4 - d.removed.length);
      const err = scaledError(pruned.forward(golden.ids).logits, d.logits);
      assert.ok(err < TOLERANCE, `${c.name} pruned of ${d.removed}: logits differ by ${err}`);
      const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
      const types = c.config["layer_types"] as string[] | undefined;
      if (types) assert.deepEqual(config["layer_types"], types.filter((_, i) => !d.removed.includes(i)));
    }
  });

  for (const backendName of ["reference", "onnx", "wasm"] as const) {
    test(`${c.name}: Block Influence and perplexity on the ${backendName} backend match transformers' hooks and logits`, async () => {
      const ort = backendName === "reference" ? undefined : await createOrtBackend({ threads: 1, flavor: backendName === "onnx" ? "node" : "web" });
      const backend: DecoderBackend = ort ?? createReferenceBackend();
      const opened = openModel(fixture(c.name));
      try {
        const window = { document: 0, begin: 0, tokens: golden.ids };
        const bi = await streamingBlockInfluence(opened, [window], { backend });
        const want = goldenBlockInfluence(c.residual, opened.config.dim);
        bi.layers.forEach((l, i) => assert.ok(Math.abs(l.bi - want[i]!) < 1e-5, `${c.name} layer ${i}: BI ${l.bi} vs ${want[i]}`));
        const ppl = await streamingPerplexity(opened, [{ ...window, firstTarget: 1 }], { backend });
        const nll = goldenNll(c.logits, golden.ids, opened.config.vocabSize);
        assert.ok(Math.abs(ppl.nll - nll) < 1e-4 * Math.max(1, nll), `${c.name}: NLL ${ppl.nll} vs transformers ${nll}`);
        // The fast path ran: every layer and the head as onnxruntime sessions (4 layers x 2 passes + the head).
        if (ort) assert.ok(ort.stats.sessionRuns >= 9, `onnxruntime ran ${ort.stats.sessionRuns} sessions`);
      } finally {
        opened.close();
        await backend.dispose();
      }
    });
  }
}

test("the pruned checkpoints loaded in transformers without missing keys and gave the deleted-layer logits", () => {
  // Recorded by the oracle on directories removeHfLayers wrote (make_attention_golden.sh).
  assert.deepEqual(golden.pruned.map((p) => p.name).sort(), ["gemma2", "gemma3", "phi3"]);
  for (const p of golden.pruned) assert.ok(p.max_abs_diff < 1e-4, `${p.name}: ${p.max_abs_diff}`);
});

test("a Gemma 2 config without layer_types keeps each kept layer's attention type when pruned", () => {
  // transformers derives the alternation from the layer index: removing layer 0 would shift it.
  const config = { model_type: "gemma2", num_hidden_layers: 4, sliding_window: 5 };
  const { config: out } = patchHfConfig(config, 4, new Map([[1, 0], [2, 1], [3, 2]]));
  assert.deepEqual(out["layer_types"], ["full_attention", "sliding_attention", "full_attention"]);
  const gemma3 = { model_type: "gemma3_text", num_hidden_layers: 7, sliding_window_pattern: 3 };
  const { config: out3 } = patchHfConfig(gemma3, 7, new Map([[0, 0], [2, 1], [3, 2], [4, 3], [5, 4], [6, 5]]));
  // Every third layer global (2, 5); layer 1 removed.
  assert.deepEqual(out3["layer_types"], ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]);
  // Floats keep their spelling in a rewritten config.json (transformers 5 refuses 3 for a float field).
  assert.equal(stringifyKeepingFloats({ final_logit_softcapping: 3, short_factor: [1, 1.5], n: 4 }, floatSpelledKeys('{"final_logit_softcapping": 3.0, "short_factor": [1.0, 1.5], "n": 4}'), 0),
    '{"final_logit_softcapping":3.0,"short_factor":[1.0,1.5],"n":4}');
});

test("the layer shapes carry each layer's own window and RoPE; a backend without the features refuses them", () => {
  const gemma3 = openModel(fixture("gemma3"));
  try {
    const [local, global] = [layerShape(gemma3.config, 0), layerShape(gemma3.config, 1)];
    assert.equal(local.slidingWindow, 5);
    assert.equal(local.ropeTheta, 10000);
    assert.equal(local.ropeFreqFactors, undefined);
    assert.equal(global.slidingWindow, undefined);
    assert.equal(global.ropeTheta, 1e6);
    assert.deepEqual(global.ropeFreqFactors, [2, 2, 2, 2]);
    assert.throws(() => assertShapeFeatures("cuda:0", local, new Set()), (e: unknown) => e instanceof UnsupportedError && /cuda:0 backend does not compute postNorms, attnScale, slidingWindow/.test(e.message));
    assert.doesNotThrow(() => assertShapeFeatures("cuda:0", local, new Set(["postNorms", "attnScale", "slidingWindow"])));
    assert.throws(() => assertShapeFeatures("cuda:0", layerShape(gemma3.config), new Set(["postNorms", "attnScale"]), { logitSoftcap: 30 }), /does not compute logitSoftcap/);
  } finally {
    gemma3.close();
  }
  const phi3 = openModel(fixture("phi3"));
  try {
    // LongRoPE: short factors within the original 32 positions, which cap the windows.
    assert.equal(phi3.config.contextLength, 32);
    assert.deepEqual(layerShape(phi3.config, 0).ropeFreqFactors, [1.0, 1.3, 2.1, 3.7]);
    assert.ok(Math.abs(phi3.config.ropeAttentionFactor! - Math.sqrt(1 + Math.log(4) / Math.log(32))) < 1e-12);
  } finally {
    phi3.close();
  }
});

test("convert refuses Gemma 2/3 and Phi-3 as safetensors rather than writing them as another family, and these Gemmas as GGUF (llama.cpp would run them differently)", () => {
  for (const name of ["gemma2", "gemma3", "phi3"]) {
    const out = join(tempDir(), name);
    assert.throws(() => convertModel(fixture(name), out, { to: "safetensors" }), (e: unknown) => e instanceof UnsupportedError && /converting (gemma2|gemma3_text|phi3) checkpoints to safetensors is not supported yet/.test(e.message));
    assert.equal(existsSync(out), false);
  }
  // GGUF: test/ggufFamilies.test.ts converts the fixtures llama.cpp can hold.
  for (const name of ["gemma2", "gemma3"]) {
    const out = join(tempDir(), `${name}.gguf`);
    assert.throws(() => convertModel(fixture(name), out, { to: "gguf" }), (e: unknown) => e instanceof UnsupportedError && /llama\.cpp's gemma[23] architecture would compute a different model/.test(e.message));
    assert.equal(existsSync(out), false);
  }
});

test("packed windows (shared prefix, branches): onnxruntime's Gemma 2 / Phi-3 layers and soft-capped head agree with the reference", async () => {
  const ort = await createOrtBackend({ threads: 1, flavor: "node" });
  const reference = createReferenceKernels();
  try {
    for (const name of ["gemma2", "gemma3", "phi3"]) {
      const opened = openModel(fixture(name));
      try {
        // Two windows of 12: a prefix of 5 then two branches (positions restart after the prefix per branch).
        const seqLen = 12;
        const branch = [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2];
        const position = [0, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 7];
        const layout = { positions: Int32Array.from([...position, ...position]), branches: Int32Array.from([...branch, ...branch]) };
        const { dim } = opened.config;
        const x = new Float32Array(2 * seqLen * dim);
        const table = opened.provider.readF32(opened.names.embedding);
        golden.ids.slice(0, 2 * seqLen).forEach((id, r) => x.set(table.subarray(id * dim, (id + 1) * dim), r * dim));
        for (let layer = 0; layer < opened.config.nLayers; layer++) {
          const shape = layerShape(opened.config, layer);
          const weights = loadLlamaLayer(opened.provider, opened.config, opened.names, layer);
          for (const l of [layout, undefined]) {
            const want = await reference.runLayer(x, 2, seqLen, weights, shape, l);
            const got = await ort.kernels.runLayer(x, 2, seqLen, weights, shape, l);
            assert.ok(scaledError(got, want) < 1e-5, `${name} layer ${layer}${l ? " packed" : ""}: ${scaledError(got, want)}`);
          }
        }
        const head = loadHeadWeights(opened.provider, opened.config, opened.names);
        const rows = 2 * seqLen;
        const want = await reference.runHead(x, rows, head, opened.config.vocabSize, opened.config.normEps);
        const got = await ort.kernels.runHead(x, rows, head, opened.config.vocabSize, opened.config.normEps);
        assert.ok(want.kind === "logits" && got.kind === "logits" && scaledError(got.logits, want.logits) < 1e-5, `${name} head`);
      } finally {
        opened.close();
      }
    }
  } finally {
    await ort.dispose();
  }
});

test("config.json as the Hub spells it: transformers' defaults for Gemma 2, Gemma 3 before layer_types, Phi-3 windows and su scaling", () => {
  const resolve = (json: Record<string, unknown>) => resolveHfLlamaConfig(parseHfLlamaConfig(json, "x/config.json"), "x/config.json");
  const gemma2 = resolve({ model_type: "gemma2", num_hidden_layers: 4, vocab_size: 100, hidden_size: 64, head_dim: 256, query_pre_attn_scalar: 256 });
  // Gemma2Config: soft-caps 50 and 30, window 4096 on even layers, scale 1/sqrt(256) = 1/sqrt(head_dim).
  assert.deepEqual([gemma2.attnSoftcap, gemma2.logitSoftcap, gemma2.slidingWindow, gemma2.attnScale], [50, 30, 4096, undefined]);
  assert.deepEqual(gemma2.layerTypes, ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]);
  // Gemma 3 as first published: rope_theta (global) 1e6 with linear scaling 8, rope_local_base_freq, every 6th layer global.
  const gemma3 = resolve({
    model_type: "gemma3_text", num_hidden_layers: 7, hidden_size: 64, head_dim: 8, vocab_size: 100, sliding_window: 512, sliding_window_pattern: 6,
    rope_theta: 1e6, rope_local_base_freq: 1e4, rope_scaling: { rope_type: "linear", factor: 8 }, query_pre_attn_scalar: 8,
  });
  assert.deepEqual(gemma3.layerTypes!.map((t) => t[0]), ["s", "s", "s", "s", "s", "f", "s"]);
  assert.deepEqual([layerShape(gemma3, 5).ropeTheta, layerShape(gemma3, 5).ropeFreqFactors, layerShape(gemma3, 5).slidingWindow], [1e6, [8, 8, 8, 8], undefined]);
  assert.deepEqual([layerShape(gemma3, 0).ropeTheta, layerShape(gemma3, 0).ropeFreqFactors, layerShape(gemma3, 0).slidingWindow], [1e4, undefined, 512]);
  assert.equal(gemma3.qkNorm, true);
  assert.equal(gemma3.attnSoftcap, undefined);
  // Phi-3-mini-4k: a 2047-token window caps the context (exact below it); Phi-3-mini-128k: su/longrope with the original 4096.
  assert.equal(resolve({ model_type: "phi3", num_hidden_layers: 2, sliding_window: 2047 }).contextLength, 2047);
  const factors = Array.from({ length: 48 }, (_, i) => 1 + i / 10);
  const longrope = resolve({ model_type: "phi3", num_hidden_layers: 2, max_position_embeddings: 131072, original_max_position_embeddings: 4096, rope_scaling: { type: "su", short_factor: factors, long_factor: factors } });
  assert.equal(longrope.contextLength, 4096);
  assert.ok(Math.abs(longrope.ropeAttentionFactor! - Math.sqrt(1 + Math.log(32) / Math.log(4096))) < 1e-12);
  assert.throws(() => resolve({ model_type: "phi3", num_hidden_layers: 2, partial_rotary_factor: 0.75 }), /partial rotary/);
  assert.throws(() => resolve({ model_type: "gemma3_text", num_hidden_layers: 2, use_bidirectional_attention: true }), (e: unknown) => e instanceof UnsupportedError && /use_bidirectional_attention/.test(e.message));
  assert.throws(() => resolve({ model_type: "phi3", num_hidden_layers: 2, rope_scaling: { type: "longrope", short_factor: [1, 2], long_factor: [1, 2] } }), /short_factor is \[1,2\], expected 48 positive numbers/);
});

test("the engine refuses a Gemma 2 model on a backend that does not declare the features", async () => {
  const { shapeFeatures: _all, ...rest } = createReferenceBackend();
  const backend: DecoderBackend = { ...rest, name: "cuda:0" };
  const opened = openModel(fixture("gemma2"));
  try {
    await assert.rejects(streamingBlockInfluence(opened, [{ document: 0, begin: 0, tokens: golden.ids }], { backend }),
      (e: unknown) => e instanceof UnsupportedError && /the cuda:0 backend does not compute postNorms, attnScale, attnSoftcap, slidingWindow, logitSoftcap/.test(e.message));
  } finally {
    opened.close();
  }
});

test("inspect shows the local and global layers, window, score scale and soft-caps", async () => {
  const { json, text } = await inspectCommand.run([fixture("gemma2")]) as { json: Record<string, unknown>; text: string };
  assert.deepEqual([json["layerTypes"], json["slidingWindow"], json["attnSoftcap"], json["logitSoftcap"]], [c0Types(), 5, 2, 3]);
  assert.match(text, /local layers +0, 2 \(window 5\)/);
  assert.match(text, /soft-caps +scores 2, logits 3/);
});

function c0Types(): unknown {
  return golden.cases.find((c) => c.name === "gemma2")!.config["layer_types"];
}

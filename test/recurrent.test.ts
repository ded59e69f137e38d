// The recurrent families through the shared engine, Mamba (transformers' MambaForCausalLM) and
// RWKV-4 (RwkvForCausalLM): tiny random-weight checkpoints saved by transformers' own
// save_pretrained (test/fixtures/{mamba,rwkv4}_tiny) against the goldens that
// test/oracle/hf_mamba_oracle.py wrote with transformers' CPU path: logits, the residual stream
// around every block (forward hooks; RWKV's stream into block 0 is after pre_ln), Block Influence
// on every CPU backend, pruned directories, and a 20-token greedy continuation (transformers'
// generate, which carries the recurrent state).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { assertAttentionLayer, type DecoderBackend } from "../src/backend/backend.js";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { scoringWindows } from "../src/data/windows.js";
import { UnsupportedError } from "../src/errors.js";
import { generate } from "../src/eval/generate.js";
import { loadModel, openModel } from "../src/load.js";
import { layerShape, streamingBlockInfluence, streamingPerplexity } from "../src/models/streaming.js";
import { perplexity } from "../src/eval/perplexity.js";
import { perplexityWindows } from "../src/data/windows.js";
import { removeHfLayers } from "../src/prune/removeLayersHf.js";
import { repoRoot } from "../src/shared.js";
import { scoreRequests } from "../src/eval/loglikelihood.js";
import { logProb } from "../src/models/llama.js";
import type { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { decodeOracleFloats, scaledError, tempDir } from "./helpers.js";

interface RecurrentGolden {
  ids: number[];
  prompt: number[];
  greedy: number[];
  logits: number[];
  residual: number[][];
  block_influence: number[];
  /** By removed block: transformers' logits with that block deleted (RWKV: its pre_ln kept on the new first block). */
  pruned_logits: Record<string, number[]>;
}

/** One token per character (code mod 64): enough to turn task text into ids for the tiny vocabulary. */
const charTokenizer: Tokenizer = {
  vocabSize: 512, bosId: 1, eosId: 2, addsBos: true, description: "test: one token per character",
  encode: (text, options) => [...((options?.bos ?? true) ? [1] : []), ...Array.from(text, (c) => 3 + (c.charCodeAt(0) % 61))],
  decode: () => "",
  decodeToken: () => new Uint8Array(0),
};

for (const family of ["mamba", "rwkv4"] as const) {
  const name = `${family}_tiny`;
  const fixture = join(repoRoot(), "test", "fixtures", name);
  const golden = JSON.parse(readFileSync(join(repoRoot(), "test", "oracle", "golden", `${name}.json`), "utf8"), decodeOracleFloats) as RecurrentGolden;

  test(`${family}: logits and every block's residual stream match transformers (slow path)`, () => {
    const { model, architecture } = loadModel(fixture);
    assert.equal(architecture, family === "rwkv4" ? "rwkv" : "mamba");
    const streams: number[][] = [];
    const { logits } = model.forward(golden.ids, {
      hooks: { onLayer: (layer, input, output) => { if (layer === 0) streams.push(Array.from(input)); streams.push(Array.from(output)); } },
    });
    assert.ok(scaledError(logits, golden.logits) < 1e-5, `logits off by ${scaledError(logits, golden.logits)} of their scale`);
    assert.equal(streams.length, golden.residual.length);
    streams.forEach((s, i) => assert.ok(scaledError(s, golden.residual[i]!) < 1e-5, `residual stream ${i} off by ${scaledError(s, golden.residual[i]!)}`));
  });

  test(`${family}: greedy generation carries the recurrent state and matches transformers' generate for 20 tokens`, () => {
    const { model } = loadModel(fixture);
    assert.deepEqual(generate(model, golden.prompt, { maxTokens: 20, temperature: 0, seed: 0 }), golden.greedy);
  });

  test(`${family}: Block Influence streams through every CPU backend and matches the hooked transformers blocks`, async () => {
    const opened = openModel(fixture);
    const backends: DecoderBackend[] = [createReferenceBackend(), await createOrtBackend({ threads: 1, flavor: "node" })];
    try {
      for (const backend of backends) {
        // Two copies of the window in one batch: each must start from a zero state.
        const window = scoringWindows([golden.ids], { seqLen: golden.ids.length, stride: golden.ids.length })[0]!;
        const result = await streamingBlockInfluence(opened, [window, { ...window, document: 1 }], { backend });
        result.layers.forEach((l, i) => assert.ok(Math.abs(l.bi - golden.block_influence[i]!) < 1e-6, `${backend.name} layer ${i}: BI ${l.bi}, transformers ${golden.block_influence[i]}`));
      }
    } finally {
      for (const b of backends) await b.dispose();
      opened.close();
    }
  });

  test(`${family}: streaming perplexity on the onnx backend equals the in-memory model's`, async () => {
    const opened = openModel(fixture);
    const backend = await createOrtBackend({ threads: 1, flavor: "node" });
    try {
      const doc = [...golden.ids, ...golden.ids.slice(1).reverse()];
      const windows = perplexityWindows([doc], { seqLen: 12, stride: 6 });
      const streamed = await streamingPerplexity(opened, windows, { backend });
      const inMemory = perplexity(loadModel(fixture).model, windows);
      assert.ok(Math.abs(streamed.perplexity - inMemory.perplexity) < 1e-4 * inMemory.perplexity, `${streamed.perplexity} vs ${inMemory.perplexity}`);
    } finally {
      await backend.dispose();
      opened.close();
    }
  });

  test(`${family}: a pruned directory has the block renumbered away and gives transformers' logits with that block deleted`, () => {
    const out = join(tempDir(), "pruned");
    const result = removeHfLayers(fixture, out, [1]);
    assert.equal(result.layersAfter, 2);
    const config = JSON.parse(readFileSync(join(out, "config.json"), "utf8")) as Record<string, unknown>;
    assert.equal(config["num_hidden_layers"], 2);
    // transformers 5 refuses an integer for a float field: 1.0 must stay 1.0 (test/oracle/check_pruned_hf.py loads such a directory).
    if (family === "mamba") assert.match(readFileSync(join(out, "config.json"), "utf8"), /"time_step_scale": 1\.0,/);
    const { model } = loadModel(out);
    const { logits } = model.forward(golden.ids);
    const want = golden.pruned_logits["1"]!;
    assert.ok(scaledError(logits, want) < 1e-5, `pruned logits off by ${scaledError(logits, want)}`);
  });

  test(`${family}: removing block 0 gives transformers' logits with it deleted (RWKV: its pre_ln moves to the new first block)`, () => {
    const out = join(tempDir(), "pruned0");
    removeHfLayers(fixture, out, [0]);
    const { model } = loadModel(out);
    const want = golden.pruned_logits["0"]!;
    assert.ok(scaledError(model.forward(golden.ids).logits, want) < 1e-5, `pruned logits off by ${scaledError(model.forward(golden.ids).logits, want)}`);
  });

  test(`${family}: a backend without recurrent kernels refuses the layer kind with a typed error`, async () => {
    const shape = layerShape(openModel(fixture).config);
    assert.equal(shape.kind, family);
    assert.throws(() => assertAttentionLayer(shape, "cuda"), (err: unknown) => err instanceof UnsupportedError && err.message.includes(family));
    // The engine refuses up front on a backend that does not say it computes recurrent layers.
    const attentionOnly: DecoderBackend = { ...createReferenceBackend(), name: "attention-only", computesRecurrentLayers: false };
    const opened = openModel(fixture);
    await assert.rejects(streamingBlockInfluence(opened, scoringWindows([golden.ids], { seqLen: 8, stride: 8 }), { backend: attentionOnly }), (err: unknown) => err instanceof UnsupportedError && err.message.includes("attention-only"));
    opened.close();
  });

  test(`${family}: multiple-choice requests sharing a context score one sequence per window and equal the in-memory model's`, async () => {
    const opened = openModel(fixture);
    const backend = await createOrtBackend({ threads: 1, flavor: "node" });
    try {
      const requests = [" a", " bc", " def"].map((continuation) => ({ context: "The quick brown fox", continuation }));
      const got = await scoreRequests(opened, charTokenizer, requests, { backend, groupSizes: [3] });
      const { model } = loadModel(fixture);
      requests.forEach((r, i) => {
        const context = charTokenizer.encode(r.context);
        const continuation = charTokenizer.encode(r.continuation, { bos: false });
        const all = [...context, ...continuation];
        const { logits } = model.forward(all);
        let want = 0;
        continuation.forEach((id, j) => { want += logProb(logits, context.length + j - 1, model.config.vocabSize, id); });
        assert.ok(Math.abs(got[i]!.loglikelihood - want) < 1e-4 * Math.max(1, Math.abs(want)), `request ${i}: ${got[i]!.loglikelihood} vs ${want}`);
      });
    } finally {
      await backend.dispose();
      opened.close();
    }
  });
}

// prune --heal linear: the fit against a numpy oracle, the fold's exactness, held-out
// perplexity on stories260K, and the healed GGUF in llama.cpp (node-llama-cpp).

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { getLlama, type Llama, type LlamaModel as NodeLlamaModel, type Token } from "node-llama-cpp";
import { createReferenceBackend } from "../src/backend/referenceBackend.js";
import { scoringWindows } from "../src/data/windows.js";
import { OptionError } from "../src/errors.js";
import { healCuts } from "../src/heal/collect.js";
import { foldHealMaps, healedProvider, storedBytes } from "../src/heal/fold.js";
import { fitLinearHeal } from "../src/heal/healLinear.js";
import { LinearHealAccumulator } from "../src/heal/linearFit.js";
import { loadModel, openModel } from "../src/load.js";
import { perplexityData, tokenizeFile } from "../src/pipeline.js";
import { removeLayers } from "../src/prune/removeLayers.js";
import { HEAL_FIXTURE_IDS, writeHealedHfFixture } from "./fixtures/healHf.js";
import { MODEL_BIN, MODEL_GGUF, runCli, sha256, tempDir, TINYSTORIES, TOKENIZER } from "./helpers.js";

interface GoldenCase { rows: number; dim: number; ridge: number; m: number[]; r: number[]; y: number[]; map: number[]; lambda: number; residualBefore: number; residualAfter: number }
const golden = JSON.parse(readFileSync(new URL("../../test/oracle/golden/heal_fit.json", import.meta.url), "utf8")) as { cases: GoldenCase[] };

test("the fit equals numpy's stacked least squares (golden), residuals included", () => {
  for (const c of golden.cases) {
    const acc = new LinearHealAccumulator(c.dim);
    // Two calls, to check that accumulation over batches is a plain sum.
    const half = Math.floor(c.rows / 2) * c.dim;
    const part = (a: number[], from: number, to?: number): Float32Array => Float32Array.from(a.slice(from, to));
    acc.add(part(c.m, 0, half), part(c.r, 0, half), part(c.y, 0, half), half / c.dim);
    acc.add(part(c.m, half), part(c.r, half), part(c.y, half), c.rows - half / c.dim);
    const fit = acc.solve(c.ridge);
    let worst = 0;
    c.map.forEach((v, i) => (worst = Math.max(worst, Math.abs(fit.map[i]! - v))));
    assert.ok(worst < 1e-9, `case of ${c.rows} rows: max |T - T_numpy| = ${worst}`);
    assert.ok(Math.abs(fit.lambda - c.lambda) < 1e-9 * c.lambda);
    assert.ok(Math.abs(fit.residualBefore - c.residualBefore) < 1e-9, `${fit.residualBefore} vs ${c.residualBefore}`);
    assert.ok(Math.abs(fit.residualAfter - c.residualAfter) < 1e-9, `${fit.residualAfter} vs ${c.residualAfter}`);
    assert.ok(fit.residualAfter < fit.residualBefore);
  }
});

test("cuts: runs are merged, each folds into the layer before it, a run from layer 0 is refused", () => {
  assert.deepEqual(healCuts([4, 2, 5, 9], 12), [{ first: 2, last: 2, keptLayer: 1 }, { first: 4, last: 5, keptLayer: 3 }, { first: 9, last: 9, keptLayer: 8 }]);
  assert.throws(() => healCuts([0, 1, 5], 8), (e: unknown) => e instanceof OptionError && e.details.option === "--heal" && /layer 0/.test(e.message));
});

function identityMap(dim: number): Float64Array {
  const t = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) t[i * dim + i] = 1;
  return t;
}

test("folding T = I gives a checkpoint byte-identical to plain removal (llama2.c and GGUF)", () => {
  const dir = tempDir();
  for (const [input, ext] of [[MODEL_BIN, "bin"], [MODEL_GGUF, "gguf"]] as const) {
    const model = openModel(input, { tokenizer: TOKENIZER });
    const replacedTensors = storedBytes(foldHealMaps(model, new Map([[1, identityMap(model.config.dim)], [3, identityMap(model.config.dim)]])));
    model.close();
    assert.equal(replacedTensors.size, 2);
    removeLayers(input, join(dir, `plain.${ext}`), [2, 4]);
    removeLayers(input, join(dir, `healed.${ext}`), [2, 4], { replacedTensors });
    assert.equal(sha256(join(dir, `healed.${ext}`)), sha256(join(dir, `plain.${ext}`)), ext);
  }
});

/** TinyStories split in two: the first part fits, the last part (never seen by the fit) evaluates. */
function splitTinyStories(dir: string): { fit: string; heldOut: string } {
  const text = readFileSync(TINYSTORIES, "utf8");
  const fit = join(dir, "fit.txt");
  const heldOut = join(dir, "held-out.txt");
  writeFileSync(fit, text.slice(0, 120_000));
  writeFileSync(heldOut, text.slice(text.length - 80_000));
  return { fit, heldOut };
}

/** Perplexity of the checkpoint at `path`; with `view`, of that checkpoint seen through it with `skip` skipped (how compare and sweep evaluate). */
async function heldOutPerplexity(path: string, data: string, view?: (m: ReturnType<typeof openModel>) => ReturnType<typeof openModel>, skip?: ReadonlySet<number>): Promise<number> {
  const opened = openModel(path, { tokenizer: TOKENIZER });
  const model = view ? view(opened) : opened;
  const backend = createReferenceBackend();
  try {
    return (await perplexityData(model, tokenizeFile(model, data), { seqLen: 128, stride: 128, maxTokens: 4096 }, { backend, ...(skip ? { skip } : {}) })).perplexity;
  } finally {
    await backend.dispose();
    opened.close();
  }
}

async function healStories(input: string, output: string, fitText: string, maxTokens: number, ridge?: number | "auto"): Promise<ReturnType<typeof fitLinearHeal>> {
  const model = openModel(input, { tokenizer: TOKENIZER });
  const backend = createReferenceBackend();
  try {
    const windows = scoringWindows(tokenizeFile(model, fitText).documents, { seqLen: 128, stride: 128, maxTokens });
    const healed = await fitLinearHeal(model, [2], windows, { backend, ...(ridge === undefined ? {} : { ridge }) });
    removeLayers(input, output, [2], { replacedTensors: healed.replacedTensors });
    return healed;
  } finally {
    await backend.dispose();
    model.close();
  }
}

test("stories260K without its lowest-BI layer (2): healing lowers held-out perplexity", async (t) => {
  const dir = tempDir();
  const { fit, heldOut } = splitTinyStories(dir);
  const healed = await healStories(MODEL_BIN, join(dir, "healed.bin"), fit, 8192);
  removeLayers(MODEL_BIN, join(dir, "plain.bin"), [2]);
  const cut = healed.record.cuts[0]!;
  assert.equal(cut.foldedInto, 1);
  assert.ok(cut.relativeResidualAfter < cut.relativeResidualBefore);
  const full = await heldOutPerplexity(MODEL_BIN, heldOut);
  const plain = await heldOutPerplexity(join(dir, "plain.bin"), heldOut);
  const healedPpl = await heldOutPerplexity(join(dir, "healed.bin"), heldOut);
  t.diagnostic(`held-out perplexity: full ${full.toFixed(3)}, plain ${plain.toFixed(3)}, healed ${healedPpl.toFixed(3)}; fit residual ${cut.relativeResidualBefore.toFixed(4)} -> ${cut.relativeResidualAfter.toFixed(4)} on ${cut.tokens} tokens`);
  assert.ok(healedPpl < plain * 0.95, `healed ${healedPpl} vs plain ${plain}`);
  assert.ok(healedPpl > full);
  // compare and sweep evaluate the healed model as a view with the layer skipped: the same number as the file.
  const viewed = await heldOutPerplexity(MODEL_BIN, heldOut, (m) => ({ ...m, provider: healedProvider(m.provider, healed.folded) }), new Set([2]));
  assert.equal(viewed, healedPpl);
});

test("--heal-ridge auto: each ridge judged on held-out windows, the best refitted on all; it beats plain removal held out; T = I is plain removal's residual", async (t) => {
  const dir = tempDir();
  const { fit, heldOut } = splitTinyStories(dir);
  const healed = await healStories(MODEL_BIN, join(dir, "auto.bin"), fit, 8192, "auto");
  const cut = healed.record.cuts[0]!;
  const auto = cut.auto!;
  assert.equal(healed.record.ridge, "auto");
  assert.deepEqual(auto.heldOut.map((h) => h.ridge), [1e-3, 1e-2, 1e-1, 1, 10, 100]);
  const best = Math.min(...auto.heldOut.map((h) => h.residual));
  assert.ok(auto.ridge !== null && auto.heldOut.find((h) => h.ridge === auto.ridge)!.residual === best, "the ridge with the lowest held-out residual");
  assert.ok(best < auto.heldOutPlain, `held out: ${best} vs plain ${auto.heldOutPlain}`);
  assert.equal(cut.tokens, 8192, "refitted on every window, the held-out ones included");
  removeLayers(MODEL_BIN, join(dir, "plain.bin"), [2]);
  const plain = await heldOutPerplexity(join(dir, "plain.bin"), heldOut);
  const autoPpl = await heldOutPerplexity(join(dir, "auto.bin"), heldOut);
  t.diagnostic(`auto ridge ${auto.ridge}: held-out residual plain ${auto.heldOutPlain.toFixed(4)}, ${auto.heldOut.map((h) => `${h.ridge}: ${h.residual.toFixed(4)}`).join(", ")}; perplexity plain ${plain.toFixed(3)}, healed ${autoPpl.toFixed(3)}`);
  assert.ok(autoPpl < plain, `healed ${autoPpl} vs plain ${plain}`);
  // Fewer than 5 windows: nothing to hold out.
  await assert.rejects(healStories(MODEL_BIN, join(dir, "few.bin"), fit, 512, "auto"), (e: unknown) => e instanceof Error && /holds out every fifth calibration window/.test(e.message));
  // A cut where no ridge beats plain removal held out keeps T = I: plain removal's own residual, the identity map.
  const noise = new LinearHealAccumulator(8);
  let state = 7;
  const rand = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32) - 0.5;
  noise.add(Float32Array.from({ length: 96 }, rand), new Float32Array(96), Float32Array.from({ length: 96 }, rand), 12);
  const identity = noise.identity();
  assert.equal(identity.residualAfter, identity.residualBefore);
  assert.ok(identity.map.every((v, i) => v === (i % 9 === 0 ? 1 : 0)));
});

test("prune --heal linear writes the fit into the sidecar; --heal needs calibration text", () => {
  const dir = tempDir();
  const { fit } = splitTinyStories(dir);
  const out = join(dir, "healed.bin");
  const r = runCli(["prune", MODEL_BIN, "--out", out, "--layers", "3", "--heal", "linear", "--data", fit, "--seq-len", "128", "--max-tokens", "1024", "--backend", "reference", "--json", join(dir, "r.json")]);
  assert.equal(r.status, 0, r.stderr);
  const sidecar = JSON.parse(readFileSync(`${out}.json`, "utf8")) as { heal: { method: string; cuts: { foldedInto: number; tokens: number; relativeResidualBefore: number; relativeResidualAfter: number }[] } };
  assert.equal(sidecar.heal.method, "linear");
  assert.equal(sidecar.heal.cuts[0]!.foldedInto, 2);
  assert.equal(sidecar.heal.cuts[0]!.tokens, 1024);
  assert.ok(sidecar.heal.cuts[0]!.relativeResidualAfter < sidecar.heal.cuts[0]!.relativeResidualBefore);
  const bad = runCli(["prune", MODEL_BIN, "--out", join(dir, "x.bin"), "--layers", "3", "--heal", "linear"]);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--heal linear fits on calibration text/);
  const zero = runCli(["prune", MODEL_BIN, "--out", join(dir, "y.bin"), "--layers", "0", "--heal", "linear", "--data", fit]);
  assert.match(zero.stderr, /layer 0 is removed/);
  const unknown = runCli(["prune", MODEL_BIN, "--out", join(dir, "z.bin"), "--layers", "1", "--heal", "lora"]);
  assert.match(unknown.stderr, /--heal lora is not a healing method/);
});

let llama: Llama;
before(async () => {
  llama = await getLlama({ gpu: false, build: "never", skipDownload: true, usePrebuiltBinaries: true, logLevel: "error" as never });
});
after(async () => {
  await llama.dispose();
});

test("the healed GGUF runs in llama.cpp with shortgpt's probabilities", async (t) => {
  const dir = tempDir();
  const { fit } = splitTinyStories(dir);
  const out = join(dir, "healed.gguf");
  await healStories(MODEL_GGUF, out, fit, 2048);
  const loaded = loadModel(out);
  assert.equal(loaded.model.config.nLayers, 4);
  const ids = loaded.tokenizer.encode("Once upon a time, there was a little girl named Lily. She loved to play");
  const V = loaded.model.config.vocabSize;
  const { logits } = loaded.model.forward(ids);
  const model = await llama.loadModel({ modelPath: out });
  const context = await model.createContext({ contextSize: 256, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" } as Parameters<NodeLlamaModel["createContext"]>[0]);
  let worst = 0;
  try {
    const results = await context.getSequence().controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { token: true, probabilities: true, options: { temperature: 0 } } }]));
    results.forEach((res, pos) => {
      const theirs = res?.next?.probabilities;
      assert.ok(theirs, `no probabilities at ${pos}`);
      const row = logits.slice(pos * V, (pos + 1) * V);
      const max = Math.max(...row);
      let sum = 0;
      for (let i = 0; i < V; i++) sum += row[i] = Math.exp(row[i]! - max);
      for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(row[i]! / sum - (theirs.get(i as Token) ?? 0)));
    });
  } finally {
    await context.dispose();
    await model.dispose();
  }
  t.diagnostic(`healed GGUF: max |p_shortgpt - p_llama.cpp| over ${ids.length} positions x ${V} tokens = ${worst.toExponential(2)}`);
  assert.ok(worst < 1e-4, `max difference ${worst}`);
});

test("healed Hugging Face Llama and GPT-2 (Conv1D, down bias) load in transformers with shortgpt's logits (golden)", async (t) => {
  const hfGolden = JSON.parse(readFileSync(new URL("../../test/oracle/golden/heal_hf.json", import.meta.url), "utf8")) as {
    ids: number[]; last_positions: number; cases: Record<string, { layers: number; weights: Record<string, string>; logits_last: number[][] }>;
  };
  assert.deepEqual(hfGolden.ids, HEAL_FIXTURE_IDS);
  for (const family of ["llama", "gpt2"] as const) {
    const g = hfGolden.cases[family]!;
    const { input, healed, fit } = await writeHealedHfFixture(join(tempDir(), family), family);
    assert.equal(fit.record.cuts[0]!.tensors.length, family === "gpt2" ? 2 : 1, "GPT-2's down bias is folded too");
    // The file holds the folded values in its own layout (GPT-2: Conv1D (in, out)): read back canonical, they are the fit's.
    // (The kept layer 1 keeps its index: layer 2 is the one removed.)
    const reread = openModel(healed);
    const original = openModel(input);
    for (const [name, folded] of fit.folded) {
      assert.deepEqual(reread.provider.readF32(name), folded.values, `${family} ${name}`);
      assert.notDeepEqual(original.provider.readF32(name), folded.values, `${family} ${name} was changed by the fit`);
    }
    reread.close();
    original.close();
    // The directory transformers ran is byte for byte the one rebuilt here.
    for (const [file, hash] of Object.entries(g.weights)) assert.equal(sha256(join(healed, file)), hash, `${family} ${file}`);
    const loaded = loadModel(healed);
    assert.equal(loaded.model.config.nLayers, g.layers);
    const { logits } = loaded.model.forward(hfGolden.ids);
    const V = loaded.model.config.vocabSize;
    const n = hfGolden.ids.length;
    let worst = 0;
    let scale = 0;
    g.logits_last.forEach((row, k) => row.forEach((v, i) => {
      worst = Math.max(worst, Math.abs(logits[(n - hfGolden.last_positions + k) * V + i]! - v));
      scale = Math.max(scale, Math.abs(v));
    }));
    t.diagnostic(`${family}: max |logit_shortgpt - logit_transformers| = ${worst.toExponential(2)} (logits up to ${scale.toFixed(2)})`);
    assert.ok(worst < 1e-4 * Math.max(1, scale), `${family}: ${worst}`);
  }
});

test("sweep --heal linear evaluates each k healed beside plain (JSON rows, gain per k)", () => {
  const dir = tempDir();
  const { fit, heldOut } = splitTinyStories(dir);
  const json = join(dir, "sweep.json");
  const r = runCli(["sweep", MODEL_BIN, "--data", fit, "--seq-len", "128", "--max-tokens", "2048", "--max-remove", "1", "--eval", `ppl:${heldOut}`, "--heal", "linear", "--backend", "reference", "--json", json]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /healed/);
  const out = JSON.parse(readFileSync(json, "utf8")) as { heal: string; rows: { layers: number[]; evals: { value: number }[]; healed?: { evals: { value: number }[]; heal: { cuts: unknown[] } } }[] };
  assert.equal(out.heal, "linear");
  assert.equal(out.rows[0]!.healed, undefined, "k = 0 has nothing to heal");
  const k1 = out.rows[1]!;
  assert.deepEqual(k1.layers, [2]);
  assert.equal(k1.healed!.heal.cuts.length, 1);
  assert.ok(k1.healed!.evals[0]!.value < k1.evals[0]!.value, `healed ${k1.healed!.evals[0]!.value} vs plain ${k1.evals[0]!.value}`);
});

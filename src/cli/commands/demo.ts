// shortgpt demo: the whole pipeline on stories260K and TinyStories — score, choose, prune,
// evaluate, generate — in well under a minute.

import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate } from "../../eval/generate.js";
import { loadModel, openModel, type OpenedModel } from "../../load.js";
import { perplexityData, resolveWindows, tokenizeFile, type TokenizedData } from "../../pipeline.js";
import { lowestK } from "../../prune/plan.js";
import { removeLayers } from "../../prune/removeLayers.js";
import { sharedPath } from "../../shared.js";
import { int, parse } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, biChart, ENGINE_OPTIONS, scoreWithProgress } from "../common.js";
import { table } from "../format.js";
import { Progress } from "../progress.js";

const usage = "shortgpt demo [--calibration-tokens N] [--eval-tokens N] [--backend B] [--threads N] [--json FILE]";

/** The greedy continuation of BOS, with the model fully in memory (generation needs a KV cache). */
function greedySample(path: string, tokenizer: string, skip: ReadonlySet<number>): string {
  const loaded = loadModel(path, { tokenizer });
  const ids = generate(loaded.model, [loaded.tokenizer.bosId], { maxTokens: 60, temperature: 0, seed: 0, skip, stopTokens: new Set([loaded.tokenizer.bosId, loaded.tokenizer.eosId]) });
  return loaded.tokenizer.decode(ids);
}

export const demoCommand: Command = {
  name: "demo",
  usage,
  summary: "score, prune, evaluate and generate with stories260K on TinyStories",
  async run(argv) {
    const p = parse(argv, { json: { type: "string" }, "calibration-tokens": { type: "string" }, "eval-tokens": { type: "string" }, ...ENGINE_OPTIONS }, usage);
    const calibrationTokens = int(p, "calibration-tokens", 512) ?? 16384;
    const evalTokens = int(p, "eval-tokens", 512) ?? 16384;
    const modelPath = sharedPath("models", "stories260K", "stories260K.bin");
    const dataPath = sharedPath("data", "tinystories", "tinystories_val.txt");
    const backend = await backendFromArgs(p);
    const opened = openModel(modelPath);
    const dir = mkdtempSync(join(tmpdir(), "shortgpt-demo-"));
    const toClose: OpenedModel[] = [opened];
    try {
      const nLayers = opened.config.nLayers;
      const lines: string[] = [`model: ${modelPath} (${nLayers} layers), backend ${backend.name} with ${backend.threads} threads`];

      // Calibration text is the start of the file; evaluation text is what follows it.
      const all = tokenizeFile(opened, dataPath);
      const stream = all.documents[0]!;
      const calibration: TokenizedData = { ...all, documents: [stream.slice(0, calibrationTokens)], tokens: calibrationTokens };
      const held: TokenizedData = { ...all, documents: [[opened.tokenizer.bosId, ...stream.slice(calibrationTokens, calibrationTokens + evalTokens)]], tokens: evalTokens + 1 };
      const windows = resolveWindows(opened.config.contextLength, { seqLen: 512 });

      let started = Date.now();
      const scores = await scoreWithProgress(opened, calibration, windows, backend);
      const scoreSeconds = (Date.now() - started) / 1000;
      const removeOne = lowestK(scores.ranking, 1, nLayers);
      const removeTwo = lowestK(scores.ranking, 2, nLayers);
      lines.push("", `Block Influence on ${scores.tokens} TinyStories tokens (windows of 512) in ${scoreSeconds.toFixed(1)} s:`, biChart(scores, removeOne));
      lines.push(`least influential first: ${scores.ranking.join(", ")}; the layer to remove: ${removeOne[0]}`);

      // Really prune the 2-layer case to a file and evaluate that file.
      const prunedPath = join(dir, "stories260K-pruned.bin");
      removeLayers(modelPath, prunedPath, removeTwo);
      const pruned = openModel(prunedPath, { tokenizer: opened.tokenizerPath });
      toClose.push(pruned);
      const variants = [
        { name: "original", removed: [] as number[], model: opened, path: modelPath, skip: new Set<number>() },
        { name: `layer ${removeOne.join(",")} skipped`, removed: removeOne, model: opened, path: modelPath, skip: new Set(removeOne) },
        { name: `pruned file (-${removeTwo.join(",")})`, removed: removeTwo, model: pruned, path: prunedPath, skip: new Set<number>() },
      ];
      const rows: (string | number)[][] = [];
      const results = [];
      started = Date.now();
      for (const v of variants) {
        const progress = new Progress(`perplexity (${v.name})`, "token-layers");
        const ppl = await perplexityData(v.model, held, windows, { backend, skip: v.skip, onProgress: progress.callback }).finally(() => progress.done());
        const sample = greedySample(v.path, opened.tokenizerPath, v.skip);
        const layers = v.model.config.nLayers - v.skip.size;
        results.push({ variant: v.name, removed: v.removed, layers, perplexity: ppl.perplexity, nll: ppl.nll, tokens: ppl.tokens, sample });
        rows.push([v.name, layers, ppl.perplexity.toFixed(3), ppl.tokens]);
      }
      const evalSeconds = (Date.now() - started) / 1000;
      lines.push("", `Perplexity on the next ${evalTokens} tokens (held out from calibration), ${evalSeconds.toFixed(1)} s for all three with samples:`);
      lines.push(table(["model", "layers", "perplexity", "tokens"], rows));
      lines.push(`pruned file: ${statSync(prunedPath).size.toLocaleString("en-US")} bytes (original ${statSync(modelPath).size.toLocaleString("en-US")})`);
      lines.push("", "Greedy samples from BOS (60 tokens):");
      for (const r of results) lines.push(`  [${r.variant}] ${JSON.stringify(r.sample)}`);
      return {
        json: { model: modelPath, data: { path: dataPath, sha256: all.sha256 }, backend: backend.name, calibrationTokens, evalTokens, scores, removeOne, removeTwo, results },
        text: lines.join("\n"),
      };
    } finally {
      for (const m of toClose) m.close();
      await backend.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

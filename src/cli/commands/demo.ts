// shortgpt demo: the whole pipeline on stories260K and TinyStories — score, choose, prune,
// evaluate, generate — in well under a minute.

import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { generate } from "../../eval/generate.js";
import { loadModel } from "../../load.js";
import { perplexityData, resolveWindows, tokenizeFile, type TokenizedData } from "../../pipeline.js";
import { lowestK } from "../../prune/plan.js";
import { removeLayers } from "../../prune/removeLayers.js";
import { sharedPath } from "../../shared.js";
import { int, parse } from "../args.js";
import type { Command } from "../command.js";
import { biChart, scoreWithProgress } from "../common.js";
import { table } from "../format.js";
import { Progress } from "../progress.js";

const usage = "shortgpt demo [--calibration-tokens N] [--eval-tokens N] [--json FILE]";

export const demoCommand: Command = {
  name: "demo",
  usage,
  summary: "score, prune, evaluate and generate with stories260K on TinyStories",
  run(argv) {
    const p = parse(argv, { json: { type: "string" }, "calibration-tokens": { type: "string" }, "eval-tokens": { type: "string" } }, usage);
    const calibrationTokens = int(p, "calibration-tokens", 512) ?? 8192;
    const evalTokens = int(p, "eval-tokens", 512) ?? 4096;
    const modelPath = sharedPath("models", "stories260K", "stories260K.bin");
    const dataPath = sharedPath("data", "tinystories", "tinystories_val.txt");
    const loaded = loadModel(modelPath);
    const lines: string[] = [];
    lines.push(`model: ${modelPath} (${loaded.model.nLayers} layers, ${loaded.model.parameterCount().toLocaleString("en-US")} parameters)`);

    // Calibration text is the start of the file; evaluation text is what follows it.
    const all = tokenizeFile(loaded, dataPath);
    const stream = all.documents[0]!;
    const calibration: TokenizedData = { ...all, documents: [stream.slice(0, calibrationTokens)], tokens: calibrationTokens };
    const held: TokenizedData = { ...all, documents: [[loaded.tokenizer.bosId, ...stream.slice(calibrationTokens, calibrationTokens + evalTokens)]], tokens: evalTokens + 1 };
    const windows = resolveWindows(loaded, { seqLen: 512 });

    let t0 = Date.now();
    const scores = scoreWithProgress(loaded, calibration, windows);
    const scoreSeconds = (Date.now() - t0) / 1000;
    const removeOne = lowestK(scores.ranking, 1, loaded.model.nLayers);
    const removeTwo = lowestK(scores.ranking, 2, loaded.model.nLayers);
    lines.push("", `Block Influence on ${scores.tokens} TinyStories tokens (windows of 512) in ${scoreSeconds.toFixed(1)} s:`, biChart(scores, removeOne));
    lines.push(`least influential first: ${scores.ranking.join(", ")}; the layer to remove: ${removeOne[0]}`);

    // Really prune the 2-layer case to a file and evaluate that file.
    const dir = mkdtempSync(join(tmpdir(), "shortgpt-demo-"));
    try {
      const prunedPath = join(dir, "stories260K-pruned.bin");
      removeLayers(modelPath, prunedPath, removeTwo);
      const pruned = loadModel(prunedPath, { tokenizer: loaded.tokenizerPath });
      const variants = [
        { name: "original", removed: [] as number[], run: () => ({ model: loaded, skip: new Set<number>() }) },
        { name: `layer ${removeOne.join(",")} skipped`, removed: removeOne, run: () => ({ model: loaded, skip: new Set(removeOne) }) },
        { name: `pruned file (-${removeTwo.join(",")})`, removed: removeTwo, run: () => ({ model: pruned, skip: new Set<number>() }) },
      ];
      const rows: (string | number)[][] = [];
      const results = [];
      t0 = Date.now();
      for (const v of variants) {
        const { model, skip } = v.run();
        const progress = new Progress(`perplexity (${v.name})`, "tokens");
        const ppl = perplexityData(model, held, windows, { skip, onProgress: progress.callback });
        progress.done();
        const sample = model.tokenizer.decode(generate(model.model, [model.tokenizer.bosId], { maxTokens: 60, temperature: 0, seed: 0, skip, stopTokens: new Set([1, 2]) }));
        results.push({ variant: v.name, removed: v.removed, layers: model.model.nLayers - skip.size, perplexity: ppl.perplexity, nll: ppl.nll, tokens: ppl.tokens, sample });
        rows.push([v.name, model.model.nLayers - skip.size, ppl.perplexity.toFixed(3), ppl.tokens]);
      }
      const evalSeconds = (Date.now() - t0) / 1000;
      lines.push("", `Perplexity on the next ${evalTokens} tokens (held out from calibration), ${evalSeconds.toFixed(1)} s for all three:`);
      lines.push(table(["model", "layers", "perplexity", "tokens"], rows));
      lines.push(`pruned file: ${statSync(prunedPath).size.toLocaleString("en-US")} bytes (original ${statSync(modelPath).size.toLocaleString("en-US")})`);
      lines.push("", "Greedy samples from BOS (60 tokens):");
      for (const r of results) lines.push(`  [${r.variant}] ${JSON.stringify(r.sample)}`);
      return {
        json: { model: modelPath, data: { path: dataPath, sha256: all.sha256 }, calibrationTokens, evalTokens, scores, removeOne, removeTwo, results },
        text: lines.join("\n"),
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

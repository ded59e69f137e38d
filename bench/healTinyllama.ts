// `prune --heal linear` on a random-weight TinyLlama-1.1B-shaped checkpoint (BF16, bench/cache):
// fits the maps for the given removed layers on seeded random token windows, writes the healed
// checkpoint, and prints time, peak RSS and the fit residuals as one JSON line. Run it for a
// shallow and a deep cut to see that memory does not grow with depth:
//   node dist/bench/healTinyllama.js --layers 3 --tokens 2048
//   node dist/bench/healTinyllama.js --layers 19 --tokens 2048
// --heldout-tokens N also collects the same statistics on N other random tokens and prints the
// relative residual there of plain removal and of the fitted map (does the fit generalize?);
// --ridge R|auto as prune's --heal-ridge.

import { rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createOrtBackend } from "../src/backend/ortBackend.js";
import type { Window } from "../src/data/windows.js";
import { collectHealStatistics, healCuts } from "../src/heal/collect.js";
import { fitLinearHeal } from "../src/heal/healLinear.js";
import { openModel } from "../src/load.js";
import { removeLayers } from "../src/prune/removeLayers.js";
import { TINYLLAMA_1B, ensureRandomCheckpoint } from "./randomCheckpoint.js";

const { values } = parseArgs({ options: { layers: { type: "string", default: "10" }, tokens: { type: "string", default: "2048" }, "heldout-tokens": { type: "string", default: "0" }, ridge: { type: "string" }, threads: { type: "string", default: "2" }, out: { type: "string" } } });
const root = join(import.meta.dirname, "..", "..");
const dir = ensureRandomCheckpoint(TINYLLAMA_1B, join(root, "bench", "cache"), (line) => process.stderr.write(`${line}\n`));
const layers = values.layers.split(",").map(Number);
const seqLen = 512;
const nWindows = Math.ceil(Number(values.tokens) / seqLen);
let state = 12345;
const next = (): number => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0), state);
const randomWindows = (n: number): Window[] => Array.from({ length: n }, (_, document) => ({ document, begin: 0, tokens: [1, ...Array.from({ length: seqLen - 1 }, () => 2 + (next() % (TINYLLAMA_1B.vocabSize - 2)))] }));
const windows = randomWindows(nWindows);
// Drawn after the fit's windows from the same generator: other tokens, same distribution.
const heldOut = randomWindows(Math.ceil(Number(values["heldout-tokens"]) / seqLen));
const model = openModel(dir);
const backend = await createOrtBackend({ threads: Number(values.threads), flavor: "node" });
const start = performance.now();
let fitSeconds = 0;
try {
  const ridge = values.ridge === undefined ? undefined : values.ridge === "auto" ? "auto" as const : Number(values.ridge);
  const heal = await fitLinearHeal(model, layers, windows, { backend, ...(ridge === undefined ? {} : { ridge }) });
  fitSeconds = (performance.now() - start) / 1000;
  const out = values.out ?? join(root, "bench", "cache", "tinyllama-healed");
  rmSync(out, { recursive: true, force: true });
  removeLayers(dir, out, layers, { replacedTensors: heal.replacedTensors });
  const cuts = healCuts(layers, model.config.nLayers);
  const heldOutResiduals = heldOut.length === 0 ? [] : (await collectHealStatistics(model, cuts, heldOut, { backend })).map((acc, i) => ({
    foldedInto: cuts[i]!.keptLayer, tokens: heldOut.length * seqLen, ...acc.evaluate(heal.maps.get(cuts[i]!.keptLayer)!),
  }));
  process.stdout.write(JSON.stringify({
    shape: TINYLLAMA_1B.name, removed: layers, tokens: nWindows * seqLen, fitSeconds, totalSeconds: (performance.now() - start) / 1000,
    peakRssGiB: process.resourceUsage().maxRSS / 2 ** 20, cuts: heal.record.cuts, heldOutResiduals, output: out,
  }) + "\n");
} finally {
  await backend.dispose();
  model.close();
}

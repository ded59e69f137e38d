// shortgpt prune MODEL --out PATH (--layers i,j | --remove K --data FILE): removes layers and
// writes the same format, plus PATH.json recording what was removed and why.

import { OptionError } from "../../errors.js";
import { checkRemovable, checkRemoveCount, lowestK, parseLayerList } from "../../prune/plan.js";
import { removeLayers } from "../../prune/removeLayers.js";
import { checkOutputPath, writeJsonAtomically } from "../../util/atomicWrite.js";
import { DATA_OPTIONS, MODEL_OPTIONS, flag, int, onePositional, parse, str } from "../args.js";
import type { Command } from "../command.js";
import { biChart, dataFromArgs, loadFromArgs, scoreWithProgress, windowsFromArgs } from "../common.js";

const usage = "shortgpt prune MODEL --out PATH (--layers i,j,... | --remove K --data FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N]) [--force] [--json FILE]";

export const pruneCommand: Command = {
  name: "prune",
  usage,
  summary: "remove the listed layers, or the K lowest-BI ones, and write the same format",
  run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...DATA_OPTIONS, out: { type: "string" }, layers: { type: "string" }, remove: { type: "string" }, force: { type: "boolean" },
    }, usage);
    const input = onePositional(p, "MODEL", usage);
    const out = str(p, "out");
    if (out === undefined) throw new OptionError("missing --out PATH", { option: "--out", hint: `usage: ${usage}` });
    const force = flag(p, "force");
    // Refuse unsafe outputs before any work is done.
    checkOutputPath(out, { inputs: [input], force, option: "--out" });
    checkOutputPath(`${out}.json`, { inputs: [input], force, option: "--out" });
    const layersText = str(p, "layers");
    const removeText = str(p, "remove");
    if ((layersText === undefined) === (removeText === undefined)) {
      throw new OptionError("give exactly one of --layers i,j,... or --remove K", { option: "--layers", hint: `usage: ${usage}` });
    }
    const loaded = loadFromArgs(p, input);
    const nLayers = loaded.model.nLayers;
    let layers: number[];
    let selection: Record<string, unknown>;
    let chart = "";
    if (layersText !== undefined) {
      layers = parseLayerList(layersText, nLayers, "--layers");
      checkRemovable(layers, nLayers, "--layers");
      selection = { method: "layers" };
    } else {
      const k = int(p, "remove", 0)!;
      checkRemoveCount(k, nLayers); // before the data is read
      const data = dataFromArgs(p, loaded, "data", usage);
      const windows = windowsFromArgs(p, loaded);
      const scores = scoreWithProgress(loaded, data, windows);
      layers = lowestK(scores.ranking, k, nLayers);
      chart = biChart(scores, layers) + "\n";
      selection = {
        method: "bi",
        k,
        scores: scores.layers,
        ranking: scores.ranking,
        tokens: scores.tokens,
        data: { path: data.path, sha256: data.sha256, split: data.split },
        options: windows,
      };
    }
    const result = removeLayers(input, out, layers, { force });
    const record = { ...result, selection, tool: "shortgpt", version: "0.1.0" };
    writeJsonAtomically(`${out}.json`, record);
    return {
      json: record,
      text: `${chart}removed layers ${layers.join(", ")} of ${nLayers}: ${result.layersAfter} layers left\nwrote ${out} and ${out}.json`,
    };
  },
};

// shortgpt prune MODEL --out PATH (--layers i,j | --remove K --data FILE): removes layers and
// writes the same format, plus PATH.json recording what was removed and why.

import { OptionError } from "../../errors.js";
import type { OpenedModel } from "../../load.js";
import { checkRemovable, checkRemoveCount, lowestK, parseLayerList } from "../../prune/plan.js";
import { removeLayers } from "../../prune/removeLayers.js";
import { checkOutputPath, writeJsonAtomically } from "../../util/atomicWrite.js";
import { DATA_OPTIONS, MODEL_OPTIONS, flag, int, onePositional, parse, type Parsed, str } from "../args.js";
import type { Command } from "../command.js";
import { backendFromArgs, biChart, dataFromArgs, ENGINE_OPTIONS, openFromArgs, scoreWithProgress, windowsFromArgs } from "../common.js";

const usage = "shortgpt prune MODEL --out PATH (--layers i,j,... | --remove K --data FILE [--split blank-line] [--seq-len L] [--stride S] [--max-tokens N] [--backend B] [--threads N]) [--force] [--json FILE]";

interface Selection {
  layers: number[];
  record: Record<string, unknown>;
  chart: string;
}

/** The K lowest-BI layers, scored on the data the options name. */
async function selectByScore(p: Parsed, opened: OpenedModel, k: number): Promise<Selection> {
  checkRemoveCount(k, opened.config.nLayers); // before the data is read
  const data = dataFromArgs(p, opened, "data", usage);
  const windows = windowsFromArgs(p, opened);
  const backend = await backendFromArgs(p);
  const scores = await scoreWithProgress(opened, data, windows, backend).finally(() => backend.dispose());
  const layers = lowestK(scores.ranking, k, opened.config.nLayers);
  return {
    layers,
    chart: biChart(scores, layers) + "\n",
    record: {
      method: "bi", k, scores: scores.layers, ranking: scores.ranking, tokens: scores.tokens,
      data: { path: data.path, sha256: data.sha256, split: data.split }, options: windows, backend: backend.name,
    },
  };
}

export const pruneCommand: Command = {
  name: "prune",
  usage,
  summary: "remove the listed layers, or the K lowest-BI ones, and write the same format",
  async run(argv) {
    const p = parse(argv, {
      ...MODEL_OPTIONS, ...DATA_OPTIONS, ...ENGINE_OPTIONS, out: { type: "string" }, layers: { type: "string" }, remove: { type: "string" }, force: { type: "boolean" },
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
    const opened = openFromArgs(p, input);
    const nLayers = opened.config.nLayers;
    let selection: Selection;
    try {
      if (layersText !== undefined) {
        const layers = parseLayerList(layersText, nLayers, "--layers");
        checkRemovable(layers, nLayers, "--layers");
        selection = { layers, record: { method: "layers" }, chart: "" };
      } else {
        selection = await selectByScore(p, opened, int(p, "remove", 0)!);
      }
    } finally {
      opened.close();
    }
    const result = removeLayers(input, out, selection.layers, { force });
    const record = { ...result, selection: selection.record, tool: "shortgpt", version: "0.1.0" };
    writeJsonAtomically(`${out}.json`, record);
    return {
      json: record,
      text: `${selection.chart}removed layers ${selection.layers.join(", ")} of ${nLayers}: ${result.layersAfter} layers left\nwrote ${out} and ${out}.json`,
    };
  },
};

// Width pruning end to end, as the commands use it: calibration statistics over the scoring
// windows of a data file, then FFN-channel pruning or SliceGPT slicing sized to remove as many
// parameters as K whole layers (or to an explicit size). The pruned model stays in memory.

import type { DecoderBackend } from "./backend/backend.js";
import { scoringWindows, requireOneWindow } from "./data/windows.js";
import { OptionError } from "./errors.js";
import type { OpenedModel } from "./load.js";
import { collectWidthStats, type WidthStats } from "./metrics/widthStats.js";
import { loadLlamaWeights } from "./models/llama.js";
import type { TokenizedData, WindowChoice } from "./pipeline.js";
import { ffnChannelsForLayers, pruneFfnChannels } from "./prune/ffnChannels.js";
import { sliceDimForLayers, sliceGpt } from "./prune/sliceGpt.js";
import { checkWidthPrunable, layerParameterCount, llamaParameterCount, type WidthMethod, type WidthPrunedModel } from "./prune/widthModel.js";

export const WIDTH_METHODS: readonly WidthMethod[] = ["ffn-channels", "slicegpt"];

export function parseWidthMethod(text: string, option: string): WidthMethod {
  const aliases: Record<string, WidthMethod> = { ffn: "ffn-channels", "ffn-channels": "ffn-channels", slicegpt: "slicegpt" };
  const method = aliases[text.trim().toLowerCase()];
  if (!method) throw new OptionError(`${option} ${text}: unknown width method`, { option, got: text, hint: "use ffn-channels (or ffn) or slicegpt" });
  return method;
}

/** How much to prune: as many parameters as `matchLayers` layers, or an explicit size. */
export type WidthSize = { matchLayers: number } | { channelsRemoved: number } | { hiddenSize: number };

/** Refuses, before any work, a model or a K that width pruning cannot serve (compare --width checks this first). */
export function checkWidthMatch(opened: OpenedModel, matchLayers: number, option: string): void {
  checkWidthPrunable(opened.config, opened.architecture, opened.path);
  ffnChannelsForLayers(opened.config, matchLayers, option);
  sliceDimForLayers(opened.config, isTied(opened), matchLayers, option);
}

/** Calibration statistics on the scoring windows of `data` (the windows Block Influence scores). */
export function widthStatsOf(opened: OpenedModel, data: TokenizedData, windows: WindowChoice, backend: DecoderBackend, onProgress?: (done: number, total: number) => void): Promise<WidthStats> {
  checkWidthPrunable(opened.config, opened.architecture, opened.path);
  requireOneWindow(data.documents, windows.seqLen, data.path);
  return collectWidthStats(opened, scoringWindows(data.documents, windows), { backend, ...(onProgress ? { onProgress } : {}) });
}

/** True when the checkpoint has no classifier of its own (it reuses the embedding). */
export function isTied(opened: OpenedModel): boolean {
  return !opened.provider.entries().some((e) => e.name === opened.names.classifier);
}

/** Parameters of the model as opened, and after removing `layers` whole layers. */
export function depthParameterCounts(opened: OpenedModel, layers: number): { full: number; depth: number } {
  const full = llamaParameterCount(opened.config, isTied(opened));
  return { full, depth: full - layers * layerParameterCount(opened.config) };
}

/** Loads the model's weights (float32, in memory) and prunes them by `method` to `size`. */
export function widthPrune(opened: OpenedModel, stats: WidthStats, method: WidthMethod, size: WidthSize): WidthPrunedModel {
  checkWidthPrunable(opened.config, opened.architecture, opened.path);
  const { config } = opened;
  const tied = isTied(opened);
  const weights = loadLlamaWeights(opened.provider, config, opened.names);
  if (method === "ffn-channels") {
    if ("hiddenSize" in size) throw new OptionError("--hidden-size sizes slicegpt; ffn-channels takes --channels or --match-layers", { option: "--hidden-size" });
    const n = "matchLayers" in size ? ffnChannelsForLayers(config, size.matchLayers) : size.channelsRemoved;
    return pruneFfnChannels(weights, config, tied, stats, n);
  }
  if ("channelsRemoved" in size) throw new OptionError("--channels sizes ffn-channels; slicegpt takes --hidden-size or --match-layers", { option: "--channels" });
  const dPrime = "matchLayers" in size ? sliceDimForLayers(config, tied, size.matchLayers) : size.hiddenSize;
  return sliceGpt(weights, config, stats, dPrime);
}

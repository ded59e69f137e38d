// `prune --heal linear`: for each run of removed layers, fits the linear map that best replaces
// it (see linearFit.ts) on calibration windows and folds it into the kept layer before the run.

import type { DecoderBackend } from "../backend/backend.js";
import type { Window } from "../data/windows.js";
import { OptionError } from "../errors.js";
import type { OpenedModel } from "../load.js";
import { collectHealStatistics, healCuts } from "./collect.js";
import { downProjectionName, type FoldedTensor, foldHealMaps, storedBytes } from "./fold.js";

export const HEAL_METHODS = ["none", "linear"] as const;
export type HealMethod = (typeof HEAL_METHODS)[number];

/** Default ridge, relative to trace(M^T M) / dim: small enough not to bias a fit on thousands of tokens. */
export const DEFAULT_HEAL_RIDGE = 1e-3;

export function parseHealMethod(text: string | undefined): HealMethod {
  if (text === undefined) return "none";
  if (!(HEAL_METHODS as readonly string[]).includes(text)) {
    throw new OptionError(`--heal ${text} is not a healing method`, { option: "--heal", got: text, expected: HEAL_METHODS.join(" | ") });
  }
  return text as HealMethod;
}

/** What the JSON sidecar records of one cut's fit. */
export interface HealCutRecord {
  removed: number[];
  /** Original index of the kept layer whose down projection absorbed the map. */
  foldedInto: number;
  tensors: string[];
  tokens: number;
  lambda: number;
  /** ||R + M - Y||_F / ||Y||_F: plain removal. */
  relativeResidualBefore: number;
  /** ||R + M T^T - Y||_F / ||Y||_F: with the fitted map. */
  relativeResidualAfter: number;
}

export interface HealRecord {
  method: "linear";
  ridge: number;
  cuts: HealCutRecord[];
  /** The calibration text and windows the maps were fitted on (the CLI adds them). */
  data?: { path: string; sha256: string; split: string };
  options?: { seqLen: number; stride: number; maxTokens?: number };
  backend?: string;
}

export interface LinearHealOptions {
  backend: DecoderBackend;
  ridge?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface LinearHeal {
  /** Stored bytes of the folded tensors, for removeLayers. */
  replacedTensors: Map<string, Uint8Array>;
  /** The same tensors as the written file reads them, for healedProvider. */
  folded: Map<string, FoldedTensor>;
  record: HealRecord;
  /** Each cut's fitted map (row-major d x d), by the kept layer it folds into. */
  maps: Map<number, Float64Array>;
}

/** Fits every cut's map on `windows` of the unpruned model and returns the replaced tensors for removeLayers. */
export async function fitLinearHeal(model: OpenedModel, removed: readonly number[], windows: readonly Window[], options: LinearHealOptions): Promise<LinearHeal> {
  const ridge = options.ridge ?? DEFAULT_HEAL_RIDGE;
  const cuts = healCuts(removed, model.config.nLayers);
  if (windows.length === 0) throw new OptionError("--heal linear needs calibration text: no windows", { option: "--data" });
  for (const c of cuts) downProjectionName(model, c.keptLayer);
  const accumulators = await collectHealStatistics(model, cuts, windows, { backend: options.backend, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  const fits = accumulators.map((a) => a.solve(ridge));
  const folded = foldHealMaps(model, new Map(cuts.map((c, i) => [c.keptLayer, fits[i]!.map])));
  const cutRecords = cuts.map((c, i): HealCutRecord => {
    const fit = fits[i]!;
    const names = model.names.layer(c.keptLayer);
    return {
      removed: Array.from({ length: c.last - c.first + 1 }, (_, k) => c.first + k), foldedInto: c.keptLayer,
      tensors: [downProjectionName(model, c.keptLayer), ...(names.bDown !== undefined && folded.has(names.bDown) ? [names.bDown] : [])],
      tokens: fit.tokens, lambda: fit.lambda, relativeResidualBefore: fit.residualBefore, relativeResidualAfter: fit.residualAfter,
    };
  });
  return { replacedTensors: storedBytes(folded), folded, record: { method: "linear", ridge, cuts: cutRecords }, maps: new Map(cuts.map((c, i) => [c.keptLayer, fits[i]!.map])) };
}

// `prune --heal linear`: for each run of removed layers, fits the linear map that best replaces
// it (see linearFit.ts) on calibration windows and folds it into the kept layer before the run.

import type { DecoderBackend } from "../backend/backend.js";
import type { Window } from "../data/windows.js";
import { OptionError } from "../errors.js";
import type { OpenedModel } from "../load.js";
import { collectHealStatistics, healCuts } from "./collect.js";
import { downProjectionName, type FoldedTensor, foldHealMaps, storedBytes } from "./fold.js";
import type { LinearHealAccumulator, LinearHealFit } from "./linearFit.js";

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
  /** With --heal-ridge auto: what was tried and chosen. */
  auto?: AutoRidgeChoice;
}

export interface HealRecord {
  method: "linear";
  ridge: number | "auto";
  cuts: HealCutRecord[];
  /** The calibration text and windows the maps were fitted on (the CLI adds them). */
  data?: { path: string; sha256: string; split: string };
  options?: { seqLen: number; stride: number; maxTokens?: number };
  backend?: string;
}

export interface LinearHealOptions {
  backend: DecoderBackend;
  /** Relative ridge, or "auto": chosen per cut on held-out windows (see fitWithAutoRidge). */
  ridge?: number | "auto";
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

/** Relative ridges `--heal-ridge auto` tries, weakest first. */
export const AUTO_RIDGES = [1e-3, 1e-2, 1e-1, 1, 10, 100] as const;

/** What --heal-ridge auto chose for a cut, from the held-out windows' residuals. */
export interface AutoRidgeChoice {
  /** The ridge refitted on every window, or null: no ridge beat plain removal held out, so T = I (the cut is left plain). */
  ridge: number | null;
  heldOutTokens: number;
  /** Held-out relative residual of plain removal, and of each ridge's map (fitted without those windows). */
  heldOutPlain: number;
  heldOut: { ridge: number; residual: number }[];
}

/**
 * Every fifth window is held out: each ridge's map is fitted on the others and judged on them,
 * the best is refitted on all windows; a cut where no map beats plain removal held out stays
 * plain (T = I). Costs one pass of the model, as a fixed ridge does, plus a d^3 solve and check per ridge.
 */
async function fitWithAutoRidge(windows: readonly Window[], collect: (of: readonly Window[]) => Promise<LinearHealAccumulator[]>): Promise<{ fits: LinearHealFit[]; chosen: AutoRidgeChoice[] }> {
  const heldOutWindows = windows.filter((_, i) => i % 5 === 4);
  const fitWindows = windows.filter((_, i) => i % 5 !== 4);
  if (heldOutWindows.length === 0) {
    throw new OptionError(`--heal-ridge auto holds out every fifth calibration window to choose the ridge; there are ${windows.length}`, { option: "--heal-ridge", hint: "give at least 5 windows (more --max-tokens, shorter --seq-len) or a fixed --heal-ridge" });
  }
  const fitting = await collect(fitWindows);
  const heldOut = await collect(heldOutWindows);
  const fits: LinearHealFit[] = [];
  const chosen: AutoRidgeChoice[] = [];
  fitting.forEach((acc, i) => {
    const judge = heldOut[i]!;
    const tried = AUTO_RIDGES.map((r) => ({ ridge: r, ...judge.evaluate(acc.solve(r).map) }));
    const plain = tried[0]!.before;
    const best = tried.reduce((a, b) => (b.after < a.after ? b : a));
    const ridge = best.after < plain ? best.ridge : null;
    acc.merge(judge);
    fits.push(ridge === null ? acc.identity() : acc.solve(ridge));
    chosen.push({ ridge, heldOutTokens: judge.tokens, heldOutPlain: plain, heldOut: tried.map((t) => ({ ridge: t.ridge, residual: t.after })) });
  });
  return { fits, chosen };
}

/** Fits every cut's map on `windows` of the unpruned model and returns the replaced tensors for removeLayers. */
export async function fitLinearHeal(model: OpenedModel, removed: readonly number[], windows: readonly Window[], options: LinearHealOptions): Promise<LinearHeal> {
  const ridge = options.ridge ?? DEFAULT_HEAL_RIDGE;
  const cuts = healCuts(removed, model.config.nLayers);
  if (windows.length === 0) throw new OptionError("--heal linear needs calibration text: no windows", { option: "--data" });
  for (const c of cuts) downProjectionName(model, c.keptLayer);
  const collect = (of: readonly Window[]): Promise<LinearHealAccumulator[]> => collectHealStatistics(model, cuts, of, { backend: options.backend, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  let fits: LinearHealFit[];
  let chosen: AutoRidgeChoice[] | undefined;
  if (ridge === "auto") {
    ({ fits, chosen } = await fitWithAutoRidge(windows, collect));
  } else {
    fits = (await collect(windows)).map((a) => a.solve(ridge));
  }
  const folded = foldHealMaps(model, new Map(cuts.map((c, i) => [c.keptLayer, fits[i]!.map])));
  const cutRecords = cuts.map((c, i): HealCutRecord => {
    const fit = fits[i]!;
    const names = model.names.layer(c.keptLayer);
    return {
      removed: Array.from({ length: c.last - c.first + 1 }, (_, k) => c.first + k), foldedInto: c.keptLayer,
      tensors: [downProjectionName(model, c.keptLayer), ...(names.bDown !== undefined && folded.has(names.bDown) ? [names.bDown] : [])],
      tokens: fit.tokens, lambda: fit.lambda, relativeResidualBefore: fit.residualBefore, relativeResidualAfter: fit.residualAfter,
      ...(chosen ? { auto: chosen[i]! } : {}),
    };
  });
  return { replacedTensors: storedBytes(folded), folded, record: { method: "linear", ridge, cuts: cutRecords }, maps: new Map(cuts.map((c, i) => [c.keptLayer, fits[i]!.map])) };
}

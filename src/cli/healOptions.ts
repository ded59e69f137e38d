// The --heal options of compare and sweep: fit a linear healing map for a removal set on the
// calibration windows and give back the model as the healed file would read (for runEvals).

import type { DecoderBackend } from "../backend/backend.js";
import type { Window } from "../data/windows.js";
import { healedProvider } from "../heal/fold.js";
import { fitLinearHeal, type HealMethod, type HealRecord, parseHealMethod } from "../heal/healLinear.js";
import type { OpenedModel } from "../load.js";
import { num, type OptionSpec, type Parsed, str } from "./args.js";
import { Progress } from "./progress.js";

export const HEAL_OPTIONS: OptionSpec = { heal: { type: "string" }, "heal-ridge": { type: "string" } };

export interface HealChoice {
  method: HealMethod;
  ridge?: number | "auto";
}

/** --heal-ridge R (relative, >= 0) or auto (chosen per cut on held-out windows). */
export function healRidgeFromArgs(p: Parsed): number | "auto" | undefined {
  return str(p, "heal-ridge") === "auto" ? "auto" : num(p, "heal-ridge", 0);
}

export function healChoiceFromArgs(p: Parsed): HealChoice {
  const method = parseHealMethod(str(p, "heal"));
  const ridge = healRidgeFromArgs(p);
  return ridge === undefined ? { method } : { method, ridge };
}

/** A removal set healed: the model view to evaluate (with the set skipped), or why it cannot be healed. */
export type HealedVariant = { model: OpenedModel; record: HealRecord } | { skipped: string };

export async function healedVariant(opened: OpenedModel, layers: readonly number[], windows: readonly Window[], backend: DecoderBackend, choice: HealChoice, label: string): Promise<HealedVariant> {
  // A run from layer 0 has no kept layer to fold into (healCuts refuses it): that row stays plain.
  if (layers.includes(0)) return { skipped: "layer 0 is removed: no kept layer before it to fold the map into" };
  const progress = new Progress(`${label} healing`, "token-layers");
  try {
    const healed = await fitLinearHeal(opened, layers, windows, { backend, ...(choice.ridge === undefined ? {} : { ridge: choice.ridge }), onProgress: progress.callback });
    return { model: { ...opened, provider: healedProvider(opened.provider, healed.folded) }, record: healed.record };
  } finally {
    progress.done();
  }
}

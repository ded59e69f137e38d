// Which layers to remove: an explicit list, or the K lowest-scoring ones.

import { OptionError } from "../errors.js";

/** Parses "3,5,7" into sorted unique layer indices, refusing duplicates and out-of-range values. */
export function parseLayerList(text: string, nLayers: number, option = "--layers"): number[] {
  const parts = text.split(",").map((s) => s.trim());
  const layers: number[] = [];
  for (const part of parts) {
    if (!/^\d+$/.test(part)) {
      throw new OptionError(`${option} "${text}": "${part}" is not a layer index`, { option, hint: `give comma-separated 0-based layer indices below ${nLayers}, e.g. 2,3` });
    }
    const layer = Number(part);
    if (layer >= nLayers) {
      throw new OptionError(`${option}: layer ${layer} is out of range; the model has layers 0..${nLayers - 1}`, { option, expected: `< ${nLayers}`, got: layer });
    }
    if (layers.includes(layer)) throw new OptionError(`${option}: layer ${layer} is listed twice`, { option, got: layer, hint: "list each layer once" });
    layers.push(layer);
  }
  return layers.sort((a, b) => a - b);
}

/** Checks that removing `layers` leaves at least one layer. */
export function checkRemovable(layers: readonly number[], nLayers: number, option: string): void {
  if (layers.length >= nLayers) {
    throw new OptionError(`${option}: removing ${layers.length} of ${nLayers} layers would leave none`, { option, expected: `< ${nLayers}`, got: layers.length, hint: `remove at most ${nLayers - 1} layers` });
  }
}

/** The k first layers of a least-important-first ranking, sorted by index. */
export function lowestK(ranking: readonly number[], k: number, nLayers: number): number[] {
  checkRemoveCount(k, nLayers);
  return ranking.slice(0, k).sort((a, b) => a - b);
}

/** --remove K must leave at least one layer. */
export function checkRemoveCount(k: number, nLayers: number): void {
  if (!Number.isInteger(k) || k < 1 || k >= nLayers) {
    throw new OptionError(`--remove ${k}: must be an integer from 1 to ${nLayers - 1} (the model has ${nLayers} layers)`, {
      option: "--remove", expected: `1..${nLayers - 1}`, got: k,
    });
  }
}

/** old layer index -> new index for the layers that remain. */
export function renumbering(removed: readonly number[], nLayers: number): Map<number, number> {
  const map = new Map<number, number>();
  let next = 0;
  for (let layer = 0; layer < nLayers; layer++) if (!removed.includes(layer)) map.set(layer, next++);
  return map;
}

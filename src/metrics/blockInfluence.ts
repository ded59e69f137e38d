// Block Influence (ShortGPT, Eq. 1): BI_i = 1 - mean over tokens of cos(x_i, x_{i+1}), where
// x_i enters layer i and x_{i+1} leaves it. Fed only through the model's layer hooks.

import type { LayerHooks } from "../models/llama.js";
import { CosineAccumulator } from "./cosine.js";

export interface LayerScore {
  layer: number;
  bi: number;
  cosine: number;
}

export interface BlockInfluenceResult {
  metric: "bi";
  tokens: number;
  windows: number;
  layers: LayerScore[];
  /** Layers ordered from least to most influential (lowest BI first); ties keep layer order. */
  ranking: number[];
}

/** Collects cosines from the hooks; `result()` turns them into BI scores. */
export class BlockInfluence implements LayerHooks {
  private readonly acc: CosineAccumulator;
  private windows = 0;
  private tokens = 0;

  constructor(private readonly nLayers: number) {
    this.acc = new CosineAccumulator(nLayers);
  }

  onLayer(layer: number, input: Float32Array | Float64Array, output: Float32Array | Float64Array, nTokens: number, dim: number): void {
    this.acc.add(layer, input, output, nTokens, dim);
  }

  /** Per-token cosines of one layer computed elsewhere (a backend's rowStats). */
  addCosines(layer: number, cosines: Float64Array): void {
    this.acc.addSums(layer, cosines.reduce((a, b) => a + b, 0), cosines.length);
  }

  /** Marks the end of one window (for the token and window counts). */
  windowDone(nTokens: number): void {
    this.windows += 1;
    this.tokens += nTokens;
  }

  result(): BlockInfluenceResult {
    const layers: LayerScore[] = [];
    for (let layer = 0; layer < this.nLayers; layer++) {
      if (this.acc.counts[layer] === 0) continue; // skipped layers are not scored
      const cosine = this.acc.mean(layer);
      layers.push({ layer, bi: 1 - cosine, cosine });
    }
    return { metric: "bi", tokens: this.tokens, windows: this.windows, layers, ranking: rankAscending(layers) };
  }
}

export function rankAscending(layers: readonly LayerScore[]): number[] {
  return [...layers].sort((a, b) => a.bi - b.bi || a.layer - b.layer).map((s) => s.layer);
}

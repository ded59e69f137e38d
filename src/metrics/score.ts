// Runs calibration windows through a model and scores its layers.

import type { Window } from "../data/windows.js";
import type { LlamaModel } from "../models/llama.js";
import { BlockInfluence, type BlockInfluenceResult } from "./blockInfluence.js";

export interface ScoreOptions {
  skip?: ReadonlySet<number>;
  /** Called after each window with tokens done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/** Block Influence of every layer over the windows; the vocabulary projection is never computed. */
export function blockInfluence(model: LlamaModel, windows: readonly Window[], options: ScoreOptions = {}): BlockInfluenceResult {
  const bi = new BlockInfluence(model.nLayers);
  const total = windows.reduce((n, w) => n + w.tokens.length, 0);
  let done = 0;
  for (const window of windows) {
    model.forward(window.tokens, { hooks: bi, logits: "none", ...(options.skip ? { skip: options.skip } : {}) });
    bi.windowDone(window.tokens.length);
    done += window.tokens.length;
    options.onProgress?.(done, total);
  }
  return bi.result();
}

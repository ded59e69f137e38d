// Runs the unpruned model over calibration windows, layer by layer, and feeds each cut's fit:
// at the kept layer p before a run of removed layers i..j it takes the residual after p's
// attention (r) and p's MLP output (m), and at layer j the residual leaving it (y). Only one
// cut is pending at a time, so memory is the batch states plus one copy of (m, r), whatever the depth.

import type { DecoderBackend, HiddenStates, PreparedLayer } from "../backend/backend.js";
import type { Window } from "../data/windows.js";
import { OptionError } from "../errors.js";
import { loadLlamaLayer } from "../models/llama.js";
import { type BatchInfo, layerShape, releaseBatches, runLayersStreaming, type StreamingSource } from "../models/streaming.js";
import { LinearHealAccumulator } from "./linearFit.js";

/** A maximal run of removed layers first..last and the kept layer before it, whose MLP absorbs the map. */
export interface HealCut {
  first: number;
  last: number;
  keptLayer: number;
}

/** The cuts of a removal set; a run that starts at layer 0 has no kept layer before it and is refused. */
export function healCuts(removed: readonly number[], nLayers: number): HealCut[] {
  const sorted = [...new Set(removed)].sort((a, b) => a - b);
  const cuts: HealCut[] = [];
  for (const layer of sorted) {
    const last = cuts[cuts.length - 1];
    if (last && layer === last.last + 1) last.last = layer;
    else cuts.push({ first: layer, last: layer, keptLayer: layer - 1 });
  }
  for (const cut of cuts) {
    if (cut.keptLayer < 0) {
      throw new OptionError(`--heal linear: layer 0 is removed, so no kept layer comes before layers 0..${cut.last} to absorb the healing map`, {
        option: "--heal", got: sorted.join(","), hint: "keep layer 0 (--keep-first 1), or prune with --heal none",
      });
    }
    if (cut.last >= nLayers) throw new OptionError(`--heal linear: layer ${cut.last} is out of range (${nLayers} layers)`, { option: "--layers" });
  }
  return cuts;
}

export interface CollectOptions {
  backend: DecoderBackend;
  onProgress?: (done: number, total: number) => void;
}

/** The states of layer p that (r, m) come from, kept per batch until layer j's output arrives. */
interface Pending {
  m: Float32Array;
  r: Float32Array;
}

/**
 * One accumulator per cut, filled from one streaming pass of the unpruned model over `windows`
 * (layers after the last cut do not run). r comes from layer p run again with its down
 * projection (and bias) zeroed, on the same backend: then the layer's output is exactly
 * x + attention(x), so no backend needs a new operation; m = output(p) - r.
 */
export async function collectHealStatistics(source: StreamingSource, cuts: readonly HealCut[], windows: readonly Window[], options: CollectOptions): Promise<LinearHealAccumulator[]> {
  const { config, provider, names } = source;
  const { backend } = options;
  const shape = layerShape(config);
  const accumulators = cuts.map(() => new LinearHealAccumulator(config.dim));
  const byKept = new Map(cuts.map((c, i) => [c.keptLayer, i]));
  const byLast = new Map(cuts.map((c, i) => [c.last, i]));
  const pending = new Map<BatchInfo, Pending>();
  let attentionOnly: { layer: number; prepared: PreparedLayer } | undefined;
  const lastNeeded = Math.max(...cuts.map((c) => c.last));
  const skip = new Set<number>();
  for (let layer = lastNeeded + 1; layer < config.nLayers; layer++) skip.add(layer);

  const hooks = {
    async onLayer(layer: number, input: HiddenStates, output: HiddenStates, batch: BatchInfo, b: DecoderBackend): Promise<void> {
      const kept = byKept.get(layer);
      if (kept !== undefined) {
        if (attentionOnly?.layer !== layer) {
          const prepared = await b.prepareLayer(`heal:${provider.source}/layer${layer}/attention-only`, () => {
            const w = loadLlamaLayer(provider, config, names, layer);
            return { ...w, wDown: new Float32Array(w.wDown.length), ...(w.bDown ? { bDown: new Float32Array(w.bDown.length) } : {}) };
          }, shape);
          attentionOnly = { layer, prepared };
        }
        const rStates = await b.runLayer(input, batch.windows.length, batch.seqLen, attentionOnly.prepared, shape);
        try {
          const r = (await b.readRows(rStates)).slice();
          const h = await b.readRows(output);
          const m = new Float32Array(r.length);
          for (let k = 0; k < m.length; k++) m[k] = h[k]! - r[k]!;
          pending.set(batch, { m, r });
        } finally {
          b.release(rStates);
        }
      }
      const cut = byLast.get(layer);
      if (cut !== undefined) {
        const held = pending.get(batch);
        if (!held) throw new Error(`internal: no states of layer ${cuts[cut]!.keptLayer} for a batch at layer ${layer}`);
        const y = await b.readRows(output);
        accumulators[cut]!.add(held.m, held.r, y, output.rows);
        pending.delete(batch);
      }
    },
  };
  releaseBatches(await runLayersStreaming(source, windows, { backend, skip, hooks, ...(options.onProgress ? { onProgress: options.onProgress } : {}) }), backend);
  return accumulators;
}

// Folds fitted healing maps into the kept layers' down projections: W_down' = T W_down (and
// b_down' = T b_down), re-encoded in each tensor's stored dtype, so that the pruned checkpoint
// keeps its architecture and tensor list and loads everywhere unchanged.

import { isRecurrentShape } from "../backend/backend.js";
import { UnsupportedError } from "../errors.js";
import type { OpenedModel } from "../load.js";
import { isConv1dWeight, transpose } from "../models/gpt2.js";
import { layerShape } from "../models/llama.js";
import { decodeToF32 } from "../tensor/dtype.js";
import { encodeF32, isWritableDtype } from "../tensor/encode.js";
import type { TensorProvider } from "../tensor/provider.js";

/** W' = T W for T (dim x dim) and W (dim x cols), both row-major; float64 sums, float32 result. */
export function applyMap(map: Float64Array, w: Float32Array, dim: number, cols: number): Float32Array {
  const out = new Float32Array(dim * cols);
  const row = new Float64Array(cols);
  for (let i = 0; i < dim; i++) {
    row.fill(0);
    for (let j = 0; j < dim; j++) {
      const t = map[i * dim + j]!;
      if (t === 0) continue;
      const o = j * cols;
      for (let c = 0; c < cols; c++) row[c]! += t * w[o + c]!;
    }
    out.set(row, i * cols);
  }
  return out;
}

/** A folded tensor: its stored bytes, and the canonical float32 values a loader reads back from them. */
export interface FoldedTensor {
  bytes: Uint8Array;
  values: Float32Array;
}

/** The stored bytes of a tensor the model reads as canonical float32 values, and the values read back (after rounding to the dtype). */
function encodeStored(model: OpenedModel, name: string, canonical: Float32Array, shape: readonly number[]): FoldedTensor {
  const entry = model.provider.entries().find((e) => e.name === name);
  if (!entry) throw new Error(`internal: ${name} is not a tensor of ${model.path}`);
  if (!isWritableDtype(entry.dtype)) {
    throw new UnsupportedError(`--heal linear: ${model.path}: tensor ${name} is stored as ${entry.dtype}, which shortgpt cannot re-encode after folding the map into it`, {
      file: model.path, tensor: name, got: entry.dtype, hint: "convert the model to f16, bf16, q8_0 or q4_0 first (shortgpt convert), or prune with --heal none",
    });
  }
  // Hugging Face GPT-2 stores Conv1D weights (in, out): back from the canonical (out, in).
  const conv1d = model.format === "hf" && model.architecture === "gpt2" && isConv1dWeight(name);
  const bytes = encodeF32(conv1d ? transpose(canonical, shape[0]!, shape[1]!) : canonical, entry.dtype);
  const decoded = new Float32Array(canonical.length);
  if (!decodeToF32(entry.dtype, bytes, decoded)) throw new Error(`internal: cannot decode ${entry.dtype}`);
  return { bytes, values: conv1d ? transpose(decoded, shape[1]!, shape[0]!) : decoded };
}

/**
 * The stored name of a layer's MLP down projection; recurrent blocks have none to fold into (Mamba
 * has no MLP; RWKV's channel-mixing value projection is gated by sigmoid(r) before the residual add).
 */
export function downProjectionName(model: OpenedModel, layer: number): string {
  const name = model.names.layer(layer).wDown;
  if (name === undefined || isRecurrentShape(layerShape(model.config))) {
    throw new UnsupportedError("--heal linear folds the map into an MLP down projection, which a recurrent block (Mamba, RWKV) does not have", { option: "--heal", hint: "prune this model with --heal none" });
  }
  return name;
}

/** For each kept layer and its map, the down projection (and bias) with the map folded in, by stored tensor name. */
export function foldHealMaps(model: OpenedModel, maps: ReadonlyMap<number, Float64Array>): Map<string, FoldedTensor> {
  const { dim, hiddenDim } = model.config;
  const replaced = new Map<string, FoldedTensor>();
  for (const [layer, map] of maps) {
    const names = model.names.layer(layer);
    const wDown = downProjectionName(model, layer);
    const w = applyMap(map, model.provider.readF32(wDown), dim, hiddenDim);
    replaced.set(wDown, encodeStored(model, wDown, w, [dim, hiddenDim]));
    if (names.bDown !== undefined && model.provider.entries().some((e) => e.name === names.bDown)) {
      replaced.set(names.bDown, encodeStored(model, names.bDown, applyMap(map, model.provider.readF32(names.bDown), dim, 1), [dim]));
    }
  }
  return replaced;
}

/** The stored bytes of folded tensors, as removeLayers' replacedTensors takes them. */
export function storedBytes(folded: ReadonlyMap<string, FoldedTensor>): Map<string, Uint8Array> {
  return new Map([...folded].map(([name, t]) => [name, t.bytes]));
}

/**
 * The checkpoint as the healed file will read: folded tensors replaced, the rest unchanged. With
 * the removed layers skipped it computes exactly what the written file computes (compare, sweep).
 */
export function healedProvider(provider: TensorProvider, folded: ReadonlyMap<string, FoldedTensor>): TensorProvider {
  return {
    source: `${provider.source} (healed)`,
    entries: () => provider.entries(),
    readF32: (name) => folded.get(name)?.values.slice() ?? provider.readF32(name),
  };
}

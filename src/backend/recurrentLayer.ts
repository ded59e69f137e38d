// The recurrent layer kinds behind one call: a state per kind and the reference block that
// advances it, for the reference backend (a zero state per window) and generation (a state
// carried across calls), and the batched twins the onnx backends run (projections through a
// LinearKernel over every window's tokens, scans in TypeScript).

import { isRecurrentShape, type LayerShape, type LayerWeightsF32, mambaDimsOf, rwkvAttDimOf } from "./backend.js";
import type { LinearKernel } from "./linearKernel.js";
import { batchedMambaLayer, type MambaState, referenceMambaLayer, zeroMambaState } from "./mambaLayer.js";
import { batchedRwkv4Layer, referenceRwkv4Layer, type Rwkv4State, zeroRwkv4State } from "./rwkv4Layer.js";

export type RecurrentState = { kind: "mamba"; mamba: MambaState } | { kind: "rwkv4"; rwkv4: Rwkv4State };

/** The state a sequence starts from, for a layer of a recurrent kind. */
export function zeroRecurrentState(shape: LayerShape): RecurrentState {
  if (shape.kind === "mamba") return { kind: "mamba", mamba: zeroMambaState(mambaDimsOf(shape)) };
  if (shape.kind === "rwkv4") return { kind: "rwkv4", rwkv4: zeroRwkv4State(shape.dim, rwkvAttDimOf(shape)) };
  throw new Error(`internal: a layer of kind ${shape.kind ?? "attention"} has no recurrent state`);
}

/** x: (T, dim) float64 through one recurrent layer, in place, continuing from (and advancing) the state. */
export function referenceRecurrentLayer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: RecurrentState): void {
  if (!isRecurrentShape(shape) || state.kind !== shape.kind) throw new Error(`internal: a ${state.kind} state was given to a layer of kind ${shape.kind ?? "attention"}`);
  if (state.kind === "mamba") referenceMambaLayer(x, T, w, shape, state.mamba);
  else referenceRwkv4Layer(x, T, w, shape, state.rwkv4);
}

/**
 * x: (nWindows * seqLen, dim) float32 through one recurrent layer, each window from a zero state,
 * the projections through `linear` -> a new array. A new kind adds its batched twin here.
 */
export function batchedRecurrentLayer(x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, linear: LinearKernel): Promise<Float32Array> {
  if (shape.kind === "mamba") return batchedMambaLayer(x, nWindows, seqLen, w, shape, linear);
  if (shape.kind === "rwkv4") return batchedRwkv4Layer(x, nWindows, seqLen, w, shape, linear);
  throw new Error(`internal: a layer of kind ${shape.kind ?? "attention"} has no batched recurrent twin`);
}

// The recurrent layer kinds behind one call: a state per kind and the reference block that
// advances it, for the reference backend (a zero state per window) and generation (a state
// carried across calls), and the batched twins the onnx backends run (projections through a
// LinearKernel over every window's tokens, scans in C through recurrentNative.ts or their
// TypeScript twins).

import { isRecurrentShape, type LayerShape, type LayerWeightsF32, mamba2DimsOf, mambaDimsOf, rwkv6DimsOf, rwkv7DimsOf, rwkvAttDimOf, type SideStreams } from "./backend.js";
import type { LinearKernel } from "./linearKernel.js";
import { type Mamba2State, referenceMamba2Layer, zeroMamba2State } from "./mamba2Layer.js";
import { batchedMambaLayer, type MambaState, referenceMambaLayer, zeroMambaState } from "./mambaLayer.js";
import { batchedRwkv4Layer, referenceRwkv4Layer, type Rwkv4State, zeroRwkv4State } from "./rwkv4Layer.js";
import { referenceRwkv6Layer, type Rwkv6State, zeroRwkv6State } from "./rwkv6Layer.js";
import { batchedRwkv7Layer, referenceRwkv7Layer, type Rwkv7State, zeroRwkv7State } from "./rwkv7Layer.js";

export type RecurrentState =
  | { kind: "mamba"; mamba: MambaState }
  | { kind: "mamba2"; mamba2: Mamba2State }
  | { kind: "rwkv4"; rwkv4: Rwkv4State }
  | { kind: "rwkv6"; rwkv6: Rwkv6State }
  | { kind: "rwkv7"; rwkv7: Rwkv7State };

/** The state a sequence starts from, for a layer of a recurrent kind. */
export function zeroRecurrentState(shape: LayerShape): RecurrentState {
  if (shape.kind === "mamba") return { kind: "mamba", mamba: zeroMambaState(mambaDimsOf(shape)) };
  if (shape.kind === "mamba2") return { kind: "mamba2", mamba2: zeroMamba2State(mamba2DimsOf(shape)) };
  if (shape.kind === "rwkv4") return { kind: "rwkv4", rwkv4: zeroRwkv4State(shape.dim, rwkvAttDimOf(shape)) };
  if (shape.kind === "rwkv6") return { kind: "rwkv6", rwkv6: zeroRwkv6State(shape.dim, rwkv6DimsOf(shape).headSize) };
  if (shape.kind === "rwkv7") return { kind: "rwkv7", rwkv7: zeroRwkv7State(shape.dim, rwkv7DimsOf(shape).headSize) };
  throw new Error(`internal: a layer of kind ${shape.kind ?? "attention"} has no recurrent state`);
}

/**
 * x: (T, dim) float64 through one recurrent layer, in place, continuing from (and advancing) the
 * state; side carries the T tokens' side streams from layer to layer (see SideStreams).
 */
export function referenceRecurrentLayer(x: Float64Array, T: number, w: LayerWeightsF32, shape: LayerShape, state: RecurrentState, side: SideStreams): void {
  if (!isRecurrentShape(shape) || state.kind !== shape.kind) throw new Error(`internal: a ${state.kind} state was given to a layer of kind ${shape.kind ?? "attention"}`);
  if (state.kind === "mamba") referenceMambaLayer(x, T, w, shape, state.mamba);
  else if (state.kind === "mamba2") referenceMamba2Layer(x, T, w, shape, state.mamba2);
  else if (state.kind === "rwkv4") referenceRwkv4Layer(x, T, w, shape, state.rwkv4);
  else if (state.kind === "rwkv6") referenceRwkv6Layer(x, T, w, shape, state.rwkv6);
  else referenceRwkv7Layer(x, T, w, shape, state.rwkv7, side);
}

/** Whether the layer's kind has a batched twin (its projections on a LinearKernel): Mamba, RWKV-4 and RWKV-7 so far. */
export function hasBatchedRecurrentLayer(shape: LayerShape): boolean {
  return shape.kind === "mamba" || shape.kind === "rwkv4" || shape.kind === "rwkv7";
}

/**
 * x: (nWindows * seqLen, dim) float32 through one recurrent layer, each window from a zero state,
 * the projections through `linear` -> a new array; side carries the rows' side streams (as in
 * referenceRecurrentLayer, over all the windows; absent: the layer starts them as the first);
 * threads: for the native scans (the backend's thread count). A new kind adds its batched twin here.
 */
export function batchedRecurrentLayer(
  x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, linear: LinearKernel, side: SideStreams = {}, threads = 1,
): Promise<Float32Array> {
  if (shape.kind === "mamba") return batchedMambaLayer(x, nWindows, seqLen, w, shape, linear, threads);
  if (shape.kind === "rwkv4") return batchedRwkv4Layer(x, nWindows, seqLen, w, shape, linear, threads);
  if (shape.kind === "rwkv7") return batchedRwkv7Layer(x, nWindows, seqLen, w, shape, linear, side, threads);
  throw new Error(`internal: a layer of kind ${shape.kind ?? "attention"} has no batched recurrent twin`);
}

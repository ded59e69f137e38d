// The one matrix product the batched recurrent layers need, x @ w^T over every token of a layer
// call, behind a function type: onnxruntime's Gemm on the onnx backends, the reference matmul as
// the plain twin. Any layer kind whose projections are independent of its scan can use it.

import { matmul } from "./reference.js";

/**
 * x: (rows, nIn) float32, w: (nOut, nIn) as stored -> (rows, nOut) = x @ w^T, a fresh array (or
 * the runtime's own output buffer). Async because the fast implementation runs in onnxruntime.
 */
export type LinearKernel = (x: Float32Array, rows: number, w: Float32Array, nOut: number, nIn: number) => Promise<Float32Array>;

/** The plain twin: float64 accumulation, rounded to float32 (tests compare the fast kernels' layers with it). */
export const plainLinear: LinearKernel = async (x, rows, w, nOut, nIn) => {
  const out = new Float64Array(rows * nOut);
  matmul(out, Float64Array.from(x), w, rows, nIn, nOut);
  return Float32Array.from(out);
};

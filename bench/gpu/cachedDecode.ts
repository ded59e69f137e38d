// One layer decoded through a backend's key/value cache in steps (a prompt, single tokens, more
// at once), the rows of every step gathered: the device checks and the emulated tests compare the
// result with one full causal pass over the same rows.

import type { DecodeSupport, DecoderBackend, LayerShape, PreparedLayer } from "../../src/backend/backend.js";

/** x: (sum of steps, dim) rows of one sequence; returns the layer's output rows in the same order. */
export async function runLayerInSteps(backend: DecoderBackend, decode: DecodeSupport, prepared: PreparedLayer, shape: LayerShape, x: Float32Array, steps: readonly number[]): Promise<Float32Array> {
  const total = steps.reduce((a, b) => a + b, 0);
  const cache = decode.createKvCache(1, total, shape);
  const got = new Float32Array(total * shape.dim);
  try {
    for (const n of steps) {
      const start = cache.length;
      const states = await backend.upload(x.slice(start * shape.dim, (start + n) * shape.dim), n, shape.dim);
      const out = await decode.runLayerCached(states, prepared, shape, cache, 0);
      got.set(await backend.readRows(out), start * shape.dim);
      backend.release(states);
      backend.release(out);
      cache.length += n;
    }
  } finally {
    decode.releaseKvCache(cache);
  }
  return got;
}

// The DecoderBackend built on the plain reference kernels: float32 in and out, float64
// activations inside, window by window. The twin every fast backend is tested against.

import { type DecoderBackend, type HeadResult, type LayerShape, type LayerWeightsF32, optionalLayerWeights, type PackedLayout } from "./backend.js";
import { logSumExp, matmul, rmsNorm, ropeInverseFrequencies } from "./reference.js";
import { referenceDecoderLayer } from "./referenceLayer.js";
import { OptionError } from "../errors.js";

export function createReferenceBackend(): DecoderBackend {
  return {
    name: "reference",
    threads: 1,
    // async, so argument errors reject the promise like the other backends' do
    async runLayer(x, nWindows, seqLen, weights, shape, layout) {
      checkLayerArgs(x, nWindows, seqLen, weights, shape, layout);
      const { dim } = shape;
      const out = new Float32Array(x.length);
      const win = new Float64Array(seqLen * dim);
      const kvDim = shape.nKvHeads * shape.headDim;
      const keys = new Float64Array(seqLen * kvDim);
      const values = new Float64Array(seqLen * kvDim);
      const invFreq = ropeInverseFrequencies(shape.headDim, shape.ropeTheta);
      for (let b = 0; b < nWindows; b++) {
        const span = x.subarray(b * seqLen * dim, (b + 1) * seqLen * dim);
        win.set(span);
        const windowLayout = layout && { positions: layout.positions.subarray(b * seqLen, (b + 1) * seqLen), branches: layout.branches.subarray(b * seqLen, (b + 1) * seqLen) };
        referenceDecoderLayer(win, seqLen, 0, weights, shape, keys, values, invFreq, windowLayout);
        out.set(win, b * seqLen * dim);
      }
      return out;
    },
    async runHead(x, nRows, finalNorm, classifier, vocabSize, normEps, targets): Promise<HeadResult> {
      const dim = checkHeadArgs(x, nRows, finalNorm, classifier, vocabSize, targets);
      const normed = new Float64Array(nRows * dim);
      rmsNorm(normed, Float64Array.from(x), finalNorm, nRows, dim, normEps);
      const logits = new Float64Array(nRows * vocabSize);
      matmul(logits, normed, classifier, nRows, dim, vocabSize);
      if (!targets) return { kind: "logits", logits: Float32Array.from(logits) };
      const lse = new Float32Array(nRows);
      const target = new Float32Array(nRows);
      for (let r = 0; r < nRows; r++) {
        lse[r] = logSumExp(logits, r * vocabSize, vocabSize);
        target[r] = logits[r * vocabSize + targets[r]!]!;
      }
      return { kind: "nll", logSumExp: lse, targetLogit: target };
    },
    async dispose() {},
  };
}

// Argument checks every DecoderBackend runs before computing, so a wrong length fails with a
// message naming the array instead of as garbage or a runtime shape error.
function expectLength(name: string, got: number, expected: number): void {
  if (got !== expected) throw new OptionError(`${name} has ${got} values, expected ${expected}`, { expected, got });
}

/** Checks x, the nine weights (and the optional ones) and a packed layout against the layer shape. */
export function checkLayerArgs(x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, layout?: PackedLayout): void {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim } = shape;
  if (!(Number.isInteger(nWindows) && nWindows > 0 && Number.isInteger(seqLen) && seqLen > 0)) {
    throw new OptionError(`runLayer needs positive integer nWindows and seqLen, got ${nWindows} and ${seqLen}`);
  }
  if (nHeads % nKvHeads !== 0 || headDim % 2 !== 0) throw new OptionError(`layer shape ${nHeads} heads / ${nKvHeads} KV heads / head size ${headDim} is not a valid Llama layer`);
  expectLength("x", x.length, nWindows * seqLen * dim);
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  expectLength("attnNorm", w.attnNorm.length, dim);
  expectLength("wq", w.wq.length, qDim * dim);
  expectLength("wk", w.wk.length, kvDim * dim);
  expectLength("wv", w.wv.length, kvDim * dim);
  expectLength("wo", w.wo.length, dim * qDim);
  expectLength("ffnNorm", w.ffnNorm.length, dim);
  expectLength("wGate", w.wGate.length, hiddenDim * dim);
  expectLength("wDown", w.wDown.length, dim * hiddenDim);
  expectLength("wUp", w.wUp.length, hiddenDim * dim);
  const optional: Record<string, number> = { bq: qDim, bk: kvDim, bv: kvDim, qNorm: headDim, kNorm: headDim };
  for (const name of optionalLayerWeights(shape)) {
    const v = w[name];
    if (!v) throw new OptionError(`the layer shape needs weight ${name}, which is missing`);
    expectLength(name, v.length, optional[name]!);
  }
  if (layout) checkLayout(layout, nWindows, seqLen);
}

/** One position and one branch per token, neither negative. */
function checkLayout(layout: PackedLayout, nWindows: number, seqLen: number): void {
  expectLength("layout.positions", layout.positions.length, nWindows * seqLen);
  expectLength("layout.branches", layout.branches.length, nWindows * seqLen);
  for (let i = 0; i < layout.positions.length; i++) {
    if (layout.positions[i]! < 0 || layout.branches[i]! < 0) throw new OptionError(`layout token ${i} has a negative position or branch`);
  }
}

/** Checks the head's arguments; returns dim. */
export function checkHeadArgs(x: Float32Array, nRows: number, finalNorm: Float32Array, classifier: Float32Array, vocabSize: number, targets?: Int32Array): number {
  const dim = finalNorm.length;
  if (!(Number.isInteger(nRows) && nRows > 0)) throw new OptionError(`runHead needs a positive integer row count, got ${nRows}`);
  expectLength("x", x.length, nRows * dim);
  expectLength("classifier", classifier.length, vocabSize * dim);
  if (targets) {
    expectLength("targets", targets.length, nRows);
    for (const t of targets) if (!(t >= 0 && t < vocabSize)) throw new OptionError(`target id ${t} is outside the vocabulary (0..${vocabSize - 1})`);
  }
  return dim;
}

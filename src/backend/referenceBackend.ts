// The DecoderBackend built on the plain reference kernels: float32 in and out, float64
// activations inside, window by window. The twin every fast backend is tested against.

import { type DecoderBackend, type HeadResult, type HostKernels, type HeadWeights, type LayerShape, type LayerWeightName, type LayerWeightsF32, layerWeightDims, type PackedLayout, isRecurrentShape, type SideStreams } from "./backend.js";
import { finalNorm, logSumExp, matmul, ropeInverseFrequencies, softcapInPlace } from "./reference.js";
import { referenceDecoderLayer } from "./referenceLayer.js";
import { referenceRecurrentLayer, zeroRecurrentState } from "./recurrentLayer.js";
import { OptionError } from "../errors.js";
import { hostBackend } from "./hostBackend.js";

export function createReferenceBackend(): DecoderBackend {
  return hostBackend(createReferenceKernels());
}

/** The reference arithmetic on host arrays (createReferenceBackend wraps it). */
export function createReferenceKernels(): HostKernels {
  return {
    name: "reference",
    threads: 1,
    // async, so argument errors reject the promise like the other backends' do
    async runLayer(x, nWindows, seqLen, weights, shape, layout, side) {
      checkLayerArgs(x, nWindows, seqLen, weights, shape, layout);
      if (side?.rwkv7VFirst) expectLength("side stream rwkv7VFirst", side.rwkv7VFirst.length, x.length);
      const { dim } = shape;
      const out = new Float32Array(x.length);
      const win = new Float64Array(seqLen * dim);
      const kvDim = shape.nKvHeads * shape.headDim;
      const keys = new Float64Array(seqLen * kvDim);
      const values = new Float64Array(seqLen * kvDim);
      const invFreq = ropeInverseFrequencies(shape.headDim, shape.ropeTheta, shape.ropeFreqFactors);
      // The side streams as they came in: the windows' layers read these, or start their own.
      const incoming: SideStreams = { ...side };
      for (let b = 0; b < nWindows; b++) {
        const span = x.subarray(b * seqLen * dim, (b + 1) * seqLen * dim);
        win.set(span);
        if (isRecurrentShape(shape)) {
          // A recurrence scans each window from a zero state (a packed layout cannot share a prefix here: see checkLayerArgs).
          const windowSide = windowSideStreams(incoming, b, seqLen * dim);
          referenceRecurrentLayer(win, seqLen, weights, shape, zeroRecurrentState(shape), windowSide);
          if (side) setWindowSideStreams(side, windowSide, b, nWindows, seqLen * dim);
          out.set(win, b * seqLen * dim);
          continue;
        }
        const windowLayout = layout && { positions: layout.positions.subarray(b * seqLen, (b + 1) * seqLen), branches: layout.branches.subarray(b * seqLen, (b + 1) * seqLen) };
        referenceDecoderLayer(win, seqLen, 0, weights, shape, keys, values, invFreq, windowLayout);
        out.set(win, b * seqLen * dim);
      }
      return out;
    },
    async runHead(x, nRows, head, vocabSize, normEps, targets): Promise<HeadResult> {
      const dim = checkHeadArgs(x, nRows, head, vocabSize, targets);
      const normed = new Float64Array(nRows * dim);
      finalNorm(normed, Float64Array.from(x), head, nRows, dim, normEps);
      const logits = new Float64Array(nRows * vocabSize);
      matmul(logits, normed, head.classifier, nRows, dim, vocabSize);
      if (head.logitSoftcap !== undefined) softcapInPlace(logits, logits.length, head.logitSoftcap);
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

/** Window b's rows of the side streams (views into them). */
function windowSideStreams(side: SideStreams, b: number, span: number): SideStreams {
  const vFirst = side.rwkv7VFirst;
  return vFirst ? { rwkv7VFirst: vFirst.subarray(b * span, (b + 1) * span) } : {};
}

/** Copies the side streams a window's layer started into the batch's (allocated at the first window). */
function setWindowSideStreams(side: SideStreams, windowSide: SideStreams, b: number, nWindows: number, span: number): void {
  const started = windowSide.rwkv7VFirst;
  if (started === undefined || started.buffer === side.rwkv7VFirst?.buffer) return;
  side.rwkv7VFirst ??= new Float64Array(nWindows * span);
  side.rwkv7VFirst.set(started, b * span);
}

// Argument checks every DecoderBackend runs before computing, so a wrong length fails with a
// message naming the array instead of as garbage or a runtime shape error.
function expectLength(name: string, got: number, expected: number): void {
  if (got !== expected) throw new OptionError(`${name} has ${got} values, expected ${expected}`, { expected, got });
}

/** Checks x, every weight the shape needs, and a packed layout against the layer shape. */
export function checkLayerArgs(x: Float32Array, nWindows: number, seqLen: number, w: LayerWeightsF32, shape: LayerShape, layout?: PackedLayout): void {
  checkStreamArgs(x, nWindows, seqLen, shape, layout);
  checkLayerWeights(w, shape);
}

/** checkLayerArgs without the weights: the windows, the stream's length and the packed layout. */
export function checkStreamArgs(x: Float32Array, nWindows: number, seqLen: number, shape: LayerShape, layout?: PackedLayout): void {
  const { dim, nHeads, nKvHeads, headDim } = shape;
  if (!(Number.isInteger(nWindows) && nWindows > 0 && Number.isInteger(seqLen) && seqLen > 0)) {
    throw new OptionError(`runLayer needs positive integer nWindows and seqLen, got ${nWindows} and ${seqLen}`);
  }
  if (isRecurrentShape(shape)) {
    if (layout) throw new OptionError(`a ${shape.kind} layer is a recurrence: it cannot run packed windows (tree attention); run one sequence per window`);
  } else if (nHeads % nKvHeads !== 0 || headDim % 2 !== 0) throw new OptionError(`layer shape ${nHeads} heads / ${nKvHeads} KV heads / head size ${headDim} is not a valid Llama layer`);
  expectLength("x", x.length, nWindows * seqLen * dim);
  if (layout) checkLayout(layout, nWindows, seqLen);
}

/** Every weight the shape needs is there with its length. */
export function checkLayerWeights(w: LayerWeightsF32, shape: LayerShape): void {
  for (const [name, dims] of Object.entries(layerWeightDims(shape)) as [LayerWeightName, number[]][]) {
    const v = w[name];
    if (!v) throw new OptionError(`the layer shape needs weight ${name}, which is missing`);
    expectLength(name, v.length, dims.reduce((a, b) => a * b, 1));
  }
}

/** One position and one branch per token, neither negative; a position is below seqLen (it never exceeds the token's index in the window). */
export function checkLayout(layout: PackedLayout, nWindows: number, seqLen: number): void {
  expectLength("layout.positions", layout.positions.length, nWindows * seqLen);
  expectLength("layout.branches", layout.branches.length, nWindows * seqLen);
  for (let i = 0; i < layout.positions.length; i++) {
    if (layout.positions[i]! < 0 || layout.branches[i]! < 0) throw new OptionError(`layout token ${i} has a negative position or branch`);
    if (layout.positions[i]! >= seqLen) throw new OptionError(`layout token ${i} has position ${layout.positions[i]}, beyond the window of ${seqLen}`);
  }
}

/** Checks the head's arguments; returns dim. */
export function checkHeadArgs(x: Float32Array, nRows: number, head: HeadWeights, vocabSize: number, targets?: Int32Array): number {
  const dim = head.finalNorm.length;
  if (!(Number.isInteger(nRows) && nRows > 0)) throw new OptionError(`runHead needs a positive integer row count, got ${nRows}`);
  expectLength("x", x.length, nRows * dim);
  expectLength("classifier", head.classifier.length, vocabSize * dim);
  if (head.finalNormBias) expectLength("finalNormBias", head.finalNormBias.length, dim);
  if (targets) {
    expectLength("targets", targets.length, nRows);
    for (const t of targets) if (!(t >= 0 && t < vocabSize)) throw new OptionError(`target id ${t} is outside the vocabulary (0..${vocabSize - 1})`);
  }
  return dim;
}

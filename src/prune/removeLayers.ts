// Removes whole layers from a checkpoint: drop their tensors, renumber the rest densely and
// patch every per-layer field. Tensor bytes are copied unchanged; no forward pass runs.

import { CheckpointError, UnsupportedError } from "../errors.js";
import { type GgufFile, type GgufTensorToWrite, GgufValueType, type GgufValue, readGguf, readGgufTensorBytes, readGgufTensorChunks, writeGguf } from "../formats/gguf.js";
import { readLlama2c, writeLlama2c, type Llama2cTensor } from "../formats/llama2c.js";
import { checkpointLocation, detectFormat, type CheckpointFormat } from "../load.js";
import { rwkv6RescaleExponent } from "../models/rwkv6.js";
import { EXACT_SCALE_DTYPES, scaleByPowerOfTwo } from "../tensor/encode.js";
import { checkOutputPath, writeAtomically } from "../util/atomicWrite.js";
import { ggufGemmaAttnScale, ggufGemmaLayerTypes, isGemmaSandwichArchitecture } from "../models/ggufFamilies.js";
import { checkRemovable, renumbering } from "./plan.js";
import { removeHfLayers } from "./removeLayersHf.js";

export interface RemoveLayersOptions {
  force?: boolean;
  /** New bytes for some kept tensors, by input tensor name (same dtype and byte length): healing's folded maps. */
  replacedTensors?: ReadonlyMap<string, Uint8Array>;
}

/** The replacement bytes of a tensor, checked to be a drop-in for the stored ones. */
export function replacementFor(replaced: ReadonlyMap<string, Uint8Array> | undefined, name: string, byteLength: number): Uint8Array | undefined {
  const bytes = replaced?.get(name);
  if (bytes && bytes.byteLength !== byteLength) throw new Error(`internal: replacement for ${name} has ${bytes.byteLength} bytes, the stored tensor ${byteLength}`);
  return bytes;
}

/** Every replaced tensor was written (a name that matched nothing would drop a fit silently). */
function checkAllReplaced(replaced: ReadonlyMap<string, Uint8Array> | undefined, used: ReadonlySet<string>): void {
  for (const name of replaced?.keys() ?? []) if (!used.has(name)) throw new Error(`internal: replacement for ${name} matched no kept tensor`);
}

export interface RemoveLayersResult {
  format: CheckpointFormat;
  input: string;
  output: string;
  removed: number[];
  layersBefore: number;
  layersAfter: number;
  bytesWritten: number;
  /**
   * What the pruned file makes llama.cpp compute differently for the layers kept (GGUF gemma2 and
   * gemma3, whose sliding layers and attention scale follow from positions and the layer count); empty otherwise.
   */
  changes: string[];
}

/** Writes `output`: `input` without `layers` (0-based), in the same format. */
export function removeLayers(named: string, output: string, layers: readonly number[], options: RemoveLayersOptions = {}): RemoveLayersResult {
  const input = checkpointLocation(named);
  checkOutputPath(output, { inputs: [input, named], force: options.force ?? false, option: "--out" });
  const format = detectFormat(input);
  if (format === "hf") {
    const r = removeHfLayers(input, output, layers, { force: options.force ?? false, ...(options.replacedTensors ? { replacedTensors: options.replacedTensors } : {}) });
    return { format, input, output, removed: r.removed, layersBefore: r.layersBefore, layersAfter: r.layersAfter, bytesWritten: r.bytesWritten, changes: [] };
  }
  return format === "gguf" ? removeGgufLayers(input, output, layers, options.replacedTensors) : removeLlama2cLayers(input, output, layers, options.replacedTensors);
}

const BLOCK_NAME = /^blk\.(\d+)\.(.+)$/;

function ggufBlockCount(gguf: GgufFile): { key: string; value: GgufValue; count: number } {
  const arch = gguf.metadata.get("general.architecture");
  const key = `${arch?.value ?? "llama"}.block_count`;
  const value = gguf.metadata.get(key);
  if (!value || value.type === GgufValueType.ARRAY) {
    throw new CheckpointError(`${gguf.path}: metadata ${key} is missing`, { file: gguf.path, hint: "cannot tell how many layers the model has" });
  }
  return { key, value, count: Number(value.value) };
}

/**
 * llama.cpp's RWKV-6 halves the stream after every rescale_every_n_layers blocks, with each block's
 * output weights divided by 2^floor(block / n) to match (its converter does this). Renumbering
 * blocks moves the halving, so kept blocks' output weights are rescaled by powers of two (exact in
 * F32, F16, BF16): the result is what the converter writes for the model without those blocks.
 * Returns n, 0 when the file has no rescaling; other architectures with the key are refused.
 */
function ggufRescaleEvery(gguf: GgufFile, archPrefix: string): number {
  const key = `${archPrefix}rescale_every_n_layers`;
  const value = gguf.metadata.get(key);
  if (value === undefined || value.type === GgufValueType.ARRAY || Number(value.value) === 0) return 0;
  if (archPrefix !== "rwkv6.") {
    throw new UnsupportedError(`${gguf.path}: removing blocks from a model with ${key} = ${value.value} is not supported (renumbering moves where the stream is halved)`, {
      file: gguf.path, option: "--layers", got: Number(value.value), hint: "only rwkv6 files with rescaling can be pruned",
    });
  }
  return Number(value.value);
}

/** The bytes of a kept RWKV-6 output weight moved to a block with another scale: multiplied by 2^exponent. */
function rescaledBytes(gguf: GgufFile, t: GgufFile["tensors"][number], exponent: number, rescaleKey: string): () => Uint8Array {
  if (!(EXACT_SCALE_DTYPES as readonly string[]).includes(t.type.name)) {
    throw new UnsupportedError(`${gguf.path}: tensor ${t.name} is ${t.type.name}; renumbering its block under ${rescaleKey} needs it multiplied by 2^${exponent}, which is exact only in ${EXACT_SCALE_DTYPES.join(", ")}`, {
      file: gguf.path, tensor: t.name, got: t.type.name, hint: "prune the F16 or F32 file and quantize the result with llama.cpp's llama-quantize",
    });
  }
  return () => scaleByPowerOfTwo(readGgufTensorBytes(gguf, t), t.type.name, exponent)!;
}

/**
 * rwkv7: llama.cpp loads block 0's value-residual LoRA (time_mix_v0/v1/v2) with the iclr rank and
 * never reads it (block 0 sets the value residual that later blocks mix in). When block 0 is
 * removed, the new first block keeps the old block 0's placeholder instead of its own LoRA (of
 * another rank where the two differ), so the file loads in llama.cpp; its bytes are unchanged.
 */
function firstBlockPlaceholder(gguf: GgufFile, newIndex: ReadonlyMap<number, number>): { keeps(layer: number, suffix: string): boolean | undefined } | undefined {
  if (gguf.metadata.get("general.architecture")?.value !== "rwkv7" || newIndex.has(0)) return undefined;
  const newFirst = [...newIndex].find(([, to]) => to === 0)?.[0];
  const isValueLora = (suffix: string): boolean => /^time_mix_v[012]\.weight$/.test(suffix);
  // true: keep (as block 0); false: drop; undefined: the ordinary rule.
  return { keeps: (layer, suffix) => (!isValueLora(suffix) ? undefined : layer === 0 ? true : layer === newFirst ? false : undefined) };
}

function removeGgufLayers(input: string, output: string, layers: readonly number[], replaced?: ReadonlyMap<string, Uint8Array>): RemoveLayersResult {
  const gguf = readGguf(input);
  try {
    const block = ggufBlockCount(gguf);
    const nLayers = block.count;
    checkRemovable(layers, nLayers, "--layers");
    for (const layer of layers) {
      if (layer < 0 || layer >= nLayers) throw new CheckpointError(`layer ${layer} is out of range for ${input} (${nLayers} layers)`, { file: input });
    }
    const newIndex = renumbering(layers, nLayers);
    const archPrefix = block.key.slice(0, -"block_count".length);
    const rescaleEvery = ggufRescaleEvery(gguf, archPrefix);

    // Metadata: the block count, and every per-layer array under the architecture's prefix.
    const metadata = new Map<string, GgufValue>();
    for (const [key, value] of gguf.metadata) {
      if (key === block.key) {
        metadata.set(key, { ...value, value: typeof value.value === "bigint" ? BigInt(nLayers - layers.length) : nLayers - layers.length } as GgufValue);
      } else if (key.startsWith(archPrefix) && value.type === GgufValueType.ARRAY && value.value.length === nLayers) {
        const kept = (value.value as unknown[]).filter((_, layer) => newIndex.has(layer));
        metadata.set(key, { ...value, value: kept } as GgufValue);
      } else {
        metadata.set(key, value);
      }
    }

    // Tensors: drop removed blocks, renumber the rest, keep the original order otherwise.
    const tensors: GgufTensorToWrite[] = [];
    const used = new Set<string>();
    const placeholder = firstBlockPlaceholder(gguf, newIndex);
    for (const t of gguf.tensors) {
      const match = BLOCK_NAME.exec(t.name);
      let name = t.name;
      if (match) {
        const layer = Number(match[1]);
        if (layer >= nLayers) throw new CheckpointError(`${input}: tensor ${t.name} belongs to layer ${layer} but ${block.key} is ${nLayers}`, { file: input, tensor: t.name });
        const to = newIndex.get(layer);
        const kept = placeholder?.keeps(layer, match[2]!);
        if (kept === false || (to === undefined && kept !== true)) continue;
        const target = kept ? 0 : to!;
        name = `blk.${target}.${match[2]}`;
        const exponent = rwkv6RescaleExponent(match[2]!, layer, target, rescaleEvery);
        if (exponent !== 0) {
          if (replaced?.has(t.name)) throw new Error(`internal: ${t.name} is both replaced and rescaled`);
          tensors.push({ name, dims: t.dims, type: t.type, byteLength: t.byteLength, bytes: rescaledBytes(gguf, t, exponent, `${archPrefix}rescale_every_n_layers`) });
          continue;
        }
      }
      const replacement = replacementFor(replaced, t.name, t.byteLength);
      if (replacement) used.add(t.name);
      tensors.push({ name, dims: t.dims, type: t.type, byteLength: t.byteLength, bytes: () => replacement ?? readGgufTensorChunks(gguf, t) });
    }
    checkAllReplaced(replaced, used);
    writeAtomically(output, (temp) => {
      writeGguf(temp, { version: gguf.version, alignment: gguf.alignment, metadata, tensors });
    });
    const bytesWritten = tensors.reduce((n, t) => n + t.byteLength, 0);
    return { format: "gguf", input, output, removed: [...layers], layersBefore: nLayers, layersAfter: nLayers - layers.length, bytesWritten, changes: ggufMeaningChanges(gguf, nLayers, newIndex) };
  } finally {
    gguf.file.close();
  }
}

/**
 * gemma2/gemma3 files do not store which layers slide: llama.cpp makes every 2nd (gemma2) or 6th
 * (gemma3) layer by position global, so a kept layer that moves can change type; nor the
 * attention scale, which depends on the layer count at 27B. The pruned file means what llama.cpp
 * computes (shortgpt reads it the same way); this says where that differs from the kept layers.
 */
function ggufMeaningChanges(gguf: GgufFile, nLayers: number, newIndex: ReadonlyMap<number, number>): string[] {
  const arch = String(gguf.metadata.get("general.architecture")?.value ?? "");
  if (!isGemmaSandwichArchitecture(arch)) return [];
  const changes: string[] = [];
  const window = gguf.metadata.get(`${arch}.attention.sliding_window`)?.value;
  if (arch === "gemma2" || (typeof window === "number" && window > 0)) {
    const before = ggufGemmaLayerTypes(arch, nLayers);
    const after = ggufGemmaLayerTypes(arch, newIndex.size);
    for (const [from, to] of newIndex) {
      if (before[from] !== after[to]) changes.push(`layer ${from} (now ${to}) was ${before[from]} and becomes ${after[to]}: llama.cpp's ${arch} makes every ${arch === "gemma2" ? "2nd" : "6th"} layer global by position`);
    }
  }
  const number = (key: string): number => Number(gguf.metadata.get(`${arch}.${key}`)?.value);
  const dim = number("embedding_length");
  const nHeads = number("attention.head_count");
  const headDim = gguf.metadata.has(`${arch}.attention.key_length`) ? number("attention.key_length") : dim / nHeads;
  const scale = (n: number): number => ggufGemmaAttnScale(arch, n, dim, nHeads, headDim) ?? 1 / Math.sqrt(headDim);
  if (scale(nLayers) !== scale(newIndex.size)) changes.push(`the attention scale changes from ${scale(nLayers)} to ${scale(newIndex.size)}: llama.cpp scales ${arch} at ${nLayers} layers (27B) by 1/sqrt(embedding / heads), otherwise by 1/sqrt(head_dim)`);
  return changes;
}

function removeLlama2cLayers(input: string, output: string, layers: readonly number[], replaced?: ReadonlyMap<string, Uint8Array>): RemoveLayersResult {
  const ckpt = readLlama2c(input);
  try {
    const nLayers = ckpt.header.nLayers;
    checkRemovable(layers, nLayers, "--layers");
    const newIndex = renumbering(layers, nLayers);
    // Index the input's tensors by (name with the new layer number) for the output layout to pick from.
    const source = new Map<string, Llama2cTensor>();
    for (const t of ckpt.tensors) {
      if (t.layer === undefined) {
        source.set(t.name, t);
        continue;
      }
      const to = newIndex.get(t.layer);
      if (to !== undefined) source.set(t.name.replace(/^layers\.\d+\./, `layers.${to}.`), t);
    }
    const header = { ...ckpt.header, nLayers: nLayers - layers.length };
    const used = new Set<string>();
    for (const t of source.values()) if (replacementFor(replaced, t.name, t.byteLength)) used.add(t.name);
    checkAllReplaced(replaced, used);
    let bytesWritten = 0;
    writeAtomically(output, (temp) => {
      writeLlama2c(temp, header, (t) => {
        const from = source.get(t.name);
        if (!from) throw new Error(`internal: no source for ${t.name}`);
        bytesWritten += from.byteLength;
        return replacementFor(replaced, from.name, from.byteLength) ?? ckpt.file.readChunks(from.offset, from.byteLength, `tensor ${from.name}`);
      });
    });
    return { format: "llama2c", input, output, removed: [...layers], layersBefore: nLayers, layersAfter: header.nLayers, bytesWritten, changes: [] };
  } finally {
    ckpt.file.close();
  }
}

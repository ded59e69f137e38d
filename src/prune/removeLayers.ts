// Removes whole layers from a checkpoint: drop their tensors, renumber the rest densely and
// patch every per-layer field. Tensor bytes are copied unchanged; no forward pass runs.

import { CheckpointError } from "../errors.js";
import { type GgufFile, type GgufTensorToWrite, GgufValueType, type GgufValue, readGguf, readGgufTensorChunks, writeGguf } from "../formats/gguf.js";
import { readLlama2c, writeLlama2c, type Llama2cTensor } from "../formats/llama2c.js";
import { checkpointLocation, detectFormat, type CheckpointFormat } from "../load.js";
import { checkOutputPath, writeAtomically } from "../util/atomicWrite.js";
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
}

/** Writes `output`: `input` without `layers` (0-based), in the same format. */
export function removeLayers(named: string, output: string, layers: readonly number[], options: RemoveLayersOptions = {}): RemoveLayersResult {
  const input = checkpointLocation(named);
  checkOutputPath(output, { inputs: [input, named], force: options.force ?? false, option: "--out" });
  const format = detectFormat(input);
  if (format === "hf") {
    const r = removeHfLayers(input, output, layers, { force: options.force ?? false, ...(options.replacedTensors ? { replacedTensors: options.replacedTensors } : {}) });
    return { format, input, output, removed: r.removed, layersBefore: r.layersBefore, layersAfter: r.layersAfter, bytesWritten: r.bytesWritten };
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
        name = `blk.${kept ? 0 : to}.${match[2]}`;
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
    return { format: "gguf", input, output, removed: [...layers], layersBefore: nLayers, layersAfter: nLayers - layers.length, bytesWritten };
  } finally {
    gguf.file.close();
  }
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
    return { format: "llama2c", input, output, removed: [...layers], layersBefore: nLayers, layersAfter: header.nLayers, bytesWritten };
  } finally {
    ckpt.file.close();
  }
}

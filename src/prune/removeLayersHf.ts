// Removes whole layers from a Hugging Face model directory: drop model.layers.N.* (GPT-2:
// h.N.*) of the removed layers, renumber the rest densely, patch config.json's per-layer fields and the
// shard index, copy the other files. Tensor bytes are streamed unchanged; no forward pass runs.

import { copyFileSync, existsSync, mkdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { claimTempPath, replaceDirectory } from "../util/atomicWrite.js";
import { basename, dirname, join, relative, resolve, isAbsolute } from "node:path";
import { CheckpointError, OutputError } from "../errors.js";
import { HF_CONFIG, HF_SHARD_INDEX, HF_SINGLE_WEIGHTS, type HfDirectory, type HfTensor, openHfDirectory } from "../formats/hfDirectory.js";
import { floatSpelledKeys, stringifyKeepingFloats } from "../formats/jsonFloats.js";
import { type SafetensorsTensorToWrite, writeSafetensors } from "../formats/safetensors.js";
import { checkRemovable, renumbering } from "./plan.js";
import { defaultGemmaLayerTypes, GEMMA_SANDWICH_MODEL_TYPES } from "../models/gemma2.js";

export interface RemoveHfLayersOptions {
  /** Replace an existing output directory (only once the new one is complete). */
  force?: boolean;
  /** New bytes for some kept tensors, by input tensor name (same dtype and byte length). */
  replacedTensors?: ReadonlyMap<string, Uint8Array>;
}

export interface RemoveHfLayersResult {
  input: string;
  output: string;
  removed: number[];
  layersBefore: number;
  layersAfter: number;
  /** Weight files written, in order. */
  weightFiles: string[];
  tensorsWritten: number;
  /** Sum of the tensors' bytes (the index's metadata.total_size). */
  bytesWritten: number;
  /** config.json keys that were changed. */
  patchedConfigKeys: string[];
  /** Files copied unchanged. */
  copied: string[];
  /** Input entries left out: sub-directories and other-format weights of the unpruned model. */
  skipped: string[];
}

/** A layer's tensor: Llama-style model.layers.N.*, Mamba's backbone.layers.N.*, RWKV's rwkv.blocks.N.*, or GPT-2's h.N.* (with or without "transformer."). */
const LAYER_TENSOR = /^(model\.layers\.|backbone\.layers\.|rwkv\.blocks\.|(?:transformer\.)?h\.)(\d+)\.(.+)$/;
/** RWKV's ln0: stored in block 0 but applied to the embedding, so it stays with whichever block comes first. */
const FIRST_BLOCK_ONLY = /^pre_ln\./;
/** The config.json fields that count the layers: transformers' usual name, GPT-2's. */
const LAYER_COUNT_KEYS = ["num_hidden_layers", "n_layer"];
/** Top-level config arrays that are never per-layer even when their length happens to match. */
const NOT_PER_LAYER = new Set(["architectures", "eos_token_id", "bos_token_id", "pad_token_id", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "forced_decoder_ids"]);
/** Weights of the unpruned model in other formats; copying them would leave a stale model beside the new one. */
export const STALE_WEIGHTS = /^pytorch_model.*\.bin(\.index\.json)?$|^tf_model.*\.h5(\.index\.json)?$|^flax_model.*\.msgpack(\.index\.json)?$|\.safetensors(\.index\.json)?$|\.(pth|pt|gguf|onnx|ckpt)$/;

function isInside(child: string, parent: string): boolean {
  const rel = relative(parent, child);
  return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
}

function realOrResolved(p: string): string {
  if (existsSync(p)) return realpathSync(p);
  // The output does not exist yet: resolve its parent's links so comparisons are fair.
  const parent = dirname(resolve(p));
  return existsSync(parent) ? join(realpathSync(parent), basename(p)) : resolve(p);
}

/** Refuses outputs that would overwrite, contain or sit inside the input, or exist without force. */
export function checkHfOutputDir(input: string, output: string, force: boolean): void {
  const inReal = realOrResolved(input);
  const outReal = realOrResolved(output);
  if (isInside(outReal, inReal)) {
    throw new OutputError(`--out ${output} is ${outReal === inReal ? "the input model directory" : "inside the input model directory"}; refusing to write there`, {
      file: output, option: "--out", hint: "choose an output directory outside the input",
    });
  }
  if (isInside(inReal, outReal)) {
    throw new OutputError(`--out ${output} contains the input model directory; replacing it would delete the input`, {
      file: output, option: "--out", hint: "choose a different output directory",
    });
  }
  if (existsSync(output) && !force) {
    throw new OutputError(`${output} already exists`, { file: output, option: "--out", hint: "choose another path or pass --force to replace it" });
  }
  if (!existsSync(dirname(resolve(output)))) {
    throw new OutputError(`the folder of ${output} does not exist`, { file: output, option: "--out", hint: "create the folder first" });
  }
}

/** The number of layers config.json declares. */
function configLayerCount(hf: HfDirectory): number {
  const key = LAYER_COUNT_KEYS.find((k) => k in hf.config) ?? LAYER_COUNT_KEYS[0]!;
  const n = hf.config[key];
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 1) {
    throw new CheckpointError(`${hf.configPath}: ${key} is ${JSON.stringify(n) ?? "missing"}`, {
      file: hf.configPath, hint: "cannot tell how many layers the model has",
    });
  }
  return n;
}

/** config.json with the layer count (num_hidden_layers or n_layer) patched and every top-level per-layer array filtered. */
export function patchHfConfig(config: Readonly<Record<string, unknown>>, nLayers: number, newIndex: ReadonlyMap<number, number>): { config: Record<string, unknown>; patched: string[] } {
  const out: Record<string, unknown> = {};
  const patched: string[] = [];
  // Gemma 2/3 without layer_types: transformers derives each layer's attention type from its
  // index, so the pruned config spells out the original types of the layers it keeps.
  const derived = derivedLayerTypes(config, nLayers);
  if (derived) config = { ...config, layer_types: derived };
  for (const [key, value] of Object.entries(config)) {
    if (LAYER_COUNT_KEYS.includes(key)) {
      out[key] = newIndex.size;
      patched.push(key);
    } else if (Array.isArray(value) && value.length === nLayers && !NOT_PER_LAYER.has(key)) {
      out[key] = value.filter((_, layer) => newIndex.has(layer));
      patched.push(key);
    } else {
      out[key] = value;
    }
  }
  return { config: out, patched };
}

/** The layer_types transformers derives for a Gemma 2/3 config that does not list them; undefined otherwise. */
function derivedLayerTypes(config: Readonly<Record<string, unknown>>, nLayers: number): string[] | undefined {
  const modelType = config["model_type"];
  if (typeof modelType !== "string" || !GEMMA_SANDWICH_MODEL_TYPES.has(modelType) || config["layer_types"] !== undefined) return undefined;
  const pattern = config["sliding_window_pattern"];
  return defaultGemmaLayerTypes(modelType, nLayers, typeof pattern === "number" ? pattern : undefined);
}

/** The output shard names: the transformers convention, numbered over the shards that remain. */
function shardName(i: number, n: number): string {
  const pad = (k: number): string => String(k).padStart(5, "0");
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

interface PlannedTensor {
  from: HfTensor;
  name: string;
}

/**
 * Writes `outputDir`: the model in `inputDir` without `layers` (0-based). The new directory is
 * built beside the output and renamed into place when complete; with `force` an existing
 * output is replaced only then. The input is only read.
 */
export function removeHfLayers(inputDir: string, outputDir: string, layerList: readonly number[], options: RemoveHfLayersOptions = {}): RemoveHfLayersResult {
  const layers = [...new Set(layerList)].sort((a, b) => a - b);
  const force = options.force ?? false;
  checkHfOutputDir(inputDir, outputDir, force);
  const hf = openHfDirectory(inputDir);
  try {
    const nLayers = configLayerCount(hf);
    checkRemovable(layers, nLayers, "--layers");
    for (const layer of layers) {
      if (!Number.isInteger(layer) || layer < 0 || layer >= nLayers) {
        throw new CheckpointError(`layer ${layer} is out of range for ${inputDir} (${nLayers} layers)`, { file: hf.configPath, expected: `0..${nLayers - 1}`, got: layer });
      }
    }
    const newIndex = renumbering(layers, nLayers);
    const replacement = (t: HfTensor): Uint8Array | undefined => {
      const bytes = options.replacedTensors?.get(t.name);
      if (bytes && bytes.byteLength !== t.byteLength) throw new Error(`internal: replacement for ${t.name} has ${bytes.byteLength} bytes, the stored tensor ${t.byteLength}`);
      return bytes;
    };

    // Plan: per input weight file, the tensors it keeps under their new names.
    const groups: PlannedTensor[][] = hf.weightFiles.map(() => []);
    for (const t of hf.tensors) {
      const match = LAYER_TENSOR.exec(t.name);
      let name = t.name;
      if (match) {
        const layer = Number(match[2]);
        if (layer >= nLayers) {
          throw new CheckpointError(`${join(inputDir, t.file)}: tensor ${t.name} belongs to layer ${layer} but num_hidden_layers is ${nLayers}`, {
            file: join(inputDir, t.file), tensor: t.name, hint: "config.json does not match the weights",
          });
        }
        const to = layer === 0 && FIRST_BLOCK_ONLY.test(match[3]!) ? 0 : newIndex.get(layer);
        if (to === undefined) continue;
        name = `${match[1]}${to}.${match[3]}`;
      }
      groups[hf.weightFiles.indexOf(t.file)]!.push({ from: t, name });
    }
    for (const name of options.replacedTensors?.keys() ?? []) {
      if (!groups.some((g) => g.some((p) => p.from.name === name))) throw new Error(`internal: replacement for ${name} matched no kept tensor`);
    }
    const kept = hf.index ? groups.map((g, i) => ({ source: hf.weightFiles[i]!, tensors: g })).filter((g) => g.tensors.length > 0) : [{ source: HF_SINGLE_WEIGHTS, tensors: groups[0]! }];
    const outFiles = hf.index ? kept.map((_, i) => shardName(i, kept.length)) : [HF_SINGLE_WEIGHTS];
    const { config, patched } = patchHfConfig(hf.config, nLayers, newIndex);
    const copied = hf.otherFiles.filter((f) => !STALE_WEIGHTS.test(f));
    const skipped = [...hf.otherFiles.filter((f) => STALE_WEIGHTS.test(f)), ...hf.subdirectories.map((d) => `${d}/`)];

    const temp = claimTempPath(outputDir);
    let tensorsWritten = 0;
    let bytesWritten = 0;
    try {
      mkdirSync(temp);
      // Phase 1: weight files, one tensor at a time, in chunks.
      const weightMap: Record<string, string> = {};
      kept.forEach((group, i) => {
        const file = outFiles[i]!;
        const tensors: SafetensorsTensorToWrite[] = group.tensors.map((p) => ({
          name: p.name, dtype: p.from.dtype, shape: p.from.shape, byteLength: p.from.byteLength,
          bytes: () => replacement(p.from) ?? hf.readTensorChunks(p.from.name),
        }));
        const result = writeSafetensors(join(temp, file), tensors, hf.fileMetadata.get(group.source) ?? {});
        tensorsWritten += tensors.length;
        bytesWritten += result.dataBytes;
        for (const p of group.tensors) weightMap[p.name] = file;
      });
      // Phase 2: the index (sorted keys, total_size of the tensor bytes) and config.json.
      if (hf.index) {
        const metadata: Record<string, unknown> = { ...hf.index.metadata, total_size: bytesWritten };
        if (typeof metadata["total_parameters"] === "number") {
          metadata["total_parameters"] = kept.reduce((n, g) => n + g.tensors.reduce((m, p) => m + p.from.shape.reduce((a, b) => a * b, 1), 0), 0);
        }
        const sortedMap: Record<string, string> = {};
        for (const name of Object.keys(weightMap).sort()) sortedMap[name] = weightMap[name]!;
        writeFileSync(join(temp, HF_SHARD_INDEX), JSON.stringify({ metadata, weight_map: sortedMap }, null, 2) + "\n", { flag: "wx" });
      }
      // Floats stay floats (3.0, not 3): transformers 5 refuses an int in a float field.
      writeFileSync(join(temp, HF_CONFIG), stringifyKeepingFloats(config, floatSpelledKeys(readFileSync(hf.configPath, "utf8"))) + "\n", { flag: "wx" });
      // Phase 3: everything else, unchanged.
      for (const f of copied) copyFileSync(join(inputDir, f), join(temp, f));
      // Phase 4: on disk, then into place; an existing output (force) is moved aside first and deleted last.
      replaceDirectory(temp, outputDir);
    } catch (err) {
      rmSync(temp, { recursive: true, force: true });
      throw err;
    }
    return {
      input: inputDir, output: outputDir, removed: layers, layersBefore: nLayers, layersAfter: newIndex.size,
      weightFiles: outFiles, tensorsWritten, bytesWritten, patchedConfigKeys: patched, copied, skipped,
    };
  } finally {
    hf.close();
  }
}

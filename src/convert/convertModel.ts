// shortgpt convert: a Llama checkpoint (HF directory, GGUF, llama2.c) rewritten as a GGUF file
// or a Hugging Face safetensors directory, in a chosen dtype. Tensors stream one at a time
// (read, expanded to float32, re-laid-out, encoded, written), so memory holds one tensor.

import { copyFileSync, existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { OptionError, UnsupportedError } from "../errors.js";
import { GGML_TYPE_BY_NAME, type GgufTensorToWrite, writeGguf } from "../formats/gguf.js";
import { type SafetensorsDtype, writeSafetensors, type SafetensorsTensorToWrite } from "../formats/safetensors.js";
import { checkpointLocation, type OpenedModel, openModel } from "../load.js";
import { HF_LLAMA_NAMES } from "../models/hfLlamaConfig.js";
import { GEMMA3_LOCAL_ROPE_THETA, ggufArchitectureOf, type GgufArchitecture, ggufGemmaAttnScale, ggufGemmaLayerTypes, ggufNames, isGemmaSandwichArchitecture } from "../models/ggufFamilies.js";
import { GGUF_ROPE_FACTORS_LONG, GGUF_ROPE_FACTORS_SHORT } from "../models/phi3.js";
import { type LayerWeightName, layerWeightDims } from "../backend/backend.js";
import { fusedPart, hfGpt2Names, isConv1dWeight, transpose } from "../models/gpt2.js";
import { GGUF_ROPE_FREQS, halfRowsToInterleaved, layerShape, type LlamaConfig, type LlamaTensorNames, loadLayerTensor, normWeight } from "../models/llama.js";
import { readLlama2cTokenizer } from "../tokenizer/llama2c.js";
import { toGgufMambaLayout } from "../models/mamba.js";
import { ggufMamba2Layout } from "../models/mamba2.js";
import { encodeF32, fitsRows, isWritableDtype, WRITABLE_DTYPES, type WritableDtype } from "../tensor/encode.js";
import { bpeTokenizerConfig } from "../tokenizer/bpe.js";
import { HfTokenizer } from "../tokenizer/hfTokenizer.js";
import { SentencePieceTokenizer } from "../tokenizer/sentencepiece.js";
import { checkOutputPath, claimTempPath, syncToDisk, writeAtomically } from "../util/atomicWrite.js";
import { ggufLlamaMetadata, GGUF_FILE_TYPE, type GgufVocabulary } from "./ggufMetadata.js";
import { hfConfigJson, HF_TOKENIZER_FILES } from "./hfOutput.js";
import { sentencePieceToTokenizerJson, sentencePieceTokenizerConfig } from "./hfTokenizerJson.js";

export const CONVERT_TARGETS = ["gguf", "safetensors"] as const;
export type ConvertTarget = (typeof CONVERT_TARGETS)[number];

/** The dtypes each target can hold. */
export const TARGET_DTYPES: Record<ConvertTarget, readonly WritableDtype[]> = {
  gguf: WRITABLE_DTYPES,
  safetensors: ["F32", "F16", "BF16"],
};

export interface ConvertOptions {
  to: ConvertTarget;
  /** Weight matrices' dtype; norms stay F32 (as llama.cpp keeps 1-D tensors). Default F32. */
  dtype?: string;
  /** llama2.c tokenizer path, when it is not beside the checkpoint. */
  tokenizer?: string;
  force?: boolean;
  /** Called after each tensor is written. */
  onTensor?: (done: number, total: number, name: string) => void;
}

export interface ConvertResult {
  input: string;
  output: string;
  from: string;
  to: ConvertTarget;
  dtype: WritableDtype;
  tensors: number;
  bytesWritten: number;
  /** Tensors stored in another dtype than asked, and why. */
  fallbacks: { tensor: string; dtype: WritableDtype; reason: string }[];
  /** What happened to the tokenizer: written from the vocabulary, copied as files, or not carried. */
  tokenizer: "written" | "copied" | "none";
}

/** One tensor of the model in the canonical (rotate-half, row-major [out, in]) layout. */
interface LogicalTensor {
  role: keyof LlamaTensorNames | "layer";
  /** Key inside the layer record for layer tensors. */
  key?: string;
  layer?: number;
  shape: number[];
  read(): Float32Array;
}

function logicalTensors(opened: OpenedModel): LogicalTensor[] {
  const { config, provider, names } = opened;
  const stored = new Set(provider.entries().map((e) => e.name));
  const { dim, vocabSize } = config;
  const tensors: LogicalTensor[] = [{ role: "embedding", shape: [vocabSize, dim], read: () => provider.readF32(names.embedding) }];
  if (config.learnedPositions) tensors.push({ role: "positionEmbedding", shape: [config.contextLength, dim], read: () => provider.readF32(names.positionEmbedding!) });
  tensors.push({ role: "finalNorm", shape: [dim], read: () => normWeight(provider.readF32(names.finalNorm), config) });
  if (config.layerNorm) tensors.push({ role: "finalNormBias", shape: [dim], read: () => provider.readF32(names.finalNormBias!) });
  if (stored.has(names.classifier)) tensors.push({ role: "classifier", shape: [vocabSize, dim], read: () => provider.readF32(names.classifier) });
  const shapes = layerWeightDims(layerShape(config));
  for (let layer = 0; layer < config.nLayers; layer++) {
    for (const [key, shape] of Object.entries(shapes) as [LayerWeightName, number[]][]) {
      tensors.push({ role: "layer", key, layer, shape, read: () => loadLayerTensor(provider, config, names, layer, key) });
    }
  }
  return tensors;
}

/** The tensor's name and values in the target's naming and Q/K layout. */
function targetName(t: LogicalTensor, names: LlamaTensorNames): string {
  if (t.role !== "layer") return names[t.role] as string;
  return (names.layer(t.layer!) as Record<string, string>)[t.key!]!;
}

/**
 * A tensor's values as a GGUF of `names` stores them: Q/K rows interleaved for "llama" (only
 * it uses that RoPE layout). Norms stay as the scale they apply (llama.cpp's Gemma files hold 1 + w).
 */
function forGguf(t: LogicalTensor, config: LlamaConfig, names: LlamaTensorNames): Float32Array {
  const w = t.read();
  if (names.interleavedRope && t.key === "wq") return halfRowsToInterleaved(w, config.nHeads, config.headDim, config.dim);
  if (names.interleavedRope && t.key === "wk") return halfRowsToInterleaved(w, config.nKvHeads, config.headDim, config.dim);
  return w;
}

/** A tensor as the GGUF file stores it: its name, shape and values in the file's layout. */
interface StoredTensor {
  name: string;
  shape: number[];
  values(): Float32Array;
}

/**
 * The tensors a file of `names` stores, in order: one per logical tensor, except that parts
 * named "<name>#q|#k|#v" (GPT-2's attn_qkv / c_attn) are stacked, rows of q then k then v,
 * into one tensor. `valuesOf` gives a logical tensor's values in the file's layout.
 */
function storedTensorList(logical: readonly LogicalTensor[], names: LlamaTensorNames, valuesOf: (t: LogicalTensor) => Float32Array): StoredTensor[] {
  const out: StoredTensor[] = [];
  const fused = new Map<string, { tensor: StoredTensor; parts: LogicalTensor[] }>();
  for (const t of logical) {
    const name = targetName(t, names);
    const part = fusedPart(name);
    if (!part) {
      out.push({ name, shape: t.shape, values: () => valuesOf(t) });
      continue;
    }
    let group = fused.get(part.fused);
    if (!group) {
      const parts: LogicalTensor[] = [];
      const tensor: StoredTensor = {
        name: part.fused, shape: [0, ...t.shape.slice(1)],
        values: () => {
          const values = parts.map(valuesOf);
          const all = new Float32Array(values.reduce((n, v) => n + v.length, 0));
          let at = 0;
          for (const v of values) {
            all.set(v, at);
            at += v.length;
          }
          return all;
        },
      };
      group = { tensor, parts };
      fused.set(part.fused, group);
      out.push(tensor);
    }
    group.parts[part.index] = t;
    group.tensor.shape[0]! += t.shape[0]!;
  }
  return out;
}

/**
 * A Hugging Face file's tensors: Llama-family names (Gemma's norms stored as w for its scale
 * 1 + w), or GPT-2's with c_attn stacked and every Conv1D weight stored (in, out).
 */
function hfTensorList(logical: readonly LogicalTensor[], config: LlamaConfig, family: GgufArchitecture, tied: boolean): StoredTensor[] {
  if (family !== "gpt2") {
    const isNorm = (t: LogicalTensor): boolean => t.role === "finalNorm" || t.key === "attnNorm" || t.key === "ffnNorm";
    return storedTensorList(logical, HF_LLAMA_NAMES, (t) => (family === "gemma" && isNorm(t) ? t.read().map((v) => v - 1) : t.read()));
  }
  return storedTensorList(logical, hfGpt2Names("transformer.", config.nLayers, tied), (t) => t.read()).map((t) => {
    if (!isConv1dWeight(t.name)) return t;
    const [rows, cols] = t.shape as [number, number];
    return { name: t.name, shape: [cols, rows], values: () => transpose(t.values(), rows, cols) };
  });
}

/**
 * llama.cpp's replacement for a K-quant whose rows are not whole blocks of 256 (llama_tensor_get_type
 * in llama-quant.cpp): Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and F16 when that does not fit either.
 */
const K_QUANT_FALLBACK: Partial<Record<WritableDtype, WritableDtype>> = { Q4_K: "Q5_0", Q5_K: "Q5_1", Q6_K: "Q8_0" };

/** The dtype one tensor is stored in: 1-D tensors F32; quantized only when rows split into whole blocks. */
function chooseDtype(shape: readonly number[], dtype: WritableDtype, fallbacks: ConvertResult["fallbacks"], name: string): WritableDtype {
  if (shape.length === 1) return "F32";
  const rowLength = shape[shape.length - 1]!;
  if (fitsRows(dtype, rowLength)) return dtype;
  const blockSize = GGML_TYPE_BY_NAME.get(dtype)!.blockSize;
  const reason = `rows of ${rowLength} elements are not whole ${dtype} blocks of ${blockSize}`;
  const next = K_QUANT_FALLBACK[dtype];
  if (next !== undefined && fitsRows(next, rowLength)) {
    fallbacks.push({ tensor: name, dtype: next, reason: `${reason} (llama.cpp's fallback)` });
    return next;
  }
  fallbacks.push({ tensor: name, dtype: "F16", reason });
  return "F16";
}

function parseDtype(options: ConvertOptions): WritableDtype {
  const dtype = options.dtype ?? "F32";
  const allowed = TARGET_DTYPES[options.to];
  if (!isWritableDtype(dtype) || !allowed.includes(dtype)) {
    throw new OptionError(`--dtype ${dtype} cannot be written to ${options.to}`, { option: "--dtype", got: dtype, hint: `choose one of: ${allowed.join(", ")}` });
  }
  return dtype;
}

export function convertModel(input: string, output: string, options: ConvertOptions): ConvertResult {
  if (!(CONVERT_TARGETS as readonly string[]).includes(options.to)) {
    throw new OptionError(`--to ${options.to} is not a known target`, { option: "--to", got: options.to, hint: `choose one of: ${CONVERT_TARGETS.join(", ")}` });
  }
  const dtype = parseDtype(options);
  // The input may be named by its model.safetensors: the folder it stands for must not be replaced either.
  checkOutputPath(output, { inputs: [input, checkpointLocation(input)], force: options.force ?? false, option: "OUT" });
  const opened = openModel(input, options.tokenizer === undefined ? {} : { tokenizer: options.tokenizer });
  try {
    if (options.to === "gguf") return toGguf(opened, output, dtype, options);
    refuseAttentionFamilies(opened);
    return toSafetensors(opened, output, dtype, options);
  } finally {
    opened.close();
  }
}

/** Gemma 2/3 and Phi-3 have no safetensors writer here yet: writing them as Gemma or Llama would change the model. */
function refuseAttentionFamilies(opened: OpenedModel): void {
  const c = opened.config;
  if (c.postNorms || c.layerTypes !== undefined || c.ropeAttentionFactor !== undefined || c.logitSoftcap !== undefined || c.attnScale !== undefined || opened.architecture === "phi3") {
    throw new UnsupportedError(`${opened.path}: converting ${opened.architecture} checkpoints to safetensors is not supported yet`, {
      file: opened.path, hint: "prune and evaluate the Hugging Face directory directly (shortgpt prune writes the same format back), or convert it to GGUF",
    });
  }
}

/**
 * Refuses a model that llama.cpp would run differently from its GGUF file: gemma2/gemma3 files
 * cannot say which layers slide (llama.cpp derives it from the position), what the attention
 * scale is (1/sqrt(head_dim), or 1/sqrt(embedding / heads) at the 27B layer counts), the local
 * RoPE base (10000) or that a gemma2 soft-cap is off.
 */
function checkGgufRepresentable(opened: OpenedModel, arch: GgufArchitecture): void {
  if (!isGemmaSandwichArchitecture(arch)) return;
  const c = opened.config;
  const refuse = (what: string): never => {
    throw new UnsupportedError(`${opened.path}: ${what}; llama.cpp's ${arch} architecture would compute a different model from the GGUF file`, {
      file: opened.path, hint: "keep the Hugging Face directory (shortgpt scores, evaluates and prunes it directly)",
    });
  };
  const types = c.layerTypes ?? [];
  const llamaCppTypes = c.slidingWindow !== undefined ? ggufGemmaLayerTypes(arch, c.nLayers) : types.map(() => "full_attention");
  const moved = types.findIndex((t, i) => t !== llamaCppTypes[i]);
  if (moved >= 0) refuse(`layer ${moved} is ${types[moved]} but llama.cpp makes it ${llamaCppTypes[moved]} (${arch}: every ${arch === "gemma2" ? "2nd" : "6th"} layer global, by position)`);
  const scale = c.attnScale ?? 1 / Math.sqrt(c.headDim);
  const llamaCppScale = ggufGemmaAttnScale(arch, c.nLayers, c.dim, c.nHeads, c.headDim) ?? 1 / Math.sqrt(c.headDim);
  if (Math.abs(scale - llamaCppScale) > 1e-9 * llamaCppScale) refuse(`the attention scale is ${scale} (query_pre_attn_scalar ${scale ** -2}) but llama.cpp uses ${llamaCppScale}`);
  if (c.localRope && c.localRope.theta !== GEMMA3_LOCAL_ROPE_THETA) refuse(`the sliding layers' RoPE base is ${c.localRope.theta}, llama.cpp's is ${GEMMA3_LOCAL_ROPE_THETA}`);
  if (arch === "gemma2" && (c.attnSoftcap === undefined || c.logitSoftcap === undefined)) refuse("a soft-cap is off (llama.cpp's gemma2 always applies both)");
  if (arch === "gemma3" && c.logitSoftcap !== undefined) refuse("Gemma 3 with a final logit soft-cap is not written yet");
}

/**
 * The vocabulary for a GGUF file: the model's own SentencePiece one; a llama2.c tokenizer.bin
 * named with --tokenizer (for a Hugging Face input); or a byte-level BPE tokenizer.json.
 */
function ggufVocabularyOf(opened: OpenedModel, options: ConvertOptions): GgufVocabulary {
  if (opened.format === "hf" && options.tokenizer !== undefined) return { kind: "sentencepiece", vocab: readLlama2cTokenizer(options.tokenizer, opened.config.vocabSize).vocabulary };
  if (opened.tokenizer instanceof SentencePieceTokenizer) return { kind: "sentencepiece", vocab: opened.tokenizer.vocabulary };
  if (opened.tokenizer instanceof HfTokenizer) return { kind: "bpe", vocab: opened.tokenizer.bpeVocabulary() };
  throw new UnsupportedError(`${opened.path}: its tokenizer (${opened.tokenizer.description}) cannot be written as a GGUF vocabulary`, {
    file: opened.path, hint: "give a llama2.c tokenizer.bin with --tokenizer, or add the model's tokenizer.json to the directory",
  });
}

/** RWKV-6 is read with token_embd_norm folded into the embedding: convert does not write it back yet. */
function refuseRwkv6(opened: OpenedModel, family: GgufArchitecture): void {
  if (family !== "rwkv6") return;
  throw new UnsupportedError(`${opened.path}: converting an RWKV-6 model is not supported yet`, {
    file: opened.path, got: family, hint: "score, evaluate and prune the rwkv6 GGUF file as it is (shortgpt prune writes a GGUF llama.cpp loads); convert it with llama.cpp's tools",
  });
}

/** An rwkv7 GGUF is read through a view (token_embd_norm folded into the embedding, block 0's placeholder LoRA) that convert cannot write back yet. */
function refuseRwkv7(opened: OpenedModel, arch: GgufArchitecture): void {
  if (arch === "rwkv7") {
    throw new UnsupportedError(`${opened.path}: converting an rwkv7 model is not supported yet`, { file: opened.path, got: arch, hint: "score, evaluate and prune the rwkv7 GGUF file as it is (prune writes rwkv7 GGUF)" });
  }
}

function toGguf(opened: OpenedModel, output: string, dtype: WritableDtype, options: ConvertOptions): ConvertResult {
  const arch = ggufArchitectureOf(opened.config, opened.architecture); // first: a model with no GGUF architecture is refused before its tokenizer is read
  refuseRwkv6(opened, arch);
  refuseRwkv7(opened, arch);
  checkGgufRepresentable(opened, arch);
  const vocabulary = ggufVocabularyOf(opened, options);
  const names = ggufNames(arch);
  const fallbacks: ConvertResult["fallbacks"] = [];
  const listed = storedTensorList(logicalTensors(opened), names, (t) => forGguf(t, opened.config, names));
  // Mamba: the conv stored 2-D and A instead of A_log, as llama.cpp's converter writes them.
  // Mamba-2: also A and D as (nHeads, 1) and the gated norm's weight as (nGroups, dInner / nGroups).
  const { mamba2 } = opened.config;
  const layout = arch === "mamba" ? toGgufMambaLayout : arch === "mamba2" && mamba2 ? ggufMamba2Layout(mamba2) : undefined;
  const stored = !layout ? listed : listed.map((t): StoredTensor => ({
    name: t.name, shape: layout(t.name, t.shape, new Float32Array(0)).shape, values: () => layout(t.name, t.shape, t.values()).values,
  }));
  // Llama 3's RoPE scaling travels as llama.cpp's rope_freqs tensor (other architectures: metadata, see ggufMetadata).
  const factors = opened.config.ropeFreqFactors;
  if (factors && arch === "llama") stored.push({ name: GGUF_ROPE_FREQS, shape: [factors.length], values: () => Float32Array.from(factors) });
  // Phi-3's LongRoPE: both factor sets as tensors, as llama.cpp's converter writes them (it picks one by context size).
  const longRope = opened.config.longRope;
  if (factors && longRope && arch === "phi3") {
    stored.push({ name: GGUF_ROPE_FACTORS_LONG, shape: [longRope.longFactors.length], values: () => Float32Array.from(longRope.longFactors) });
    stored.push({ name: GGUF_ROPE_FACTORS_SHORT, shape: [factors.length], values: () => Float32Array.from(factors) });
  }
  let done = 0;
  const tensors: GgufTensorToWrite[] = stored.map((t) => {
    const storedDtype = chooseDtype(t.shape, dtype, fallbacks, t.name);
    const type = GGML_TYPE_BY_NAME.get(storedDtype)!;
    const count = t.shape.reduce((a, b) => a * b, 1);
    return {
      name: t.name, dims: [...t.shape].reverse(), type, byteLength: (count / type.blockSize) * type.blockBytes,
      bytes: () => {
        const bytes = encodeF32(t.values(), storedDtype);
        options.onTensor?.(++done, stored.length, t.name);
        return bytes;
      },
    };
  });
  const metadata = ggufLlamaMetadata(arch, opened.config, vocabulary, {
    name: basename(opened.path).replace(/\.(gguf|bin)$/, ""),
    fileType: GGUF_FILE_TYPE[dtype],
    quantized: dtype !== "F32" && dtype !== "F16" && dtype !== "BF16",
  });
  writeAtomically(output, (temp) => writeGguf(temp, { version: 3, alignment: 32, metadata, tensors }));
  return {
    input: opened.path, output, from: opened.format, to: "gguf", dtype, tensors: tensors.length,
    bytesWritten: tensors.reduce((n, t) => n + t.byteLength, 0), fallbacks, tokenizer: "written",
  };
}

function toSafetensors(opened: OpenedModel, output: string, dtype: WritableDtype, options: ConvertOptions): ConvertResult {
  if (opened.config.mamba2) throw new UnsupportedError(`${opened.path}: writing a Mamba-2 model as safetensors is not supported yet`, { file: opened.path, hint: "convert it to GGUF, or keep the Hugging Face directory" });
  const logical = logicalTensors(opened);
  const family = ggufArchitectureOf(opened.config, opened.architecture);
  refuseRwkv6(opened, family);
  refuseRwkv7(opened, family);
  if (family === "mamba") throw new UnsupportedError(`${opened.path}: writing a Mamba model as safetensors is not supported yet`, { file: opened.path, hint: "convert it to GGUF, or keep the Hugging Face directory" });
  const tied = !logical.some((t) => t.role === "classifier");
  const stored = hfTensorList(logical, opened.config, family, tied);
  let done = 0;
  const tensors: SafetensorsTensorToWrite[] = stored.map((t) => {
    // Hugging Face checkpoints keep every tensor, norms included, in the model's dtype.
    const count = t.shape.reduce((a, b) => a * b, 1);
    return {
      name: t.name, dtype: dtype as SafetensorsDtype, shape: t.shape, byteLength: count * (dtype === "F32" ? 4 : 2),
      bytes: () => {
        const bytes = encodeF32(t.values(), dtype);
        options.onTensor?.(++done, stored.length, t.name);
        return bytes;
      },
    };
  });
  const temp = claimTempPath(output);
  let tokenizer: ConvertResult["tokenizer"] = "none";
  let bytesWritten = 0;
  try {
    mkdirSync(temp);
    bytesWritten = writeSafetensors(join(temp, "model.safetensors"), tensors, { format: "pt" }).dataBytes;
    writeFileSync(join(temp, "config.json"), JSON.stringify(hfConfigJson(family, opened.config, opened.tokenizer, dtype, tied), null, 2) + "\n", { flag: "wx" });
    if (opened.tokenizer instanceof SentencePieceTokenizer) {
      const vocab = opened.tokenizer.vocabulary;
      writeFileSync(join(temp, "tokenizer.json"), JSON.stringify(sentencePieceToTokenizerJson(vocab), null, 2) + "\n", { flag: "wx" });
      writeFileSync(join(temp, "tokenizer_config.json"), JSON.stringify(sentencePieceTokenizerConfig(vocab), null, 2) + "\n", { flag: "wx" });
      tokenizer = "written";
    } else if (opened.format === "gguf" && opened.tokenizer instanceof HfTokenizer) {
      // A GGUF BPE vocabulary: its tokenizer.json was built from the file's tokens and merges when it was opened.
      writeFileSync(join(temp, "tokenizer.json"), JSON.stringify(opened.tokenizer.json, null, 2) + "\n", { flag: "wx" });
      writeFileSync(join(temp, "tokenizer_config.json"), JSON.stringify(bpeTokenizerConfig(opened.tokenizer.bpeVocabulary()), null, 2) + "\n", { flag: "wx" });
      tokenizer = "written";
    } else if (opened.format === "hf") {
      for (const f of HF_TOKENIZER_FILES) {
        if (existsSync(join(opened.path, f))) {
          copyFileSync(join(opened.path, f), join(temp, f));
          tokenizer = "copied";
        }
      }
    }
    syncToDisk(temp);
    if (existsSync(output)) rmSync(output, { recursive: true, force: true });
    renameSync(temp, output);
  } catch (err) {
    rmSync(temp, { recursive: true, force: true });
    throw err;
  }
  return { input: opened.path, output, from: opened.format, to: "safetensors", dtype, tensors: tensors.length, bytesWritten, fallbacks: [], tokenizer };
}

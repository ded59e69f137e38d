// Opens a checkpoint file, detects its format, resolves the model config once, loads the
// weights strictly and attaches the tokenizer. The one place that joins formats and models.

import { readdirSync } from "node:fs";
import { freemem } from "node:os";
import { basename, dirname, join } from "node:path";
import { CheckpointError, TokenizerError, UnsupportedError } from "./errors.js";
import { fileSystemError, pathKind, RandomAccessFile } from "./formats/file.js";
import { GGUF_MAGIC, type GgufFile, ggufNumber, ggufString, readGguf, readGgufTensorBytes } from "./formats/gguf.js";
import { type HfDirectory, hfTensorProvider, isHfDirectory, openHfDirectory } from "./formats/hfDirectory.js";
import { LLAMA2C_MAGIC, type Llama2cFile, readLlama2c, readLlama2cTensor } from "./formats/llama2c.js";
import {
  assertLlamaSupported, checkLlamaConfig, checkLlamaTensors, GGUF_LLAMA_NAMES, GGUF_ROPE_FREQS, LLAMA2C_NAMES, type LlamaConfig, LlamaModel,
  type LlamaTensorNames, loadLlamaWeights,
} from "./models/llama.js";
import { COMPUTE_DTYPES, decodeToF32 } from "./tensor/dtype.js";
import type { TensorEntry, TensorProvider } from "./tensor/provider.js";
import { parseHfLlamaConfig, resolveHfLlamaConfig, hfLlamaTensorNames } from "./models/hfLlamaConfig.js";
import { readGgufTokenizer } from "./tokenizer/gguf.js";
import { BAICHUAN2_VOCAB_SIZE, baichuanView } from "./models/baichuan.js";
import { GGUF_ROPE_FACTORS_LONG, GGUF_ROPE_FACTORS_SHORT, phi3GgufView, phi3View } from "./models/phi3.js";
import { gpt2View, hfGpt2Names, hfGpt2Prefix, resolveHfGpt2Config } from "./models/gpt2.js";
import { GGUF_ARCHITECTURES, type GgufArchitecture, ggufFamilyFlags, ggufNames, isGgufArchitecture } from "./models/ggufFamilies.js";
import { ggufMambaView, hfMambaNames, isMambaConfigJson, mambaConfigFromGguf, resolveHfMambaConfig } from "./models/mamba.js";
import { ggufMamba2View, hfMamba2Names, isMamba2ConfigJson, mamba2ConfigFromGguf, resolveHfMamba2Config } from "./models/mamba2.js";
import { HF_RWKV_NAMES, isRwkvConfigJson, resolveHfRwkvConfig, rwkvView } from "./models/rwkv.js";
import { ggufRwkv6View, rwkv6ConfigFromGguf } from "./models/rwkv6.js";
import { ggufRwkv7View, rwkv7ConfigFromGguf } from "./models/rwkv7.js";
import { readHfTokenizer } from "./tokenizer/hfTokenizer.js";
import { MissingTokenizer } from "./tokenizer/missing.js";
import { readLlama2cTokenizer } from "./tokenizer/llama2c.js";
import type { Tokenizer } from "./tokenizer/tokenizer.js";
import type { HubSettings } from "./hub/cache.js";
import { downloadHubModel, type HubDownloadOptions } from "./hub/download.js";
import { parseHubId } from "./hub/repoId.js";

export type CheckpointFormat = "gguf" | "llama2c" | "hf";

export interface LoadedModel {
  path: string;
  format: CheckpointFormat;
  architecture: string;
  model: LlamaModel;
  tokenizer: Tokenizer;
  tokenizerPath: string;
  /** Stored dtype -> number of tensors of that dtype. */
  dtypes: Record<string, number>;
}

export interface LoadOptions {
  /** llama2.c only: the tokenizer.bin; default a tok*.bin or tokenizer.bin beside the checkpoint. */
  tokenizer?: string;
}

/** Files of a Hugging Face checkpoint that a user may name instead of its folder. */
const HF_MEMBER_FILE = /\.safetensors$|^config\.json$|^model\.safetensors\.index\.json$/i;

/**
 * Where the checkpoint named by `path` is: the folder when `path` is its model.safetensors (a
 * shard, config.json or the index) and the folder holds config.json; otherwise `path` itself.
 */
export function checkpointLocation(path: string): string {
  if (pathKind(path) !== "file" || !HF_MEMBER_FILE.test(basename(path))) return path;
  const dir = dirname(path);
  if (isHfDirectory(dir)) return dir;
  if (/\.safetensors$/i.test(path)) {
    throw new CheckpointError(`${path} is a safetensors file without config.json beside it`, {
      file: path, hint: "pass the folder of a Hugging Face checkpoint (config.json and *.safetensors); the config says how to read the weights",
    });
  }
  return path;
}

/** A directory is a Hugging Face checkpoint; for files, the first bytes tell GGUF and llama2.c apart. */
export function detectFormat(path: string): CheckpointFormat {
  if (pathKind(path) === "dir") {
    if (!isHfDirectory(path)) throw new CheckpointError(`${path} is a directory without config.json`, { file: path, hint: "pass a Hugging Face model directory, a .gguf file or a llama2.c .bin" });
    return "hf";
  }
  const file = new RandomAccessFile(path);
  try {
    if (file.size < 4) throw new CheckpointError(`${path} is ${file.size} bytes, too short for a model`, { file: path });
    const magic = file.read(0, 4, "magic").readUInt32LE(0);
    if (magic === GGUF_MAGIC) return "gguf";
    if (magic === LLAMA2C_MAGIC) return "llama2c";
    if (/\.gguf$/i.test(path)) throw new CheckpointError(`${path} has a .gguf name but no GGUF magic`, { file: path, hint: "the file is corrupt or not a GGUF model" });
    return "llama2c";
  } finally {
    file.close();
  }
}

/** The tokenizer file for a llama2.c checkpoint: given, or tokenizer.bin / tok*.bin beside it. */
export function findLlama2cTokenizer(checkpoint: string, given?: string): string {
  if (given !== undefined) {
    if (pathKind(given, TokenizerError) === "missing") throw new TokenizerError(`tokenizer file not found: ${given}`, { file: given, option: "--tokenizer" });
    return given;
  }
  const dir = dirname(checkpoint);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    throw fileSystemError(err, dir, TokenizerError);
  }
  const candidates = names.filter((f) => f === "tokenizer.bin" || /^tok.*\.bin$/.test(f)).sort();
  const chosen = candidates.includes("tokenizer.bin") ? "tokenizer.bin" : candidates[0];
  if (chosen === undefined) {
    throw new TokenizerError(`no tokenizer found beside ${checkpoint} (looked for tokenizer.bin or tok*.bin in ${dir})`, {
      file: checkpoint, option: "--tokenizer", hint: "pass --tokenizer FILE",
    });
  }
  if (candidates.length > 1 && chosen !== "tokenizer.bin") {
    throw new TokenizerError(`several tokenizers beside ${checkpoint}: ${candidates.join(", ")}`, { file: checkpoint, option: "--tokenizer", hint: "choose one with --tokenizer FILE" });
  }
  return join(dir, chosen);
}

function ggufProvider(gguf: GgufFile): TensorProvider {
  const byName = new Map(gguf.tensors.map((t) => [t.name, t]));
  return {
    source: gguf.path,
    entries: (): TensorEntry[] => gguf.tensors.map((t) => ({ name: t.name, shape: [...t.dims].reverse(), dtype: t.type.name })),
    readF32: (name: string): Float32Array => {
      const t = byName.get(name)!;
      const bytes = readGgufTensorBytes(gguf, t);
      const out = new Float32Array(t.dims.reduce((a, b) => a * b, 1));
      if (!decodeToF32(t.type.name, bytes, out)) {
        throw new UnsupportedError(`${gguf.path}: tensor ${name} is ${t.type.name}; computing with this type is not supported yet (${COMPUTE_DTYPES.join(", ")} are)`, {
          file: gguf.path, tensor: name, got: t.type.name,
          hint: "convert the model to F16 or F32 (shortgpt convert, or llama.cpp's tools), or prune it without evaluating (shortgpt prune --layers)",
        });
      }
      return out;
    },
  };
}

function llama2cProvider(ckpt: Llama2cFile): TensorProvider {
  const byName = new Map(ckpt.tensors.map((t) => [t.name, t]));
  return {
    source: ckpt.path,
    entries: (): TensorEntry[] => ckpt.tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: "F32" })),
    readF32: (name: string): Float32Array => readLlama2cTensor(ckpt, byName.get(name)!),
  };
}

function countDtypes(entries: TensorEntry[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const e of entries) counts[e.dtype] = (counts[e.dtype] ?? 0) + 1;
  return counts;
}

/** A GGUF family's tensors in the engine's layout (GPT-2's, Mamba's, Mamba-2's, Phi-3's fused ones split) or with its embedding norm applied (RWKV-6's, RWKV-7's). */
function ggufFamilyView(arch: GgufArchitecture, stored: TensorProvider, config: LlamaConfig): TensorProvider {
  if (arch === "gpt2") return gpt2View(stored, { conv1d: false });
  if (arch === "mamba") return ggufMambaView(stored);
  if (arch === "mamba2") return ggufMamba2View(stored);
  if (arch === "phi3") return phi3GgufView(stored, config);
  if (arch === "rwkv6") return ggufRwkv6View(stored, config.normEps, config.rwkvRescaleEvery);
  if (arch === "rwkv7") return ggufRwkv7View(stored, config);
  return stored;
}

/** Resolves the Llama config from GGUF metadata (llama.* keys), filling llama.cpp's defaults. */
export function llamaConfigFromGguf(gguf: GgufFile): LlamaConfig {
  const arch = ggufString(gguf, "general.architecture");
  if (!isGgufArchitecture(arch)) {
    throw new UnsupportedError(`${gguf.path}: architecture "${arch ?? "(missing)"}" is not supported yet (supported: ${GGUF_ARCHITECTURES.join(", ")})`, {
      file: gguf.path, got: arch ?? "(missing)", hint: `general.architecture must be one of: ${GGUF_ARCHITECTURES.join(", ")}`,
    });
  }
  if (arch === "mamba") {
    const embedding = gguf.tensors.find((t) => t.name === GGUF_LLAMA_NAMES.embedding);
    return mambaConfigFromGguf((key) => ggufNumber(gguf, `mamba.${key}`), (name) => gguf.tensors.some((t) => t.name === name), embedding?.dims[1] ?? 0, gguf.path);
  }
  if (arch === "mamba2") {
    const embedding = gguf.tensors.find((t) => t.name === GGUF_LLAMA_NAMES.embedding);
    return mamba2ConfigFromGguf((key) => ggufNumber(gguf, `mamba2.${key}`), (name) => gguf.tensors.some((t) => t.name === name), embedding?.dims[1] ?? 0, gguf.path);
  }
  if (arch === "rwkv6") {
    const embedding = gguf.tensors.find((t) => t.name === GGUF_LLAMA_NAMES.embedding);
    return rwkv6ConfigFromGguf((key) => ggufNumber(gguf, `rwkv6.${key}`), embedding?.dims[1] ?? 0, gguf.path);
  }
  if (arch === "rwkv7") {
    const embedding = gguf.tensors.find((t) => t.name === GGUF_LLAMA_NAMES.embedding);
    return rwkv7ConfigFromGguf((key) => ggufNumber(gguf, `rwkv7.${key}`), embedding?.dims[1] ?? 0, gguf.path);
  }
  const need = (key: string): number => {
    const v = ggufNumber(gguf, `${arch}.${key}`);
    if (v === undefined) throw new CheckpointError(`${gguf.path}: metadata ${arch}.${key} is missing`, { file: gguf.path, hint: "the GGUF file is incomplete" });
    return v;
  };
  const optional = (key: string): number | undefined => ggufNumber(gguf, `${arch}.${key}`);
  const dim = need("embedding_length");
  const nHeads = need("attention.head_count");
  // llama.cpp runs a 40-layer baichuan as Baichuan-13B, with ALiBi instead of RoPE.
  if (arch === "baichuan" && need("block_count") === 40) throw new UnsupportedError(`${gguf.path}: Baichuan 13B (ALiBi position bias) is not supported yet`, { file: gguf.path });
  const embedding = gguf.tensors.find((t) => t.name === GGUF_LLAMA_NAMES.embedding);
  const nLayers = need("block_count");
  const headDim = optional("attention.key_length") ?? dim / nHeads;
  const config: LlamaConfig = {
    nLayers,
    dim,
    hiddenDim: need("feed_forward_length"),
    nHeads,
    nKvHeads: optional("attention.head_count_kv") ?? nHeads,
    headDim,
    vocabSize: optional("vocab_size") ?? embedding?.dims[1] ?? 0,
    contextLength: need("context_length"),
    normEps: need(arch === "gpt2" ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon"),
    ropeTheta: optional("rope.freq_base") ?? 10000,
    ...ggufFamilyFlags(arch, dim, { number: optional, nLayers, nHeads, headDim }),
  };
  checkLlamaConfig(config, gguf.path); // before headDim sizes the RoPE factors
  assertLlamaSupported(optional("rope.dimension_count"), config.headDim, gguf.path);
  if (arch === "phi3") return withGgufLongRope(gguf, config);
  const factors = ggufRopeFreqFactors(gguf, arch, config.headDim);
  if (factors) config.ropeFreqFactors = factors;
  return config;
}

/** A GGUF tensor of headDim/2 positive RoPE factors, read as numbers. */
function ggufFactorTensor(gguf: GgufFile, name: string, headDim: number): number[] | undefined {
  const tensor = gguf.tensors.find((t) => t.name === name);
  if (!tensor) return undefined;
  if (tensor.dims.length !== 1 || tensor.dims[0] !== headDim / 2) {
    throw new CheckpointError(`${gguf.path}: tensor ${name} has shape [${tensor.dims.join(", ")}], expected [${headDim / 2}]`, { file: gguf.path, tensor: name, expected: `[${headDim / 2}]`, got: `[${tensor.dims.join(", ")}]`, hint: "the GGUF file is corrupt" });
  }
  const values = Array.from(ggufProvider(gguf).readF32(name));
  if (values.some((v) => !(v > 0))) throw new CheckpointError(`${gguf.path}: tensor ${name} holds a factor that is not positive`, { file: gguf.path, tensor: name, hint: "the GGUF file is corrupt" });
  return values;
}

/**
 * phi3's LongRoPE as llama.cpp runs it: rope_factors_short for contexts up to
 * rope.scaling.original_context_length (rope_factors_long beyond), q and k scaled by
 * rope.scaling.attn_factor. shortgpt takes the short factors and caps the context there, as
 * transformers does for sequences within the original context.
 */
function withGgufLongRope(gguf: GgufFile, config: LlamaConfig): LlamaConfig {
  const short = ggufFactorTensor(gguf, GGUF_ROPE_FACTORS_SHORT, config.headDim);
  const long = ggufFactorTensor(gguf, GGUF_ROPE_FACTORS_LONG, config.headDim);
  if (!short && !long) return config; // Phi-3 4k: plain RoPE
  if (!short || !long) {
    const missing = short ? GGUF_ROPE_FACTORS_LONG : GGUF_ROPE_FACTORS_SHORT;
    throw new CheckpointError(`${gguf.path}: tensor ${missing} is missing; LongRoPE needs both rope_factors_long and rope_factors_short`, { file: gguf.path, tensor: missing, hint: "the GGUF file is incomplete; re-convert it" });
  }
  const originalContext = ggufNumber(gguf, "phi3.rope.scaling.original_context_length") ?? config.contextLength;
  const attentionFactor = ggufNumber(gguf, "phi3.rope.scaling.attn_factor") ?? 1;
  if (!(originalContext > 0) || !(attentionFactor > 0)) throw new CheckpointError(`${gguf.path}: phi3.rope.scaling.original_context_length ${originalContext} / attn_factor ${attentionFactor} must be positive`, { file: gguf.path, hint: "the GGUF file is corrupt" });
  return {
    ...config, ropeFreqFactors: short, contextLength: Math.min(config.contextLength, originalContext),
    longRope: { longFactors: long, originalContext, trainedContext: config.contextLength },
    ...(attentionFactor !== 1 ? { ropeAttentionFactor: attentionFactor } : {}),
  };
}

/**
 * RoPE scaling in a GGUF file, as llama.cpp applies it: a rope_freqs tensor of headDim/2
 * divisors (how llama.cpp's converter stores Llama 3's scaling), or rope.scaling.type "linear"
 * with rope.scaling.factor. Other scaling types are refused.
 */
function ggufRopeFreqFactors(gguf: GgufFile, arch: string, headDim: number): number[] | undefined {
  const type = ggufString(gguf, `${arch}.rope.scaling.type`) ?? "none";
  const tensor = gguf.tensors.find((t) => t.name === GGUF_ROPE_FREQS);
  if (type !== "none" && type !== "linear") throw new UnsupportedError(`${gguf.path}: RoPE scaling type "${type}" is not supported yet (none, linear and rope_freqs are)`, { file: gguf.path, got: type });
  if (tensor) {
    if (tensor.dims.length !== 1 || tensor.dims[0] !== headDim / 2) {
      throw new CheckpointError(`${gguf.path}: tensor ${GGUF_ROPE_FREQS} has shape [${tensor.dims.join(", ")}], expected [${headDim / 2}]`, { file: gguf.path, tensor: GGUF_ROPE_FREQS });
    }
    const values = Array.from(ggufProvider(gguf).readF32(GGUF_ROPE_FREQS));
    if (values.some((v) => !(v > 0))) throw new CheckpointError(`${gguf.path}: tensor ${GGUF_ROPE_FREQS} holds a factor that is not positive`, { file: gguf.path, tensor: GGUF_ROPE_FREQS });
    if (type === "linear") throw new UnsupportedError(`${gguf.path}: both rope_freqs and linear RoPE scaling are set`, { file: gguf.path });
    return values;
  }
  if (type !== "linear") return undefined;
  const factor = ggufNumber(gguf, `${arch}.rope.scaling.factor`);
  if (!(factor !== undefined && factor > 0)) throw new CheckpointError(`${gguf.path}: ${arch}.rope.scaling.factor is ${factor ?? "missing"}`, { file: gguf.path });
  return new Array<number>(headDim / 2).fill(factor);
}

export function llamaConfigFromLlama2c(ckpt: Llama2cFile): LlamaConfig {
  const h = ckpt.header;
  // llama2.c models are trained with RMSNorm eps 1e-5 and RoPE theta 10000 (its model.py defaults).
  return {
    nLayers: h.nLayers, dim: h.dim, hiddenDim: h.hiddenDim, nHeads: h.nHeads, nKvHeads: h.nKvHeads,
    headDim: h.dim / h.nHeads, vocabSize: h.vocabSize, contextLength: h.seqLen, normEps: 1e-5, ropeTheta: 10000,
  };
}

/**
 * A checkpoint opened for streaming: config resolved, tokenizer attached, every tensor
 * name and shape checked strictly, but no weights read yet. Close it when done.
 */
export interface OpenedModel {
  path: string;
  format: CheckpointFormat;
  architecture: string;
  config: LlamaConfig;
  tokenizer: Tokenizer;
  tokenizerPath: string;
  /** Stored dtype -> number of tensors of that dtype. */
  dtypes: Record<string, number>;
  /** Lazy access to the stored tensors, one at a time. */
  provider: TensorProvider;
  names: LlamaTensorNames;
  close(): void;
}

/** The family of a Hugging Face directory: its config resolved once, its tensor names, and the view its quirks need. */
function hfFamily(hf: HfDirectory): { modelType: string; config: LlamaConfig; names: LlamaTensorNames; provider: TensorProvider } {
  const stored = hfTensorProvider(hf);
  if (hf.config["model_type"] === "gpt2") {
    const config = resolveHfGpt2Config(hf.config, hf.configPath);
    const tied = hf.config["tie_word_embeddings"] !== false;
    return { modelType: "gpt2", config, names: hfGpt2Names(hfGpt2Prefix(hf.tensors.map((t) => t.name)), config.nLayers, tied), provider: gpt2View(stored, { conv1d: true }) };
  }
  if (isMambaConfigJson(hf.config)) {
    const config = resolveHfMambaConfig(hf.config, hf.configPath);
    return { modelType: "mamba", config, names: hfMambaNames(hf.config["tie_word_embeddings"] !== false), provider: stored };
  }
  if (isMamba2ConfigJson(hf.config)) {
    const config = resolveHfMamba2Config(hf.config, hf.configPath);
    return { modelType: "mamba2", config, names: hfMamba2Names(hf.config["tie_word_embeddings"] === true), provider: stored };
  }
  if (isRwkvConfigJson(hf.config)) {
    const config = resolveHfRwkvConfig(hf.config, hf.configPath);
    return { modelType: "rwkv", config, names: HF_RWKV_NAMES, provider: rwkvView(stored, config.normEps) };
  }
  const raw = parseHfLlamaConfig(hf.config, hf.configPath);
  const config = resolveHfLlamaConfig(raw, hf.configPath);
  const names = hfLlamaTensorNames(raw, config, hf.tensors.map((t) => t.name), hf.dir);
  // Baichuan2 (its config has z_loss_weight; its vocabulary is 125696) normalizes the head; Baichuan 1 does not.
  const normalizeHead = "z_loss_weight" in hf.config || config.vocabSize === BAICHUAN2_VOCAB_SIZE;
  const provider = raw.model_type === "baichuan" ? baichuanView(stored, { normalizeHead }) : raw.model_type === "phi3" ? phi3View(stored, config) : stored;
  return { modelType: raw.model_type ?? "llama", config, names, provider };
}

/** Opens a Hugging Face directory: config.json resolved once, tensors indexed across shards. */
function openHfModel(path: string): OpenedModel {
  const hf = openHfDirectory(path);
  try {
    const { modelType, config, names, provider } = hfFamily(hf);
    checkLlamaTensors(provider, config, names);
    const id = (key: string): number => (typeof hf.config[key] === "number" ? (hf.config[key] as number) : -1);
    const tokenizer = readHfTokenizer(path, hf.config, config.vocabSize) ?? new MissingTokenizer(config.vocabSize, id("bos_token_id"), id("eos_token_id"), path);
    return {
      path, format: "hf", architecture: modelType, config, tokenizer, tokenizerPath: join(path, "tokenizer.json"), dtypes: countDtypes(provider.entries()),
      provider, names, close: () => hf.close(),
    };
  } catch (err) {
    hf.close();
    throw err;
  }
}

/**
 * The local path of a MODEL argument: the argument itself when it exists; otherwise, when it has
 * the form owner/name[@revision], the snapshot folder of that Hub model in the Hugging Face
 * cache, downloaded first where files are missing. openModel takes the result.
 */
export async function resolveModelPath(named: string, settings: HubSettings, options: HubDownloadOptions = {}): Promise<string> {
  if (pathKind(named) !== "missing") return named;
  const ref = parseHubId(named);
  if (ref === undefined) return named; // openModel then says the file is missing
  return (await downloadHubModel(ref, settings, options)).dir;
}

function looksLikeHubId(named: string): boolean {
  try {
    return parseHubId(named) !== undefined;
  } catch {
    return false;
  }
}

/** Opens a model checkpoint (Hugging Face directory, GGUF or llama2.c) with its tokenizer, reading no weights. */
export function openModel(named: string, options: LoadOptions = {}): OpenedModel {
  if (pathKind(named) === "missing") {
    throw new CheckpointError(`model file not found: ${named}`, {
      file: named, hint: looksLikeHubId(named) ? "for a Hub model owner/name, resolve it to its cached folder first with resolveModelPath (the CLI does)" : "check the path",
    });
  }
  const path = checkpointLocation(named);
  const format = detectFormat(path);
  if (format === "hf") return openHfModel(path);
  if (format === "gguf") {
    const gguf = readGguf(path);
    try {
      const config = llamaConfigFromGguf(gguf);
      const tokenizer = readGgufTokenizer(gguf);
      checkVocab(tokenizer, config, path);
      const arch = ggufString(gguf, "general.architecture") as GgufArchitecture;
      const provider = ggufFamilyView(arch, ggufProvider(gguf), config);
      const names = ggufNames(arch);
      checkLlamaTensors(provider, config, names);
      return {
        path, format, architecture: arch, config, tokenizer, tokenizerPath: path, dtypes: countDtypes(provider.entries()),
        provider, names, close: () => gguf.file.close(),
      };
    } catch (err) {
      gguf.file.close();
      throw err;
    }
  }
  const ckpt = readLlama2c(path);
  try {
    const config = llamaConfigFromLlama2c(ckpt);
    const tokenizerPath = findLlama2cTokenizer(path, options.tokenizer);
    const tokenizer = readLlama2cTokenizer(tokenizerPath, config.vocabSize);
    const provider = llama2cProvider(ckpt);
    checkLlamaTensors(provider, config, LLAMA2C_NAMES);
    return {
      path, format, architecture: "llama", config, tokenizer, tokenizerPath, dtypes: countDtypes(provider.entries()),
      provider, names: LLAMA2C_NAMES, close: () => ckpt.file.close(),
    };
  } catch (err) {
    ckpt.file.close();
    throw err;
  }
}

/** Loads a whole model into memory as float32 (the reference engine; generation). */
export function loadModel(path: string, options: LoadOptions = {}): LoadedModel {
  const opened = openModel(path, options);
  try {
    const { config, provider, names } = opened;
    // Refuse before allocating rather than crash: scoring and evaluation stream instead.
    const bytes = provider.entries().reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0) * 4;
    if (bytes > freemem() * 0.8) {
      throw new UnsupportedError(`${path}: holding the whole model in memory needs ${(bytes / 2 ** 30).toFixed(1)} GiB as float32, more than the ${(freemem() / 2 ** 30).toFixed(1)} GiB free`, {
        file: path, hint: "score, eval and prune stream layer by layer and work on this model; generation needs the whole model in memory",
      });
    }
    const model = new LlamaModel(config, loadLlamaWeights(provider, config, names));
    return { path, format: opened.format, architecture: opened.architecture, model, tokenizer: opened.tokenizer, tokenizerPath: opened.tokenizerPath, dtypes: opened.dtypes };
  } finally {
    opened.close();
  }
}

function checkVocab(tokenizer: Tokenizer, config: LlamaConfig, path: string): void {
  if (tokenizer.vocabSize !== config.vocabSize) {
    throw new TokenizerError(`${path}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocabulary has ${config.vocabSize}`, {
      file: path, expected: config.vocabSize, got: tokenizer.vocabSize, hint: "the file is inconsistent; re-convert it",
    });
  }
}

export function describeFormat(loaded: LoadedModel): string {
  const kind = { gguf: "GGUF", llama2c: "llama2.c", hf: "Hugging Face directory" }[loaded.format];
  return `${kind} (${basename(loaded.path)})`;
}

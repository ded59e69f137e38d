// The GGUF metadata llama.cpp needs to load a Llama-family model: hyperparameters under `<arch>.` and the
// vocabulary (SentencePiece, or byte-level BPE) under `tokenizer.ggml.` (keys as in llama.cpp's GGUF spec).

import { UnsupportedError } from "../errors.js";
import { type GgufValue, GgufValueType } from "../formats/gguf.js";
import type { GgufArchitecture } from "../models/ggufFamilies.js";
import type { LlamaConfig } from "../models/llama.js";
import type { WritableDtype } from "../tensor/encode.js";
import type { BpeVocab } from "../tokenizer/bpe.js";
import type { SentencePieceVocab } from "../tokenizer/sentencepiece.js";
import { portablePieces } from "./pieces.js";

/** The factor when every RoPE frequency is divided by the same one (linear scaling); undefined otherwise. */
export function linearRopeFactor(factors: readonly number[]): number | undefined {
  return factors.every((f) => f === factors[0]) ? factors[0] : undefined;
}

/** general.file_type: llama.cpp's llama_ftype for a file whose matrices are all in one dtype. */
// A file of plain K-quants is labelled with the "_S" (small) mix of its type, the nearest llama_ftype.
export const GGUF_FILE_TYPE: Record<WritableDtype, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7, Q5_0: 8, Q5_1: 9, Q4_K: 14, Q5_K: 16, Q6_K: 18, BF16: 32 };

const u32 = (value: number): GgufValue => ({ type: GgufValueType.UINT32, value });
const f32 = (value: number): GgufValue => ({ type: GgufValueType.FLOAT32, value });
const str = (value: string): GgufValue => ({ type: GgufValueType.STRING, value });

export interface GgufGeneral {
  name: string;
  fileType: number;
  quantized: boolean;
}

/** The vocabulary a GGUF file carries: SentencePiece (tokenizer.ggml.model=llama) or byte-level BPE (gpt2). */
export type GgufVocabulary = { kind: "sentencepiece"; vocab: Readonly<SentencePieceVocab> } | { kind: "bpe"; vocab: Readonly<BpeVocab> };

export function ggufLlamaMetadata(arch: GgufArchitecture, config: LlamaConfig, vocabulary: GgufVocabulary, general: GgufGeneral): Map<string, GgufValue> {
  const m = new Map<string, GgufValue>();
  m.set("general.architecture", str(arch));
  m.set("general.name", str(general.name));
  m.set("general.file_type", u32(general.fileType));
  if (general.quantized) m.set("general.quantization_version", u32(2));
  m.set(`${arch}.vocab_size`, u32(config.vocabSize));
  // Phi-3 LongRoPE: the trained context; the original one (where the short factors end) under rope.scaling.
  m.set(`${arch}.context_length`, u32(config.longRope?.trainedContext ?? config.contextLength));
  if (config.mamba) {
    // llama.cpp's mamba keys: no attention, the SSM's dimensions.
    m.set(`${arch}.embedding_length`, u32(config.dim));
    m.set(`${arch}.block_count`, u32(config.nLayers));
    m.set(`${arch}.feed_forward_length`, u32(0));
    m.set(`${arch}.attention.head_count`, u32(0));
    m.set(`${arch}.attention.layer_norm_rms_epsilon`, f32(config.normEps));
    m.set(`${arch}.ssm.conv_kernel`, u32(config.mamba.convKernel));
    m.set(`${arch}.ssm.inner_size`, u32(config.mamba.dInner));
    m.set(`${arch}.ssm.state_size`, u32(config.mamba.dState));
    m.set(`${arch}.ssm.time_step_rank`, u32(config.mamba.dtRank));
    if (vocabulary.kind === "sentencepiece") setSentencePieceVocabulary(m, vocabulary.vocab);
    else setBpeVocabulary(m, vocabulary.vocab);
    return m;
  }
  if (config.mamba2) {
    // llama.cpp's mamba2 keys (its converter's): the head count travels as time_step_rank, B and C's groups as group_count.
    m.set(`${arch}.embedding_length`, u32(config.dim));
    m.set(`${arch}.block_count`, u32(config.nLayers));
    m.set(`${arch}.feed_forward_length`, u32(0));
    m.set(`${arch}.attention.head_count`, u32(0));
    m.set(`${arch}.attention.layer_norm_rms_epsilon`, f32(config.normEps));
    m.set(`${arch}.ssm.conv_kernel`, u32(config.mamba2.convKernel));
    m.set(`${arch}.ssm.inner_size`, u32(config.mamba2.dInner));
    m.set(`${arch}.ssm.state_size`, u32(config.mamba2.dState));
    m.set(`${arch}.ssm.time_step_rank`, u32(config.mamba2.nHeads));
    m.set(`${arch}.ssm.group_count`, u32(config.mamba2.nGroups));
    if (vocabulary.kind === "sentencepiece") setSentencePieceVocabulary(m, vocabulary.vocab);
    else setBpeVocabulary(m, vocabulary.vocab);
    return m;
  }
  m.set(`${arch}.embedding_length`, u32(config.dim));
  m.set(`${arch}.block_count`, u32(config.nLayers));
  m.set(`${arch}.feed_forward_length`, u32(config.hiddenDim));
  m.set(`${arch}.attention.head_count`, u32(config.nHeads));
  m.set(`${arch}.attention.head_count_kv`, u32(config.nKvHeads));
  if (config.headDim * config.nHeads !== config.dim || arch === "gemma2" || arch === "gemma3") {
    m.set(`${arch}.attention.key_length`, u32(config.headDim));
    m.set(`${arch}.attention.value_length`, u32(config.headDim));
  }
  if (config.layerNorm) {
    // gpt2: LayerNorm, learned positions (no rope.* keys)
    m.set(`${arch}.attention.layer_norm_epsilon`, f32(config.normEps));
  } else {
    m.set(`${arch}.rope.dimension_count`, u32(config.headDim));
    m.set(`${arch}.rope.freq_base`, f32(config.ropeTheta));
    if (arch === "phi3") setPhi3Rope(m, config);
    else if (config.ropeFreqFactors && arch !== "llama") {
      // "llama" files carry the divisors as the rope_freqs tensor, phi3 as rope_factors_long/short; the others say linear scaling.
      const factor = linearRopeFactor(config.ropeFreqFactors);
      if (factor === undefined) throw new UnsupportedError(`a ${arch} GGUF file cannot carry per-frequency RoPE scaling (only "llama" files have rope_freqs)`, { got: arch });
      m.set(`${arch}.rope.scaling.type`, str("linear"));
      m.set(`${arch}.rope.scaling.factor`, f32(factor));
    }
    m.set(`${arch}.attention.layer_norm_rms_epsilon`, f32(config.normEps));
  }
  if (arch === "gemma2" || arch === "gemma3") {
    // Which layers slide is llama.cpp's positional rule (convert checks the model follows it); only the window is stored.
    if (config.slidingWindow !== undefined) m.set(`${arch}.attention.sliding_window`, u32(config.slidingWindow));
    if (config.attnSoftcap !== undefined) m.set(`${arch}.attn_logit_softcapping`, f32(config.attnSoftcap));
    if (config.logitSoftcap !== undefined) m.set(`${arch}.final_logit_softcapping`, f32(config.logitSoftcap));
  }
  if (vocabulary.kind === "sentencepiece") setSentencePieceVocabulary(m, vocabulary.vocab);
  else setBpeVocabulary(m, vocabulary.vocab);
  return m;
}

/** phi3's RoPE keys as llama.cpp's converter writes them: the factors travel as tensors; sliding_window 0 (Phi-3, not Phi-4). */
function setPhi3Rope(m: Map<string, GgufValue>, config: LlamaConfig): void {
  if (config.longRope) {
    m.set("phi3.rope.scaling.original_context_length", u32(config.longRope.originalContext));
    m.set("phi3.rope.scaling.attn_factor", f32(config.ropeAttentionFactor ?? 1));
  } else if (config.ropeFreqFactors) {
    throw new UnsupportedError("a phi3 GGUF file carries RoPE scaling only as LongRoPE (rope_factors_long/short)", { got: "phi3" });
  }
  m.set("phi3.attention.sliding_window", u32(0));
}

const strings = (value: string[]): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value });
const int32s = (value: number[]): GgufValue => ({ type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value });

function setSentencePieceVocabulary(m: Map<string, GgufValue>, vocab: Readonly<SentencePieceVocab>): void {
  m.set("tokenizer.ggml.model", str("llama"));
  m.set("tokenizer.ggml.tokens", strings(portablePieces(vocab)));
  m.set("tokenizer.ggml.scores", { type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value: Array.from(vocab.scores) });
  m.set("tokenizer.ggml.token_type", int32s([...vocab.types]));
  m.set("tokenizer.ggml.bos_token_id", u32(vocab.bosId));
  m.set("tokenizer.ggml.eos_token_id", u32(vocab.eosId));
  m.set("tokenizer.ggml.unknown_token_id", u32(vocab.unkId));
  m.set("tokenizer.ggml.add_space_prefix", { type: GgufValueType.BOOL, value: vocab.addSpacePrefix });
  m.set("tokenizer.ggml.add_bos_token", { type: GgufValueType.BOOL, value: vocab.addBos ?? true });
}

/** As llama.cpp's converter writes a GPT-2-style vocabulary: tokens, types, merges, the named pre-tokenizer. */
function setBpeVocabulary(m: Map<string, GgufValue>, vocab: Readonly<BpeVocab>): void {
  m.set("tokenizer.ggml.model", str("gpt2"));
  m.set("tokenizer.ggml.pre", str(vocab.pre));
  m.set("tokenizer.ggml.tokens", strings(vocab.tokens));
  m.set("tokenizer.ggml.token_type", int32s([...vocab.types]));
  m.set("tokenizer.ggml.merges", strings(vocab.merges));
  if (vocab.bosId >= 0) m.set("tokenizer.ggml.bos_token_id", u32(vocab.bosId));
  if (vocab.eosId >= 0) m.set("tokenizer.ggml.eos_token_id", u32(vocab.eosId));
  m.set("tokenizer.ggml.add_bos_token", { type: GgufValueType.BOOL, value: vocab.addBos });
}

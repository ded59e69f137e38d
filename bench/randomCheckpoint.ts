// Deterministic random-weight BF16 Hugging Face Llama checkpoints of real shapes, for the
// benchmark: cached in bench/cache/<name>/ and regenerated only when missing or changed.

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { writeSafetensors, type SafetensorsTensorToWrite } from "../src/formats/safetensors.js";

export interface LlamaShape {
  name: string;
  hiddenSize: number;
  intermediateSize: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  maxPositions: number;
  /** Layers per shard file; everything else goes into the first shard. */
  layersPerShard: number;
}

export const TINYLLAMA_1B: LlamaShape = {
  name: "tinyllama-1.1b-shape", hiddenSize: 2048, intermediateSize: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocabSize: 32000, maxPositions: 2048, layersPerShard: 22,
};

export const LLAMA2_7B: LlamaShape = {
  name: "llama2-7b-shape", hiddenSize: 4096, intermediateSize: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, maxPositions: 4096, layersPerShard: 8,
};

const GENERATOR_VERSION = 1;
const CHUNK_ELEMENTS = 1 << 22;
const WEIGHT_RANGE = 0.0346; // uniform(-a, a) has standard deviation 0.02

function hashName(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0 || 1;
}

/** BF16 bytes of n uniform(-a, a) values (or all ones for norms), in chunks, from a per-tensor seed. */
function* randomBf16(name: string, n: number, ones: boolean): Generator<Uint8Array> {
  let state = hashName(name);
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  for (let start = 0; start < n; start += CHUNK_ELEMENTS) {
    const count = Math.min(CHUNK_ELEMENTS, n - start);
    const out = new Uint16Array(count);
    if (ones) out.fill(0x3f80);
    else {
      for (let i = 0; i < count; i++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        f32[0] = ((state >>> 0) / 4294967296 * 2 - 1) * WEIGHT_RANGE;
        out[i] = u32[0]! >>> 16;
      }
    }
    yield new Uint8Array(out.buffer);
  }
}

function tensor(name: string, shape: number[]): SafetensorsTensorToWrite {
  const n = shape.reduce((a, b) => a * b, 1);
  return { name, dtype: "BF16", shape, byteLength: n * 2, bytes: () => randomBf16(name, n, name.endsWith("norm.weight")) };
}

function layerTensors(s: LlamaShape, layer: number): SafetensorsTensorToWrite[] {
  const headDim = s.hiddenSize / s.nHeads;
  const kv = s.nKvHeads * headDim;
  const p = `model.layers.${layer}.`;
  return [
    tensor(`${p}input_layernorm.weight`, [s.hiddenSize]),
    tensor(`${p}self_attn.q_proj.weight`, [s.hiddenSize, s.hiddenSize]),
    tensor(`${p}self_attn.k_proj.weight`, [kv, s.hiddenSize]),
    tensor(`${p}self_attn.v_proj.weight`, [kv, s.hiddenSize]),
    tensor(`${p}self_attn.o_proj.weight`, [s.hiddenSize, s.hiddenSize]),
    tensor(`${p}post_attention_layernorm.weight`, [s.hiddenSize]),
    tensor(`${p}mlp.gate_proj.weight`, [s.intermediateSize, s.hiddenSize]),
    tensor(`${p}mlp.up_proj.weight`, [s.intermediateSize, s.hiddenSize]),
    tensor(`${p}mlp.down_proj.weight`, [s.hiddenSize, s.intermediateSize]),
  ];
}

/** Writes (or reuses) the checkpoint directory; returns its path. */
export function ensureRandomCheckpoint(shape: LlamaShape, cacheDir: string, log: (line: string) => void): string {
  const dir = join(cacheDir, shape.name);
  const stamp = JSON.stringify({ GENERATOR_VERSION, shape });
  const marker = join(dir, ".complete");
  if (existsSync(marker) && readFileSync(marker, "utf8") === stamp) return dir;
  rmSync(dir, { recursive: true, force: true });
  const temp = `${dir}.partial`;
  rmSync(temp, { recursive: true, force: true });
  mkdirSync(temp, { recursive: true });
  const config = {
    architectures: ["LlamaForCausalLM"], model_type: "llama", hidden_size: shape.hiddenSize, intermediate_size: shape.intermediateSize,
    num_hidden_layers: shape.nLayers, num_attention_heads: shape.nHeads, num_key_value_heads: shape.nKvHeads, vocab_size: shape.vocabSize,
    max_position_embeddings: shape.maxPositions, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, torch_dtype: "bfloat16",
    hidden_act: "silu", bos_token_id: 1, eos_token_id: 2,
  };
  writeFileSync(join(temp, "config.json"), JSON.stringify(config, null, 2) + "\n");
  const nShards = Math.ceil(shape.nLayers / shape.layersPerShard);
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let shard = 0; shard < nShards; shard++) {
    const file = nShards === 1 ? "model.safetensors" : `model-${String(shard + 1).padStart(5, "0")}-of-${String(nShards).padStart(5, "0")}.safetensors`;
    const tensors: SafetensorsTensorToWrite[] = [];
    if (shard === 0) {
      tensors.push(tensor("model.embed_tokens.weight", [shape.vocabSize, shape.hiddenSize]), tensor("model.norm.weight", [shape.hiddenSize]), tensor("lm_head.weight", [shape.vocabSize, shape.hiddenSize]));
    }
    for (let layer = shard * shape.layersPerShard; layer < Math.min(shape.nLayers, (shard + 1) * shape.layersPerShard); layer++) tensors.push(...layerTensors(shape, layer));
    log(`writing ${shape.name}/${file} (${tensors.length} tensors)`);
    const result = writeSafetensors(join(temp, file), tensors, { format: "pt" });
    totalSize += result.dataBytes;
    for (const t of tensors) weightMap[t.name] = file;
  }
  if (nShards > 1) writeFileSync(join(temp, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + "\n");
  writeFileSync(join(temp, ".complete"), stamp);
  renameSync(temp, dir);
  return dir;
}

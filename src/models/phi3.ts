// Phi-3 / Phi-3.5 on the Llama decoder: the fused projections split at load, as a view over the
// stored tensors, so that everything downstream sees a plain Llama:
//  * self_attn.qkv_proj (nHeads*headDim + 2*nKvHeads*headDim, hidden) is q, k and v stacked by
//    rows: exposed as q_proj, k_proj and v_proj (rotate-half RoPE rows, as transformers uses them);
//  * mlp.gate_up_proj (2*intermediate, hidden) is the gate then the up projection: exposed as
//    gate_proj and up_proj (transformers: gate, up = gate_up.chunk(2); silu(gate) * up).
// Pruning renumbers model.layers.N.* generically, so it works on the stored names directly.
// LongRoPE (rope_scaling type longrope / su) is resolved in hfLlamaConfig.ts.
// llama.cpp's phi3 GGUF stores the same fused tensors (blk.N.attn_qkv, and blk.N.ffn_up holding
// gate then up), plus LongRoPE's factors as the tensors rope_factors_long/short: the same split
// exposes them as "<fused name>#q|#k|#v" and "#gate|#up" parts, the names convert fuses again.

import { CheckpointError } from "../errors.js";
import { gatherTensorRows, readTensorRows, type TensorEntry, type TensorProvider } from "../tensor/provider.js";
import { recycleF32, recycleU16, takeF32, takeU16 } from "../tensor/hostMemory.js";
import { GGUF_LLAMA_NAMES, type LlamaConfig, type LlamaTensorNames } from "./llama.js";

/** How one format names a fused tensor's parts. */
interface FusedNaming {
  /** Matches a fused tensor; group 1 is the layer, group 2 the fused projection. */
  fused: RegExp;
  attention: string;
  /** The exposed name of a part of the fused tensor `name` of `layer`. */
  part(name: string, layer: string, part: "q" | "k" | "v" | "gate" | "up"): string;
}

const HF_NAMING: FusedNaming = {
  fused: /^model\.layers\.(\d+)\.(self_attn\.qkv_proj|mlp\.gate_up_proj)\.weight$/,
  attention: "self_attn.qkv_proj",
  part: (_name, layer, part) => `model.layers.${layer}.${part === "q" || part === "k" || part === "v" ? `self_attn.${part}_proj` : `mlp.${part}_proj`}.weight`,
};

const GGUF_NAMING: FusedNaming = {
  fused: /^blk\.(\d+)\.(attn_qkv|ffn_up)\.weight$/,
  attention: "attn_qkv",
  part: (name, _layer, part) => `${name}#${part}`,
};

/** llama.cpp's LongRoPE factor tensors (phi3): headDim/2 divisors each, read into the config. */
export const GGUF_ROPE_FACTORS_LONG = "rope_factors_long.weight";
export const GGUF_ROPE_FACTORS_SHORT = "rope_factors_short.weight";

/** llama.cpp's phi3 tensor names: the fused projections as parts, the rope factor tensors read into the config. */
export const GGUF_PHI3_NAMES: LlamaTensorNames = {
  ...GGUF_LLAMA_NAMES,
  layer: (i) => ({
    ...GGUF_LLAMA_NAMES.layer(i),
    wq: `blk.${i}.attn_qkv.weight#q`,
    wk: `blk.${i}.attn_qkv.weight#k`,
    wv: `blk.${i}.attn_qkv.weight#v`,
    wGate: `blk.${i}.ffn_up.weight#gate`,
    wUp: `blk.${i}.ffn_up.weight#up`,
  }),
  ignored: new Set([GGUF_ROPE_FACTORS_LONG, GGUF_ROPE_FACTORS_SHORT]),
  interleavedRope: false,
};

/** One row range of a fused tensor, exposed under the name of the unfused projection. */
interface Part {
  fused: TensorEntry;
  firstRow: number;
  rows: number;
}

/** A Hugging Face Phi-3 directory's tensors with qkv_proj and gate_up_proj split into the Llama projections. */
export function phi3View(stored: TensorProvider, config: LlamaConfig): TensorProvider {
  return fusedRowsView(stored, config, HF_NAMING);
}

/** A phi3 GGUF file's tensors with attn_qkv and ffn_up split into the GGUF_PHI3_NAMES parts. */
export function phi3GgufView(stored: TensorProvider, config: LlamaConfig): TensorProvider {
  return fusedRowsView(stored, config, GGUF_NAMING);
}

function fusedRowsView(stored: TensorProvider, config: LlamaConfig, naming: FusedNaming): TensorProvider {
  const { nHeads, nKvHeads, headDim, hiddenDim } = config;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const parts = new Map<string, Part>();
  const entries: TensorEntry[] = [];
  for (const e of stored.entries()) {
    const m = naming.fused.exec(e.name);
    if (!m) {
      entries.push(e);
      continue;
    }
    const attention = m[2] === naming.attention;
    const split: ["q" | "k" | "v" | "gate" | "up", number][] = attention ? [["q", qDim], ["k", kvDim], ["v", kvDim]] : [["gate", hiddenDim], ["up", hiddenDim]];
    const rows = split.reduce((n, [, r]) => n + r, 0);
    if (e.shape.length !== 2 || e.shape[0] !== rows) {
      throw new CheckpointError(`${stored.source}: tensor ${e.name} has shape [${e.shape.join(", ")}], expected [${rows}, ${config.dim}]`, {
        file: stored.source, tensor: e.name, expected: `[${rows}, ${config.dim}]`, got: `[${e.shape.join(", ")}]`,
        hint: attention ? "the fused q/k/v projection stacks q, k and v: its rows must be (num_attention_heads + 2 * num_key_value_heads) * head_dim" : "the fused gate/up projection stacks gate and up: its rows must be 2 * intermediate_size",
      });
    }
    let firstRow = 0;
    for (const [part, n] of split) {
      const name = naming.part(e.name, m[1]!, part);
      parts.set(name, { fused: e, firstRow, rows: n });
      entries.push({ name, shape: [n, e.shape[1]!], dtype: e.dtype });
      firstRow += n;
    }
  }
  // Parts and the fused tensor (float32, or bf16 bits as stored) go through the pool of finished
  // layers' arrays: fresh memory is slow to touch, and a part copied into fresh memory cost the
  // bf16 engine more than the fp32 engine's whole read on Phi-3-mini.
  const f32Part = partReader((name) => stored.readF32(name), { take: takeF32, recycle: (fused) => recycleF32([fused]) });
  const readBF16 = stored.readBF16?.bind(stored);
  const bf16Part = readBF16 && partReader(readBF16, { take: takeU16, recycle: (fused) => recycleU16([fused]) });
  return {
    source: stored.source,
    entries: () => entries,
    readF32: (name) => {
      const part = parts.get(name);
      return part ? f32Part(part)! : stored.readF32(name);
    },
    // A BF16 checkpoint's parts as their stored bits too (the bf16 engine packs them without a float32 copy).
    ...(readBF16 && bf16Part ? { readBF16: (name: string) => {
      const part = parts.get(name);
      return part ? bf16Part(part) : readBF16(name);
    } } : {}),
    // The embedding is never a fused part: its rows come from the stored tensor's.
    readRowsF32(name, rows) {
      const part = parts.get(name);
      return part ? gatherTensorRows(this.readF32(name), part.rows, rows, name, stored.source) : readTensorRows(stored, name, rows);
    },
  };
}

/** Where a part's array comes from and where its fused tensor goes once its last part is read. */
interface PartMemory<A> {
  take(length: number): A;
  recycle(fused: A): void;
}

/**
 * A part's rows of its fused tensor. The fused tensor is read once for its parts, which are read
 * one after another; undefined when `read` has no such form of it (bf16 bits of a float32 file).
 */
function partReader<A extends Float32Array | Uint16Array>(read: (name: string) => A | undefined, memory: PartMemory<A>): (part: Part) => A | undefined {
  let held: { name: string; data: A } | undefined;
  return (part) => {
    if (held?.name !== part.fused.name) {
      const data = read(part.fused.name);
      if (!data) return undefined;
      held = { name: part.fused.name, data };
    }
    const cols = part.fused.shape[1]!;
    const rows = held.data.subarray(part.firstRow * cols, (part.firstRow + part.rows) * cols) as A;
    const out = memory.take(rows.length);
    out.set(rows);
    if (part.firstRow + part.rows === part.fused.shape[0]) {
      memory.recycle(held.data); // the last part: nothing reads the fused tensor any more
      held = undefined;
    }
    return out;
  };
}

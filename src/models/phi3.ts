// Phi-3 / Phi-3.5 on the Llama decoder: the fused projections split at load, as a view over the
// stored tensors, so that everything downstream sees a plain Llama:
//  * self_attn.qkv_proj (nHeads*headDim + 2*nKvHeads*headDim, hidden) is q, k and v stacked by
//    rows: exposed as q_proj, k_proj and v_proj (rotate-half RoPE rows, as transformers uses them);
//  * mlp.gate_up_proj (2*intermediate, hidden) is the gate then the up projection: exposed as
//    gate_proj and up_proj (transformers: gate, up = gate_up.chunk(2); silu(gate) * up).
// Pruning renumbers model.layers.N.* generically, so it works on the stored names directly.
// LongRoPE (rope_scaling type longrope / su) is resolved in hfLlamaConfig.ts.

import { CheckpointError } from "../errors.js";
import type { TensorEntry, TensorProvider } from "../tensor/provider.js";
import type { LlamaConfig } from "./llama.js";

const FUSED = /^model\.layers\.(\d+)\.(self_attn\.qkv_proj|mlp\.gate_up_proj)\.weight$/;

/** One row range of a fused tensor, exposed under the name of the unfused projection. */
interface Part {
  fused: TensorEntry;
  firstRow: number;
  rows: number;
}

export function phi3View(stored: TensorProvider, config: LlamaConfig): TensorProvider {
  const { nHeads, nKvHeads, headDim, hiddenDim } = config;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const parts = new Map<string, Part>();
  const entries: TensorEntry[] = [];
  for (const e of stored.entries()) {
    const m = FUSED.exec(e.name);
    if (!m) {
      entries.push(e);
      continue;
    }
    const attention = m[2] === "self_attn.qkv_proj";
    const split: [string, number][] = attention ? [["self_attn.q_proj", qDim], ["self_attn.k_proj", kvDim], ["self_attn.v_proj", kvDim]] : [["mlp.gate_proj", hiddenDim], ["mlp.up_proj", hiddenDim]];
    const rows = split.reduce((n, [, r]) => n + r, 0);
    if (e.shape.length !== 2 || e.shape[0] !== rows) {
      throw new CheckpointError(`${stored.source}: tensor ${e.name} has shape [${e.shape.join(", ")}], expected [${rows}, ${config.dim}]`, {
        file: stored.source, tensor: e.name, expected: `[${rows}, ${config.dim}]`, got: `[${e.shape.join(", ")}]`,
        hint: attention ? "qkv_proj stacks q, k and v: its rows must be (num_attention_heads + 2 * num_key_value_heads) * head_dim" : "gate_up_proj stacks gate and up: its rows must be 2 * intermediate_size",
      });
    }
    let firstRow = 0;
    for (const [part, n] of split) {
      const name = `model.layers.${m[1]}.${part}.weight`;
      parts.set(name, { fused: e, firstRow, rows: n });
      entries.push({ name, shape: [n, e.shape[1]!], dtype: e.dtype });
      firstRow += n;
    }
  }
  // The fused tensor is read once for its parts, which are read one after another.
  let held: { name: string; data: Float32Array } | undefined;
  return {
    source: stored.source,
    entries: () => entries,
    readF32: (name) => {
      const part = parts.get(name);
      if (!part) return stored.readF32(name);
      if (held?.name !== part.fused.name) held = { name: part.fused.name, data: stored.readF32(part.fused.name) };
      const cols = part.fused.shape[1]!;
      const out = held.data.slice(part.firstRow * cols, (part.firstRow + part.rows) * cols);
      if (part.firstRow + part.rows === part.fused.shape[0]) held = undefined; // the last part
      return out;
    },
  };
}

// Baichuan2 on the Llama decoder: its one quirk-laden step, applied as a view over the stored
// tensors so that everything downstream sees a plain Llama:
//  * W_pack (3 * hidden, hidden) is the q, k and v projections stacked: exposed as q_proj,
//    k_proj and v_proj (row slices; RoPE rows already in the rotate-half layout);
//  * Baichuan2's NormHead normalizes each classifier row to unit length before use
//    (F.normalize(weight)): lm_head is exposed normalized. Baichuan 1 (vocabulary 64000) has a
//    plain head; Baichuan2's config has z_loss_weight and its vocabulary is 125696, which is how
//    the loader tells the two apart.
// Pruning renumbers model.layers.N.* generically, so it works on the stored names directly.

import { CheckpointError } from "../errors.js";
import { stackedThirds, type TensorEntry, type TensorProvider } from "../tensor/provider.js";

export const BAICHUAN2_VOCAB_SIZE = 125696;
const W_PACK = /^model\.layers\.(\d+)\.self_attn\.W_pack\.weight$/;

export function baichuanView(stored: TensorProvider, options: { normalizeHead: boolean }): TensorProvider {
  const entries = stored.entries();
  const packs = new Map<string, TensorEntry>();
  for (const e of entries) {
    const m = W_PACK.exec(e.name);
    if (!m) continue;
    if (e.shape.length !== 2 || e.shape[0]! % 3 !== 0) {
      throw new CheckpointError(`${stored.source}: tensor ${e.name} has shape [${e.shape.join(", ")}]; W_pack stacks q, k and v, so its rows must be a multiple of 3`, { file: stored.source, tensor: e.name });
    }
    for (const [i, part] of ["q_proj", "k_proj", "v_proj"].entries()) packs.set(`model.layers.${m[1]}.self_attn.${part}.weight`, { ...e, name: `${e.name}#${i}` });
  }
  const readThird = stackedThirds((name) => stored.readF32(name));
  return {
    source: stored.source,
    entries: () => entries.flatMap((e) => {
      const m = W_PACK.exec(e.name);
      if (!m) return [e];
      const rows = e.shape[0]! / 3;
      return ["q_proj", "k_proj", "v_proj"].map((part) => ({ name: `model.layers.${m[1]}.self_attn.${part}.weight`, shape: [rows, e.shape[1]!], dtype: e.dtype }));
    }),
    readF32: (name) => {
      const pack = packs.get(name);
      if (pack) {
        const [packName, index] = pack.name.split("#") as [string, string];
        return readThird(packName, Number(index));
      }
      const w = stored.readF32(name);
      if (name === "lm_head.weight" && options.normalizeHead) normalizeRows(w, entries.find((e) => e.name === name)!.shape[1]!);
      return w;
    },
  };
}

/** Each row scaled to unit L2 norm (rows of zeros stay zero, as F.normalize with its eps). */
function normalizeRows(w: Float32Array, cols: number): void {
  for (let r = 0; r * cols < w.length; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += w[r * cols + c]! ** 2;
    const scale = 1 / Math.max(Math.sqrt(ss), 1e-12);
    for (let c = 0; c < cols; c++) w[r * cols + c] = w[r * cols + c]! * scale;
  }
}

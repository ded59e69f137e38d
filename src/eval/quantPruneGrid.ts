// The pruning x quantization grid (ShortGPT's RQ4): its rows, the tensor bytes of a checkpoint, and
// whether the two losses add up: for each quantization q and evaluation, the loss of pruning and
// of quantizing alone against the loss of both (perplexity on a log scale, where factors add).

import { GGML_TYPE_BY_NAME } from "../formats/gguf.js";
import { elementCount, type TensorEntry } from "../tensor/provider.js";

export interface GridRow {
  pruned: boolean;
  removed: number[];
  /** The stored dtype of the weight matrices ("F32", "Q4_K", ...); the input's own for the unquantized rows. */
  quant: string;
  /** True for the input model as given (no conversion). */
  unquantized: boolean;
  /** Bytes of tensor data (what pruning and quantization shrink; metadata and vocabulary not counted). */
  bytes: number;
  /** Perplexity for ppl:FILE, accuracy for tasks, by evaluation name. */
  evals: Record<string, number>;
}

export interface Additivity {
  quant: string;
  eval: string;
  /** "log perplexity" (nats per token) or "accuracy". */
  scale: string;
  /** Change from the unquantized original: pruning alone, quantizing alone, both. */
  prune: number;
  quantize: number;
  both: number;
  /** both - (prune + quantize): 0 when the losses add up exactly. */
  interaction: number;
}

/** Bytes of one stored tensor (whole blocks for the quantized types). */
export function entryBytes(entry: TensorEntry): number {
  const type = GGML_TYPE_BY_NAME.get(entry.dtype);
  if (!type) throw new RangeError(`${entry.name}: no byte size known for dtype ${entry.dtype}`);
  return Math.ceil(elementCount(entry.shape) / type.blockSize) * type.blockBytes;
}

/** The dtype the entries' matrices are stored in, or "mixed(A,B)" when they differ. */
export function matrixDtype(entries: readonly TensorEntry[]): string {
  const dtypes = [...new Set(entries.filter((e) => e.shape.length === 2).map((e) => e.dtype))].sort();
  return dtypes.length === 1 ? dtypes[0]! : `mixed(${dtypes.join(",")})`;
}

function onScale(value: number, isPerplexity: boolean): number {
  return isPerplexity ? Math.log(value) : value;
}

/**
 * For every quantized row pair (original and pruned, same quant), the changes against the
 * unquantized original. `perplexity(name)` tells which evaluations are perplexities.
 */
export function lossAdditivity(rows: readonly GridRow[], evalNames: readonly string[], perplexity: (name: string) => boolean): Additivity[] {
  const base = rows.find((r) => r.unquantized && !r.pruned);
  const prunedBase = rows.find((r) => r.unquantized && r.pruned);
  if (!base || !prunedBase) return [];
  const out: Additivity[] = [];
  for (const quantized of rows.filter((r) => !r.unquantized && !r.pruned)) {
    const both = rows.find((r) => !r.unquantized && r.pruned && r.quant === quantized.quant);
    if (!both) continue;
    for (const name of evalNames) {
      const isPpl = perplexity(name);
      const at = (r: GridRow): number => onScale(r.evals[name]!, isPpl);
      const prune = at(prunedBase) - at(base);
      const quantize = at(quantized) - at(base);
      const all = at(both) - at(base);
      out.push({ quant: quantized.quant, eval: name, scale: isPpl ? "log perplexity" : "accuracy", prune, quantize, both: all, interaction: all - (prune + quantize) });
    }
  }
  return out;
}

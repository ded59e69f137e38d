// shortgpt inspect MODEL: architecture, layers, dims, parameter count, dtypes, tokenizer.

import { isRecurrentShape } from "../../backend/backend.js";
import { openModel } from "../../load.js";
import { layerShape, type LlamaConfig } from "../../models/llama.js";
import { MODEL_OPTIONS, onePositional, parse, str } from "../args.js";
import { modelPathFromArgs } from "../common.js";
import type { Command } from "../command.js";
import { table } from "../format.js";

const usage = "shortgpt inspect MODEL [--tokenizer FILE] [--json FILE]";

export const inspectCommand: Command = {
  name: "inspect",
  usage,
  summary: "architecture, layers, dimensions, parameter count, dtypes and tokenizer of a model",
  async run(argv) {
    const p = parse(argv, MODEL_OPTIONS, usage);
    const path = await modelPathFromArgs(onePositional(p, "MODEL", usage));
    const tokenizer = str(p, "tokenizer");
    // Only the header and tensor index are read: inspecting a 70B checkpoint costs nothing.
    const loaded = openModel(path, tokenizer === undefined ? {} : { tokenizer });
    loaded.close();
    const c = loaded.config;
    const entries = loaded.provider.entries().filter((e) => !loaded.names.ignored.has(e.name));
    // A recurrence (Mamba, RWKV) has no position encoding: each window is scanned from a zero state.
    const recurrent = isRecurrentShape(layerShape(c));
    const positions = recurrent ? "none" : c.learnedPositions ? "learned" : "RoPE";
    const json = {
      path, format: loaded.format, architecture: loaded.architecture,
      layers: c.nLayers, dim: c.dim, hiddenDim: c.hiddenDim, heads: c.nHeads, kvHeads: c.nKvHeads, headDim: c.headDim,
      vocabSize: c.vocabSize, contextLength: c.contextLength, normEps: c.normEps, norm: c.layerNorm ? "LayerNorm" : "RMSNorm",
      positions, ...(positions === "RoPE" ? { ropeTheta: c.ropeTheta } : {}),
      ...(c.rwkv6 ? { rwkv6: c.rwkv6, rescaleEveryNLayers: c.rwkvRescaleEvery ?? 0 } : {}),
      ...(c.ropeFreqFactors ? { ropeFreqFactors: c.ropeFreqFactors } : {}),
      // Gemma 2/3 and Phi-3 only: each layer's attention type and the extras they add.
      ...(c.layerTypes ? { layerTypes: c.layerTypes } : {}), ...(c.slidingWindow !== undefined ? { slidingWindow: c.slidingWindow } : {}),
      ...(c.localRope ? { localRopeTheta: c.localRope.theta } : {}), ...(c.attnScale !== undefined ? { attnScale: c.attnScale } : {}),
      ...(c.attnSoftcap !== undefined ? { attnSoftcap: c.attnSoftcap } : {}), ...(c.logitSoftcap !== undefined ? { logitSoftcap: c.logitSoftcap } : {}),
      ...(c.ropeAttentionFactor !== undefined ? { ropeAttentionFactor: c.ropeAttentionFactor } : {}),
      parameters: entries.reduce((n, e) => n + e.shape.reduce((a, b) => a * b, 1), 0),
      tiedClassifier: !entries.some((e) => e.name === loaded.names.classifier),
      dtypes: loaded.dtypes,
      tokenizer: { description: loaded.tokenizer.description, path: loaded.tokenizerPath, vocabSize: loaded.tokenizer.vocabSize, bos: loaded.tokenizer.bosId, eos: loaded.tokenizer.eosId, addsBos: loaded.tokenizer.addsBos },
    };
    const rows: [string, string | number][] = [
      ["format", loaded.format], ["architecture", loaded.architecture], ["layers", c.nLayers], ["hidden size", c.dim],
      ["MLP size", c.hiddenDim], ["heads / KV heads", `${c.nHeads} / ${c.nKvHeads}`], ["head size", c.headDim],
      ["vocabulary", c.vocabSize], ["context", c.contextLength], [`${json.norm} eps`, c.normEps],
      ["positions", recurrent ? "none (a recurrence, scanned from a zero state per window)" : c.learnedPositions ? "learned (added to the input)" : `RoPE, theta ${c.ropeTheta}${c.ropeFreqFactors ? `, scaled (frequency divisors ${c.ropeFreqFactors.map((f) => Number(f.toPrecision(4))).join(", ")})` : ""}`],
      ...(c.rwkv6 ? [["RWKV-6", `head size ${c.rwkv6.headSize}, token-shift LoRA ${c.rwkv6.mixExtraDim}, decay LoRA ${c.rwkv6.decayExtraDim}, stream halved ${c.rwkvRescaleEvery ? `every ${c.rwkvRescaleEvery} layers` : "never"}`] as [string, string]] : []),
      ...attentionRows(c),
      ["parameters", json.parameters.toLocaleString("en-US")], ["classifier", json.tiedClassifier ? "tied to embedding" : "separate"],
      ["dtypes", Object.entries(loaded.dtypes).map(([k, v]) => `${k} x${v}`).join(", ")], ["tokenizer", `${loaded.tokenizer.description}; BOS ${loaded.tokenizer.bosId >= 0 ? `${loaded.tokenizer.bosId}${loaded.tokenizer.addsBos ? ", added to every text" : ", not added"}` : "none"}`],
    ];
    return { json, text: `${path}\n${table(["field", "value"], rows)}` };
  },
};

/** Rows for Gemma 2/3's local and global layers and soft-caps, and Phi-3's LongRoPE factor; none for other families. */
function attentionRows(c: LlamaConfig): [string, string][] {
  const rows: [string, string][] = [];
  const layersOf = (type: string): string => c.layerTypes!.flatMap((t, i) => (t === type ? [String(i)] : [])).join(", ") || "none";
  if (c.layerTypes?.includes("sliding_attention")) {
    rows.push(["local layers", `${layersOf("sliding_attention")} (window ${c.slidingWindow}${c.localRope ? `, RoPE theta ${c.localRope.theta}` : ""})`]);
    rows.push(["global layers", layersOf("full_attention")]);
  }
  if (c.attnScale !== undefined) rows.push(["score scale", String(Number(c.attnScale.toPrecision(6)))]);
  if (c.attnSoftcap !== undefined || c.logitSoftcap !== undefined) rows.push(["soft-caps", `scores ${c.attnSoftcap ?? "none"}, logits ${c.logitSoftcap ?? "none"}`]);
  if (c.ropeAttentionFactor !== undefined) rows.push(["LongRoPE factor", String(Number(c.ropeAttentionFactor.toPrecision(6)))]);
  return rows;
}

// Steps several commands share: opening the model named on the command line, choosing the
// backend, reading data with the window options, and printing Block Influence.

import type { DecoderBackend } from "../backend/backend.js";
import { nativeLayerSupports } from "../backend/cpuBf16/supports.js";
import { defaultThreads, parseBackendName, parsePrecision, selectBackend } from "../backend/select.js";
import { layerShape } from "../models/llama.js";
import { OptionError } from "../errors.js";
import { hubSettingsFromEnv } from "../hub/cache.js";
import { openModel, type OpenedModel, resolveModelPath } from "../load.js";
import type { BlockInfluenceResult } from "../metrics/blockInfluence.js";
import { resolveWindows, scoreData, tokenizeFile, type TokenizedData, type WindowChoice } from "../pipeline.js";
import { parseLayerList } from "../prune/plan.js";
import { int, type OptionSpec, type Parsed, split, str } from "./args.js";
import { barChart } from "./format.js";
import { Progress } from "./progress.js";

export const ENGINE_OPTIONS: OptionSpec = {
  backend: { type: "string" },
  threads: { type: "string" },
  device: { type: "string" },
  precision: { type: "string" },
};

/**
 * The local path of MODEL: a Hub id owner/name[@revision] that is not a path is downloaded into
 * the Hugging Face cache (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE, HF_HUB_OFFLINE as huggingface_hub
 * reads them) with a progress bar, and its snapshot folder returned.
 */
export async function modelPathFromArgs(named: string): Promise<string> {
  // Made at the first report, when the size is known: MB for real models, kB for small ones.
  let bar: { progress: Progress; scale: number } | undefined;
  try {
    return await resolveModelPath(named, hubSettingsFromEnv(process.env), {
      onProgress: (done, total) => {
        const scale = total >= 100e6 ? 1e6 : 1e3; // a sharded model's total grows once the index is read
        if (bar?.scale !== scale) bar = { progress: new Progress(`downloading ${named}`, scale === 1e6 ? "MB" : "kB"), scale };
        bar.progress.update(Math.round(done / bar.scale), Math.round(total / bar.scale));
      },
    });
  } finally {
    bar?.progress.done();
  }
}

export function openFromArgs(p: Parsed, path: string): OpenedModel {
  const tokenizer = str(p, "tokenizer");
  return openModel(path, tokenizer === undefined ? {} : { tokenizer });
}

/**
 * --backend (default auto), --threads (default: all cores), --device (GPU index, default 0) and
 * --precision (GEMM inputs: bf16 by default on the GPU; on the CPU bf16 by default for a model
 * whose weights are stored as bf16, where the CPU has AVX512_BF16, else fp32); fallbacks are
 * reported on stderr.
 */
export async function backendFromArgs(p: Parsed, model?: Pick<OpenedModel, "dtypes" | "config">): Promise<DecoderBackend> {
  const name = parseBackendName(str(p, "backend") ?? "auto");
  const threads = int(p, "threads", 1, 1024) ?? defaultThreads();
  const device = int(p, "device", 0, 1024);
  const precisionText = str(p, "precision");
  const precision = precisionText !== undefined ? parsePrecision(precisionText) : model && bf16ByDefault(model) ? "bf16" : undefined;
  const { backend, notes } = await selectBackend(name, { threads, ...(device === undefined ? {} : { device }), ...(precision === undefined ? {} : { precision }), quietBf16Fallback: precisionText === undefined });
  for (const note of notes) process.stderr.write(`shortgpt: ${note}\n`);
  return backend;
}

/**
 * bf16 GEMMs by default on the CPU: every stored tensor is bf16 (then they round no weight, only
 * the activations, as PyTorch's bf16 does) and the native bf16 layer computes every layer (a
 * model it would hand back to the fp32 kernels gains nothing).
 */
export function bf16ByDefault(model: Pick<OpenedModel, "dtypes" | "config">): boolean {
  const kinds = Object.keys(model.dtypes);
  if (kinds.length === 0 || !kinds.every((d) => d === "BF16")) return false;
  return Array.from({ length: model.config.nLayers }, (_, layer) => layerShape(model.config, layer)).every(nativeLayerSupports);
}

export function windowsFromArgs(p: Parsed, opened: OpenedModel): WindowChoice {
  const seqLen = int(p, "seq-len", 2);
  const stride = int(p, "stride", 1);
  const maxTokens = int(p, "max-tokens", 2);
  return resolveWindows(opened.config.contextLength, {
    ...(seqLen === undefined ? {} : { seqLen }),
    ...(stride === undefined ? {} : { stride }),
    ...(maxTokens === undefined ? {} : { maxTokens }),
  });
}

export function dataFromArgs(p: Parsed, opened: OpenedModel, option: string, usage: string): TokenizedData {
  const path = str(p, option);
  if (path === undefined) throw new OptionError(`missing --${option} FILE`, { option: `--${option}`, hint: `usage: ${usage}` });
  return tokenizeFile(opened, path, split(p));
}

export function skipFromArgs(p: Parsed, nLayers: number): Set<number> | undefined {
  const text = str(p, "skip");
  if (text === undefined) return undefined;
  const layers = parseLayerList(text, nLayers, "--skip");
  if (layers.length >= nLayers) throw new OptionError(`--skip would leave no layer`, { option: "--skip" });
  return new Set(layers);
}

export async function scoreWithProgress(opened: OpenedModel, data: TokenizedData, windows: WindowChoice, backend: DecoderBackend): Promise<BlockInfluenceResult> {
  const progress = new Progress("scoring", "token-layers");
  try {
    return await scoreData(opened, data, windows, { backend, onProgress: progress.callback });
  } finally {
    progress.done();
  }
}

export function biChart(result: BlockInfluenceResult, removed: readonly number[] = []): string {
  return barChart(result.layers.map((s) => ({
    label: `layer ${s.layer}`,
    value: s.bi,
    ...(removed.includes(s.layer) ? { mark: "<- remove" } : {}),
  })));
}

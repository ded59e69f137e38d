// Chooses the compute backend: cuda when a usable NVIDIA GPU is there, else onnxruntime-node,
// falling back to onnxruntime-web's WebAssembly build and then to the reference kernels, saying
// why each step was taken (a machine without an NVIDIA driver skips cuda without a word).

import { availableParallelism } from "node:os";
import { OptionError, ShortgptError } from "../errors.js";
import type { DecoderBackend } from "./backend.js";
import { NoCudaDriverError } from "./cuda/libraries.js";
import { createOrtBackend } from "./ortBackend.js";
import { createReferenceBackend } from "./referenceBackend.js";

export const BACKEND_NAMES = ["auto", "cuda", "onnx", "wasm", "reference"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export const PRECISIONS = ["bf16", "fp32"] as const;
export type Precision = (typeof PRECISIONS)[number];

/** What the backends are made with: --threads (CPU), --device and --precision (cuda). */
export interface EngineSettings {
  threads: number;
  device?: number;
  precision?: Precision;
}

export interface SelectedBackend {
  backend: DecoderBackend;
  /** Why a fallback was taken, for the user to see. */
  notes: string[];
}

export function parseBackendName(text: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(text)) return text as BackendName;
  throw new OptionError(`--backend "${text}" is not a backend`, { option: "--backend", hint: `choose one of: ${BACKEND_NAMES.join(", ")}` });
}

export function parsePrecision(text: string): Precision {
  if ((PRECISIONS as readonly string[]).includes(text)) return text as Precision;
  throw new OptionError(`--precision "${text}" is not a precision`, { option: "--precision", hint: `choose one of: ${PRECISIONS.join(", ")} (GEMM inputs on the GPU; the residual stream is fp32 either way)` });
}

export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

export type BackendFactory = (settings: EngineSettings) => Promise<DecoderBackend>;

/** How each backend is made; tests replace entries to simulate a runtime that fails to load. */
export const BACKEND_FACTORIES: Record<Exclude<BackendName, "auto">, BackendFactory> = {
  // Imported on demand: koffi and the CUDA bindings load only when a GPU is asked for.
  cuda: async ({ device, precision }) => (await import("./cuda/cudaBackend.js")).createCudaBackend({ ...(device === undefined ? {} : { device }), ...(precision === undefined ? {} : { precision }) }),
  onnx: ({ threads }) => createOrtBackend({ threads, flavor: "node" }),
  wasm: ({ threads }) => createOrtBackend({ threads, flavor: "web" }),
  reference: async () => createReferenceBackend(),
};

/** The named backend; with "auto", the first of cuda, onnx, wasm, reference that loads. */
export async function selectBackend(name: BackendName, settings: EngineSettings, factories = BACKEND_FACTORIES): Promise<SelectedBackend> {
  const { threads } = settings;
  if (!Number.isInteger(threads) || threads < 1) throw new OptionError(`--threads ${threads} must be a positive integer`, { option: "--threads" });
  if (settings.device !== undefined && !(Number.isInteger(settings.device) && settings.device >= 0)) throw new OptionError(`--device ${settings.device} must be a GPU index (0, 1, ...)`, { option: "--device" });
  if (name !== "auto") return { backend: await factories[name](settings), notes: [] };
  const notes: string[] = [];
  for (const candidate of ["cuda", "onnx", "wasm", "reference"] as const) {
    try {
      return { backend: await factories[candidate](settings), notes };
    } catch (err) {
      if (!(err instanceof ShortgptError)) throw err;
      if (!(err instanceof NoCudaDriverError)) notes.push(`backend ${candidate} unavailable (${err.message}); falling back`);
    }
  }
  throw new Error("internal: the reference backend always loads");
}

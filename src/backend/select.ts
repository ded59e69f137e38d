// Chooses the compute backend: cuda when a usable NVIDIA GPU is there, else onnxruntime-node,
// falling back to onnxruntime-web's WebAssembly build and then to the reference kernels, saying
// why each step was taken (a machine without an NVIDIA driver skips cuda without a word).

import { availableParallelism } from "node:os";
import { OptionError, ShortgptError } from "../errors.js";
import type { DecoderBackend } from "./backend.js";
import { NoCudaDriverError } from "./cuda/libraries.js";
import { createOrtBackend } from "./ortBackend.js";
import { cpuBf16Availability } from "./cpuBf16/native.js";
import { createReferenceBackend } from "./referenceBackend.js";

export const BACKEND_NAMES = ["auto", "cuda", "onnx", "wasm", "reference"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export const PRECISIONS = ["bf16", "fp32"] as const;
export type Precision = (typeof PRECISIONS)[number];

/**
 * What the backends are made with: --threads (CPU), --device (cuda) and --precision (GEMM inputs:
 * cuda defaults to bf16; the CPU engine uses bf16 only when asked, on a CPU with AVX512_BF16).
 */
export interface EngineSettings {
  threads: number;
  device?: number;
  precision?: Precision;
  /** bf16 was chosen by default (not asked for): where the CPU cannot, fp32 without a note. */
  quietBf16Fallback?: boolean;
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
  throw new OptionError(`--precision "${text}" is not a precision`, { option: "--precision", hint: `choose one of: ${PRECISIONS.join(", ")} (GEMM inputs; the residual stream is fp32 either way)` });
}

export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

/** Makes a backend; `notes` collects one line for each fallback taken inside it (for the user). */
export type BackendFactory = (settings: EngineSettings, notes: string[]) => Promise<DecoderBackend>;

/**
 * The onnx backend: with --precision bf16 on a CPU with bf16 dot products, the native bf16 engine
 * (src/backend/cpuBf16/); else onnxruntime's fp32 graphs, with one line saying why bf16 was not used.
 */
async function createCpuBackend({ threads, precision, quietBf16Fallback }: EngineSettings, notes: string[]): Promise<DecoderBackend> {
  if (precision === "bf16") {
    const available = cpuBf16Availability();
    if (available.ok) return (await import("./cpuBf16/bf16Kernels.js")).createCpuBf16Backend({ threads });
    if (!quietBf16Fallback) notes.push(`--precision bf16 on the CPU: ${available.reason}; computing in fp32`);
  }
  return createOrtBackend({ threads, flavor: "node" });
}

/** How each backend is made; tests replace entries to simulate a runtime that fails to load. */
export const BACKEND_FACTORIES: Record<Exclude<BackendName, "auto">, BackendFactory> = {
  // Imported on demand: koffi and the CUDA bindings load only when a GPU is asked for.
  cuda: async ({ device, precision }) => (await import("./cuda/cudaBackend.js")).createCudaBackend({ ...(device === undefined ? {} : { device }), ...(precision === undefined ? {} : { precision }) }),
  onnx: createCpuBackend,
  wasm: ({ threads }) => createOrtBackend({ threads, flavor: "web" }),
  reference: async () => createReferenceBackend(),
};

/** The named backend; with "auto", the first of cuda, onnx, wasm, reference that loads. */
export async function selectBackend(name: BackendName, settings: EngineSettings, factories = BACKEND_FACTORIES): Promise<SelectedBackend> {
  const { threads } = settings;
  if (!Number.isInteger(threads) || threads < 1) throw new OptionError(`--threads ${threads} must be a positive integer`, { option: "--threads" });
  if (settings.device !== undefined && !(Number.isInteger(settings.device) && settings.device >= 0)) throw new OptionError(`--device ${settings.device} must be a GPU index (0, 1, ...)`, { option: "--device" });
  const notes: string[] = [];
  if (name !== "auto") return { backend: await factories[name](settings, notes), notes };
  for (const candidate of ["cuda", "onnx", "wasm", "reference"] as const) {
    try {
      return { backend: await factories[candidate](settings, notes), notes };
    } catch (err) {
      if (!(err instanceof ShortgptError)) throw err;
      if (!(err instanceof NoCudaDriverError)) notes.push(`backend ${candidate} unavailable (${err.message}); falling back`);
    }
  }
  throw new Error("internal: the reference backend always loads");
}

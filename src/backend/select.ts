// Chooses the compute backend: onnxruntime-node by default, falling back to onnxruntime-web's
// WebAssembly build and then to the reference kernels, saying why each step was taken.

import { availableParallelism } from "node:os";
import { OptionError, ShortgptError } from "../errors.js";
import type { DecoderBackend } from "./backend.js";
import { createOrtBackend } from "./ortBackend.js";
import { createReferenceBackend } from "./referenceBackend.js";

export const BACKEND_NAMES = ["auto", "onnx", "wasm", "reference"] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

export interface SelectedBackend {
  backend: DecoderBackend;
  /** Why a fallback was taken, for the user to see. */
  notes: string[];
}

export function parseBackendName(text: string): BackendName {
  if ((BACKEND_NAMES as readonly string[]).includes(text)) return text as BackendName;
  throw new OptionError(`--backend "${text}" is not a backend`, { option: "--backend", hint: `choose one of: ${BACKEND_NAMES.join(", ")}` });
}

export function defaultThreads(): number {
  return Math.max(1, availableParallelism());
}

export type BackendFactory = (threads: number) => Promise<DecoderBackend>;

/** How each backend is made; tests replace entries to simulate a runtime that fails to load. */
export const BACKEND_FACTORIES: Record<Exclude<BackendName, "auto">, BackendFactory> = {
  onnx: (threads) => createOrtBackend({ threads, flavor: "node" }),
  wasm: (threads) => createOrtBackend({ threads, flavor: "web" }),
  reference: async () => createReferenceBackend(),
};

/** The named backend; with "auto", the first of onnx, wasm, reference that loads. */
export async function selectBackend(name: BackendName, threads: number, factories = BACKEND_FACTORIES): Promise<SelectedBackend> {
  if (!Number.isInteger(threads) || threads < 1) throw new OptionError(`--threads ${threads} must be a positive integer`, { option: "--threads" });
  const create = (n: Exclude<BackendName, "auto">, t: number): Promise<DecoderBackend> => factories[n](t);
  if (name !== "auto") return { backend: await create(name, threads), notes: [] };
  const notes: string[] = [];
  for (const candidate of ["onnx", "wasm", "reference"] as const) {
    try {
      return { backend: await create(candidate, threads), notes };
    } catch (err) {
      if (!(err instanceof ShortgptError)) throw err;
      notes.push(`backend ${candidate} unavailable (${err.message}); falling back`);
    }
  }
  throw new Error("internal: the reference backend always loads");
}

// Fresh float32 arrays for a layer's weights and the bf16 widening into them, through the native
// helper (native/host_memory.c -> build/shortgpt_memory.node) when it is built: huge pages make
// the first touch of fresh memory ~15x cheaper, and C widens bf16 at memory speed. Without the
// helper the same values come from plain arrays and the JavaScript loop.

import { createRequire } from "node:module";
import { join } from "node:path";
import { repoRoot } from "../shared.js";

export const HOST_MEMORY_HELPER_PATH = join(repoRoot(), "build", "shortgpt_memory.node");

export interface HostMemoryNative {
  /** madvise(MADV_HUGEPAGE) on the whole 2 MiB pages inside the array's memory; the bytes advised. */
  adviseHugePages(view: ArrayBufferView): number;
  /** out[i] = the float32 whose top 16 bits are bf16 element i of bytes (which may be the last half of out's memory). */
  decodeBf16(bytes: Uint8Array, out: Float32Array): void;
}

/** Arrays from this size on are advised: smaller ones hold at most a page or two worth the call. */
const HUGE_PAGE_MIN_BYTES = 8 << 20;
/** Elements from which the native widening pays for its call. */
const NATIVE_DECODE_MIN = 1 << 14;

let helper: HostMemoryNative | null | undefined;
let enabled = true;

/** The native helper, when it is built, loadable and switched on. */
export function hostMemoryNative(): HostMemoryNative | undefined {
  if (!enabled) return undefined;
  if (helper === undefined) {
    try {
      helper = createRequire(import.meta.url)(HOST_MEMORY_HELPER_PATH) as HostMemoryNative;
    } catch {
      helper = null;
    }
  }
  return helper ?? undefined;
}

/** Switches the helper off (or on again): tests and benchmarks compare both paths. */
export function setHostMemoryNative(on: boolean): void {
  enabled = on;
}

/** A zeroed float32 array of n values, on huge pages where the kernel grants them. */
export function newF32(n: number): Float32Array {
  const out = new Float32Array(n);
  if (out.byteLength >= HUGE_PAGE_MIN_BYTES) hostMemoryNative()?.adviseHugePages(out);
  return out;
}

/** The native bf16 widening for arrays large enough to pay for the call; undefined where JavaScript should do it. */
export function nativeBf16Decoder(n: number): HostMemoryNative["decodeBf16"] | undefined {
  return n >= NATIVE_DECODE_MIN ? hostMemoryNative()?.decodeBf16 : undefined;
}

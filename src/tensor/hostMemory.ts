// Float32 arrays for a layer's weights and the bf16 widening into them: fresh arrays advised onto
// huge pages and widening in C through the native helper (native/host_memory.c ->
// build/shortgpt_memory.node) when it is built, plain arrays and the JavaScript loop (same values)
// when not; and a pool that hands finished layers' arrays to later layers, since on these VMs even
// huge pages leave first touches of fresh memory far slower than memory the process already holds.

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

/**
 * Float32 arrays of finished layers, by length, for the next layers' tensors of the same shapes.
 * Why: on this project's machines fresh memory costs ~25 ns per float32 at first touch, even on
 * huge pages (the hypervisor backs each new page on demand), against ~1 ns for memory the process
 * already holds; a streamed run loads every layer into fresh arrays. Only arrays handed out by
 * takeF32 come back, each once (recycleF32 forgets an array until takeF32 hands it out again).
 */
const pool = new Map<number, Float32Array[]>();
const handedOut = new WeakSet<Float32Array>();
let pooledBytes = 0;
/** Bound on what the pool holds: about one layer of a 7B model in float32 is 0.8 GB. */
const POOL_MAX_BYTES = 4 * 2 ** 30;

/** A float32 array of n values with undefined contents, from the pool when it holds one: for callers that write every element. */
export function takeF32(n: number): Float32Array {
  const list = pool.get(n);
  const reused = list?.pop();
  if (list?.length === 0) pool.delete(n);
  if (reused) pooledBytes -= reused.byteLength;
  const out = reused ?? newF32(n);
  handedOut.add(out);
  return out;
}

/**
 * Hands arrays from takeF32 back for reuse once nothing reads them any more (a layer that has
 * run every batch); other arrays, and one given twice, are left alone.
 */
export function recycleF32(arrays: Iterable<Float32Array | undefined>): void {
  for (const a of new Set(arrays)) {
    if (!a || !handedOut.has(a) || pooledBytes + a.byteLength > POOL_MAX_BYTES) continue;
    handedOut.delete(a);
    const list = pool.get(a.length) ?? [];
    list.push(a);
    pool.set(a.length, list);
    pooledBytes += a.byteLength;
  }
}

/** The pooled float32 array behind each bf16 view takeU16 handed out. */
const u16Backing = new WeakMap<Uint16Array, Float32Array>();

/** n uint16 values (bf16 bits as stored) with undefined contents, in memory from the pool: a view over a takeF32 array. */
export function takeU16(n: number): Uint16Array {
  const backing = takeF32(Math.ceil(n / 2));
  const view = new Uint16Array(backing.buffer, backing.byteOffset, n);
  u16Backing.set(view, backing);
  return view;
}

/** Hands views from takeU16 back (their float32 arrays, as recycleF32); other arrays are left alone. */
export function recycleU16(arrays: Iterable<Uint16Array | undefined>): void {
  recycleF32(Array.from(arrays, (a) => (a ? u16Backing.get(a) : undefined)));
}

/** Empties the pool (its arrays become garbage): at the end of a pass, so an idle process does not hold a layer. */
export function clearF32Pool(): void {
  pool.clear();
  pooledBytes = 0;
}

/** Arrays and bytes in the pool, for tests. */
export function f32PoolStats(): { arrays: number; bytes: number } {
  return { arrays: [...pool.values()].reduce((n, l) => n + l.length, 0), bytes: pooledBytes };
}

/** The native bf16 widening for arrays large enough to pay for the call; undefined where JavaScript should do it. */
export function nativeBf16Decoder(n: number): HostMemoryNative["decodeBf16"] | undefined {
  return n >= NATIVE_DECODE_MIN ? hostMemoryNative()?.decodeBf16 : undefined;
}

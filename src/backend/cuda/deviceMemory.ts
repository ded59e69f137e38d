// Device memory of the cuda backend: hidden states from a free list by size (every layer makes
// and frees a batch's states, and cuMemAlloc/cuMemFree would stall the device each time),
// scratch buffers by name that grow to the largest request and are kept, and allocations that
// retry once after the free list is given back when the device runs out.

import { DeviceError } from "../../errors.js";
import type { CudaApi, DevicePtr } from "./api.js";

const ALIGN = 256;

export const alignUp = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

export class DeviceMemory {
  private readonly freeStates = new Map<number, DevicePtr[]>();
  private readonly scratchSlots = new Map<string, { ptr: DevicePtr; bytes: number }>();

  constructor(private readonly api: CudaApi) {}

  /** bytes of device memory; out of memory is retried once after the free list is returned. */
  alloc(bytes: number, what: string): DevicePtr {
    try {
      return this.api.alloc(bytes, what);
    } catch (err) {
      if (!(err instanceof DeviceError)) throw err;
      this.trim();
      return this.api.alloc(bytes, what);
    }
  }

  /** The named scratch buffer, at least `bytes` long (grown by a quarter at least, so a slowly growing request reallocates rarely). */
  scratch(slot: string, bytes: number): DevicePtr {
    const have = this.scratchSlots.get(slot);
    if (have && have.bytes >= bytes) return have.ptr;
    if (have) this.api.free(have.ptr);
    const size = alignUp(Math.max(bytes, (have?.bytes ?? 0) * 1.25));
    const p = this.alloc(size, `scratch ${slot}`);
    this.scratchSlots.set(slot, { ptr: p, bytes: size });
    return p;
  }

  /** Host ints copied into the named scratch buffer (row lists, token ids, positions, branches). */
  uploadInts(slot: string, values: Int32Array): DevicePtr {
    const p = this.scratch(slot, values.byteLength);
    this.api.upload(p, values);
    return p;
  }

  /** A buffer for hidden states of `bytes`, from the free list when one of that size is there. */
  takeStates(bytes: number, what: string): DevicePtr {
    return this.freeStates.get(bytes)?.pop() ?? this.alloc(bytes, what);
  }

  giveStates(ptr: DevicePtr, bytes: number): void {
    const list = this.freeStates.get(bytes) ?? [];
    list.push(ptr);
    this.freeStates.set(bytes, list);
  }

  /** Returns the free list to the device. */
  trim(): void {
    for (const list of this.freeStates.values()) for (const p of list) this.api.free(p);
    this.freeStates.clear();
  }

  dispose(): void {
    for (const s of this.scratchSlots.values()) this.api.free(s.ptr);
    this.scratchSlots.clear();
    this.trim();
  }
}

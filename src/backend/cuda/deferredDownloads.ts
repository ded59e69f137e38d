// Small results (row statistics) that wait on the device and come back together: each download
// waits for the device, so one per layer would stall the queue of kernels between layers. Results
// are written into one device arena in the order asked for; a flush (on the next turn of the event
// loop, when the arena is full, or at dispose) waits once, downloads the used part and resolves
// every pending promise in order.

import type { CudaApi, DevicePtr } from "./api.js";

const ARENA_VALUES = 4 * 2 ** 20; // float64 values: 32 MiB

interface Pending {
  offset: number;
  count: number;
  resolve: (values: Float64Array) => void;
  reject: (err: unknown) => void;
}

export class DeferredDownloads {
  private arena: DevicePtr | undefined;
  private capacity = 0;
  private used = 0;
  private readonly pending: Pending[] = [];
  private scheduled = false;

  constructor(private readonly api: Pick<CudaApi, "download" | "free">, private readonly alloc: (bytes: number) => DevicePtr) {}

  /** Room for `count` float64 values on the device; `result` turns them into the caller's answer once downloaded. */
  reserve(count: number): { device: DevicePtr; result<T>(make: (values: Float64Array) => T): Promise<T> } {
    if (this.used + count > this.capacity) {
      this.flush();
      if (count > this.capacity) this.grow(Math.max(count, ARENA_VALUES));
    }
    const offset = this.used;
    this.used += count;
    const device = this.arena! + BigInt(offset * 8);
    return {
      device,
      result: <T>(make: (values: Float64Array) => T): Promise<T> => new Promise<T>((resolve, reject) => {
        this.pending.push({
          offset, count, reject,
          resolve: (v) => {
            // A throwing make fails its own request, not the rest of the flush.
            try {
              resolve(make(v));
            } catch (err) {
              reject(err);
            }
          },
        });
        if (!this.scheduled) {
          this.scheduled = true;
          setImmediate(() => this.flush());
        }
      }),
    };
  }

  /** Waits for the device once and answers every pending request, in order. */
  flush(): void {
    this.scheduled = false;
    const batch = this.pending.splice(0);
    const used = this.used;
    this.used = 0;
    if (batch.length === 0) return;
    const host = new Float64Array(used);
    try {
      this.api.download(host, this.arena!);
    } catch (err) {
      for (const p of batch) p.reject(err);
      return;
    }
    for (const p of batch) p.resolve(host.subarray(p.offset, p.offset + p.count));
  }

  private grow(count: number): void {
    if (this.arena !== undefined) this.api.free(this.arena);
    // No arena until the allocation succeeds: a failed one leaves the queue empty, not stale.
    this.arena = undefined;
    this.capacity = 0;
    this.used = 0;
    this.arena = this.alloc(count * 8);
    this.capacity = count;
  }

  dispose(): void {
    this.flush();
    if (this.arena !== undefined) this.api.free(this.arena);
    this.arena = undefined;
    this.capacity = 0;
  }
}

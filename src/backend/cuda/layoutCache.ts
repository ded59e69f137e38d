// Packed layouts (positions and branches of the evaluation's tree windows) on the device, kept for
// the batches in flight: the engine runs each batch through layer after layer with the same layout
// object, so it is uploaded once instead of once per layer.

import type { PackedLayout } from "../backend.js";
import type { DevicePtr } from "./api.js";

/** Layouts kept: more than the batches of one group of windows (the loglikelihood engine's). */
const KEEP = 16;

export class LayoutCache {
  private readonly entries = new Map<PackedLayout, { positions: DevicePtr; branches: DevicePtr }>();

  constructor(private readonly upload: (values: Int32Array) => DevicePtr, private readonly free: (p: DevicePtr) => void) {}

  get(layout: PackedLayout): { positions: DevicePtr; branches: DevicePtr } {
    const have = this.entries.get(layout);
    if (have) {
      // Most recently used last.
      this.entries.delete(layout);
      this.entries.set(layout, have);
      return have;
    }
    if (this.entries.size >= KEEP) {
      const [oldest, buffers] = this.entries.entries().next().value as [PackedLayout, { positions: DevicePtr; branches: DevicePtr }];
      this.entries.delete(oldest);
      this.free(buffers.positions);
      this.free(buffers.branches);
    }
    const positions = this.upload(layout.positions);
    let branches: DevicePtr;
    try {
      branches = this.upload(layout.branches);
    } catch (err) {
      this.free(positions);
      throw err;
    }
    const entry = { positions, branches };
    this.entries.set(layout, entry);
    return entry;
  }

  dispose(): void {
    for (const e of this.entries.values()) {
      this.free(e.positions);
      this.free(e.branches);
    }
    this.entries.clear();
  }
}

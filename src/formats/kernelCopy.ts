// Byte-range copies between files inside the kernel (copy_file_range), through the optional
// native helper that the install script builds (scripts/build-native.mjs). Pruning is mostly a
// byte copy; through read()/write() in user space it runs at about a quarter of the kernel's
// speed on this project's machines. Without the helper every copy falls back to user space
// and gives the same bytes.

import { createRequire } from "node:module";
import { join } from "node:path";
import { repoRoot } from "../shared.js";

interface NativeHelper {
  copyRange(fdIn: number, offsetIn: number, fdOut: number, length: number): number;
}

interface CopyRangeError extends Error {
  code?: string;
  copied?: number;
}

/** Errors after which the same copy can still be done in user space. */
const FALL_BACK_ON = new Set(["EXDEV", "ENOSYS", "EOPNOTSUPP", "EINVAL", "EUNKNOWN"]);

let helper: NativeHelper | null | undefined;
let enabled = true;

/** How many bytes each path copied in this process: lets tests and benchmarks prove which ran. */
export const copyStats = { kernelBytes: 0, userSpaceBytes: 0 };

export const NATIVE_HELPER_PATH = join(repoRoot(), "build", "shortgpt_native.node");

function loadHelper(): NativeHelper | null {
  if (helper === undefined) {
    try {
      helper = createRequire(import.meta.url)(NATIVE_HELPER_PATH) as NativeHelper;
    } catch {
      helper = null;
    }
  }
  return helper;
}

/** True when kernel-side copies are built, loadable and switched on. */
export function kernelCopyAvailable(): boolean {
  return enabled && loadHelper() !== null;
}

/** Switches kernel-side copies on or off for this process (tests compare both paths). */
export function setKernelCopy(on: boolean): void {
  enabled = on;
}

/**
 * Copies up to `length` bytes from `fdIn` at `offsetIn` to `fdOut` at its current position
 * inside the kernel, and returns how many it copied: all of them, or fewer (possibly 0) when
 * the helper is missing or the kernel cannot copy between these files; the caller copies the
 * rest in user space. Real I/O errors (a full disk) are thrown.
 */
export function kernelCopy(fdIn: number, offsetIn: number, fdOut: number, length: number): number {
  const native = enabled ? loadHelper() : null;
  if (!native || length === 0) return 0;
  try {
    const copied = native.copyRange(fdIn, offsetIn, fdOut, length);
    copyStats.kernelBytes += copied;
    return copied;
  } catch (err) {
    const e = err as CopyRangeError;
    if (e.code === undefined || !FALL_BACK_ON.has(e.code)) throw new Error(`copy_file_range failed: ${e.message}`, { cause: err });
    // Not supported for this pair of files (different file systems, old kernel): user space from here on.
    if (e.code === "ENOSYS" || e.code === "EOPNOTSUPP") helper = null;
    copyStats.kernelBytes += e.copied ?? 0;
    return e.copied ?? 0;
  }
}

// Compiles the kernel source for one GPU architecture with NVRTC and keeps the cubin on disk,
// named by the hash of everything that decides it (source, options, NVRTC version), so a second
// run loads it in milliseconds. A cache that cannot be read or written only costs a compile.

import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { writeAtomically } from "../../util/atomicWrite.js";

/** Where compiled kernels are kept: SHORTGPT_CACHE_DIR, else $XDG_CACHE_HOME/shortgpt, else ~/.cache/shortgpt; then cuda/. */
export function kernelCacheDir(env: Record<string, string | undefined> = process.env): string {
  const base = env["SHORTGPT_CACHE_DIR"] ?? join(env["XDG_CACHE_HOME"] ?? join(homedir(), ".cache"), "shortgpt");
  return join(base, "cuda");
}

/** NVRTC options for a compute capability (90 -> sm_90: a cubin, so the driver compiles nothing at load). */
export function compileOptions(computeCapability: number, defines: Readonly<Record<string, number>>): string[] {
  return [`--gpu-architecture=sm_${computeCapability}`, "-std=c++17", ...Object.entries(defines).sort().map(([k, v]) => `-D${k}=${v}`)];
}

/** The cache file for this source, these options and this NVRTC. */
export function kernelCachePath(dir: string, source: string, options: readonly string[], nvrtcVersion: string, computeCapability: number): string {
  const hash = createHash("sha256").update(source).update("\0").update(options.join(" ")).update("\0").update(nvrtcVersion).digest("hex").slice(0, 24);
  return join(dir, `kernels-${hash}-sm${computeCapability}.cubin`);
}

export interface CompiledKernels {
  image: Uint8Array;
  /** Whether it came from the disk cache. */
  cached: boolean;
  path: string;
}

/**
 * The cubin for source + options: from the cache when present, else compiled and stored.
 * `loads` tells whether an image is usable (a truncated or foreign file is recompiled).
 */
export function cachedCompile(
  source: string, options: readonly string[], nvrtcVersion: string, computeCapability: number,
  compile: () => Uint8Array, loads: (image: Uint8Array) => boolean, dir = kernelCacheDir(),
): CompiledKernels {
  const path = kernelCachePath(dir, source, options, nvrtcVersion, computeCapability);
  let image: Uint8Array | undefined;
  try {
    image = new Uint8Array(readFileSync(path));
  } catch {
    image = undefined;
  }
  if (image && image.length > 0 && loads(image)) return { image, cached: true, path };
  const fresh = compile();
  try {
    mkdirSync(dir, { recursive: true });
    writeAtomically(path, (temp) => writeFileSync(temp, fresh));
  } catch {
    // a read-only or full cache folder: the kernels still run, they are compiled again next time
  }
  return { image: fresh, cached: false, path };
}

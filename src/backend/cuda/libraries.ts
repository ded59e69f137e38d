// Finds the CUDA libraries the cuda backend loads: the driver (libcuda), cuBLAS and NVRTC (the
// runtime, libcudart, is not needed: memory and launches go through the driver API), from the toolkit, the driver's folder, the system, or the nvidia-* Python
// wheels that PyTorch installs. SHORTGPT_CUDA_LIBS (folders, ':'-separated) is searched first.

import { existsSync, readdirSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { DeviceError } from "../../errors.js";

/** No NVIDIA driver library on this machine: no GPU to use (auto selection passes over cuda quietly). */
export class NoCudaDriverError extends DeviceError {}

export type CudaLibrary = "cuda" | "cublas" | "nvrtc";

/** File names, newest major version first, tried in each folder in search order (the first folder that has one wins). */
const LIBRARY_FILES: Record<CudaLibrary, string[]> = {
  cuda: ["libcuda.so.1", "libcuda.so"],
  cublas: ["libcublas.so.13", "libcublas.so.12", "libcublas.so"],
  nvrtc: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
};

export type CudaLibraryPaths = Record<CudaLibrary, string>;

/** What the search may look at; tests replace it. */
export interface LibrarySearchEnv {
  env: Record<string, string | undefined>;
  exists(path: string): boolean;
  listDir(path: string): string[];
  home: string;
}

export const SYSTEM_SEARCH: LibrarySearchEnv = {
  env: process.env,
  exists: existsSync,
  listDir: (path) => {
    try {
      return readdirSync(path);
    } catch {
      return [];
    }
  },
  home: homedir(),
};

/** The lib folders of Python's nvidia-* wheels (nvidia/<pkg>/lib, and nvidia/cu13/lib in newer wheels) under a site-packages folder. */
function wheelLibFolders(site: string, search: LibrarySearchEnv): string[] {
  const root = join(site, "nvidia");
  return search.listDir(root).sort().map((pkg) => join(root, pkg, "lib"));
}

/** site-packages folders of the virtual environment, the user and the system Pythons. */
function pythonSiteFolders(search: LibrarySearchEnv): string[] {
  const prefixes = [search.env["VIRTUAL_ENV"], search.env["CONDA_PREFIX"], join(search.home, ".local"), "/usr/local", "/usr", "/opt/conda"].filter((p): p is string => !!p);
  const sites: string[] = [];
  for (const prefix of prefixes) {
    const lib = join(prefix, "lib");
    for (const python of search.listDir(lib).filter((n) => /^python3(\.\d+)?$/.test(n)).sort().reverse()) {
      sites.push(join(lib, python, "site-packages"), join(lib, python, "dist-packages"));
    }
  }
  return sites;
}

/** Folders in search order: SHORTGPT_CUDA_LIBS, CUDA_HOME/CUDA_PATH, the toolkit, the driver, the system, LD_LIBRARY_PATH, Python wheels. */
export function searchFolders(search: LibrarySearchEnv = SYSTEM_SEARCH): string[] {
  const split = (v: string | undefined): string[] => (v ? v.split(":").filter((s) => s.length > 0) : []);
  const cudaHomes = [search.env["CUDA_HOME"], search.env["CUDA_PATH"]].filter((p): p is string => !!p).flatMap((h) => [join(h, "lib64"), join(h, "lib")]);
  const folders = [
    ...split(search.env["SHORTGPT_CUDA_LIBS"]),
    ...cudaHomes,
    "/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib",
    "/usr/local/nvidia/lib64", "/usr/local/nvidia/lib",
    "/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib/wsl/lib",
    ...split(search.env["LD_LIBRARY_PATH"]),
    ...pythonSiteFolders(search).flatMap((site) => wheelLibFolders(site, search)),
  ];
  return [...new Set(folders)];
}

/** The first file of each library in the search folders; a DeviceError names what is missing and where it looked. */
export function findCudaLibraries(search: LibrarySearchEnv = SYSTEM_SEARCH): CudaLibraryPaths {
  const folders = searchFolders(search);
  const found: Partial<CudaLibraryPaths> = {};
  const missing: CudaLibrary[] = [];
  for (const lib of Object.keys(LIBRARY_FILES) as CudaLibrary[]) {
    const path = findOne(LIBRARY_FILES[lib], folders, search);
    if (path) found[lib] = path;
    else missing.push(lib);
  }
  if (missing.length > 0) {
    const names = missing.map((m) => LIBRARY_FILES[m][0]).join(", ");
    const driverHint = missing.includes("cuda") ? "libcuda comes with the NVIDIA driver: is there a GPU and a driver on this machine? " : "";
    throw new (missing.includes("cuda") ? NoCudaDriverError : DeviceError)(`the cuda backend needs ${names}: not found in ${folders.join(":")}`, {
      hint: `${driverHint}install the CUDA 12/13 libraries (the toolkit, or pip install nvidia-cublas nvidia-cuda-nvrtc) or set SHORTGPT_CUDA_LIBS to the folders that hold them`,
    });
  }
  return found as CudaLibraryPaths;
}

function findOne(files: readonly string[], folders: readonly string[], search: LibrarySearchEnv): string | undefined {
  for (const folder of folders) {
    for (const file of files) {
      const path = join(folder, file);
      if (search.exists(path)) return path;
    }
  }
  return undefined;
}

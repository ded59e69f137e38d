// The cuda backend's host logic, which runs without a GPU: library discovery, the kernel cache,
// compiling the kernels (NVRTC when a libnvrtc is found, else nvcc when one is installed), the
// refusal of --backend cuda on a machine without a driver, and the options that choose it.
// The kernels themselves run in bench/gpu/deviceCheck.ts on a machine with a GPU.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { bindNvrtc, nvrtcCompile } from "../src/backend/cuda/api.js";
import { cachedCompile, compileOptions, kernelCacheDir, kernelCachePath } from "../src/backend/cuda/compile.js";
import { BF16_KERNEL_NAMES, KERNEL_NAMES, KERNEL_SOURCE } from "../src/backend/cuda/kernelSource.js";
import { findCudaLibraries, type LibrarySearchEnv, NoCudaDriverError, searchFolders, SYSTEM_SEARCH } from "../src/backend/cuda/libraries.js";
import { hostBackend } from "../src/backend/hostBackend.js";
import { createReferenceBackend, createReferenceKernels } from "../src/backend/referenceBackend.js";
import { BACKEND_FACTORIES, selectBackend } from "../src/backend/select.js";
import { DeviceError, OptionError } from "../src/errors.js";
import { MODEL_BIN, TINYSTORIES, runCli, tempDir } from "./helpers.js";

/** A file system of the given files, for the library search. */
function fakeSearch(files: string[], env: Record<string, string> = {}): LibrarySearchEnv {
  const set = new Set(files);
  return {
    env,
    home: "/home/u",
    exists: (p) => set.has(p),
    listDir: (dir) => [...new Set(files.filter((f) => f.startsWith(`${dir}/`)).map((f) => f.slice(dir.length + 1).split("/")[0]!))],
  };
}

test("library search: SHORTGPT_CUDA_LIBS first, then the toolkit and driver folders, then Python's nvidia wheels", () => {
  const wheel = "/home/u/.local/lib/python3.12/site-packages/nvidia";
  const search = fakeSearch([
    "/opt/mine/libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/nvidia/lib64/libcuda.so.1",
    `${wheel}/cu13/lib/libnvrtc.so.13`, `${wheel}/cu13/lib/libcublas.so.13`,
  ], { SHORTGPT_CUDA_LIBS: "/opt/mine:/opt/other" });
  const folders = searchFolders(search);
  assert.deepEqual(folders.slice(0, 3), ["/opt/mine", "/opt/other", "/usr/local/cuda/lib64"]);
  assert.ok(folders.includes(`${wheel}/cu13/lib`), "the wheel's lib folder is searched");
  assert.ok(folders.indexOf("/usr/local/nvidia/lib64") < folders.indexOf(`${wheel}/cu13/lib`));
  const found = findCudaLibraries(search);
  assert.equal(found.cublas, "/opt/mine/libcublas.so.12", "the folder SHORTGPT_CUDA_LIBS names wins over a newer version elsewhere");
  assert.equal(found.cuda, "/usr/local/nvidia/lib64/libcuda.so.1");
  assert.equal(found.nvrtc, `${wheel}/cu13/lib/libnvrtc.so.13`);
});

test("library search: what is missing is named, with every folder looked in and what to do", () => {
  const noDriver = fakeSearch(["/usr/local/cuda/lib64/libcublas.so.13", "/usr/local/cuda/lib64/libnvrtc.so.13"]);
  assert.throws(() => findCudaLibraries(noDriver), (e: unknown) => e instanceof NoCudaDriverError && /needs libcuda\.so\.1: not found in .*\/usr\/local\/nvidia\/lib64/.test(e.message) && /driver/.test(e.describe()));
  const noNvrtc = fakeSearch(["/usr/local/nvidia/lib64/libcuda.so.1", "/usr/local/cuda/lib64/libcublas.so.13"]);
  assert.throws(() => findCudaLibraries(noNvrtc), (e: unknown) => e instanceof DeviceError && !(e instanceof NoCudaDriverError) && /libnvrtc\.so\.13/.test(e.message) && /SHORTGPT_CUDA_LIBS/.test(e.describe()));
});

test("kernel cache: compiled once per source, options, NVRTC version and architecture; a bad cached file is recompiled", () => {
  const dir = join(tempDir(), "cuda");
  let compiles = 0;
  const compile = (): Uint8Array => Uint8Array.of(0x7f, 0x45, 0x4c, 0x46, ++compiles);
  const goodImage = (image: Uint8Array): boolean => image[0] === 0x7f;
  const options = compileOptions(90, { GIN_BF16: 1 });
  assert.deepEqual(options, ["--gpu-architecture=sm_90", "-std=c++17", "-DGIN_BF16=1"]);
  const first = cachedCompile("src", options, "13.0", 90, compile, goodImage, dir);
  assert.equal(first.cached, false);
  assert.deepEqual([...readFileSync(first.path)], [...first.image], "written to the cache");
  const second = cachedCompile("src", options, "13.0", 90, compile, goodImage, dir);
  assert.equal(second.cached, true);
  assert.equal(compiles, 1);
  const paths = new Set([
    first.path, kernelCachePath(dir, "src2", options, "13.0", 90), kernelCachePath(dir, "src", compileOptions(90, { GIN_BF16: 0 }), "13.0", 90),
    kernelCachePath(dir, "src", options, "12.8", 90), kernelCachePath(dir, "src", options, "13.0", 100),
  ]);
  assert.equal(paths.size, 5, "each input names another file");
  writeFileSync(first.path, "truncated");
  const third = cachedCompile("src", options, "13.0", 90, compile, goodImage, dir);
  assert.equal(third.cached, false);
  assert.equal(compiles, 2);
  // A cache folder that cannot be written: the kernels still come back.
  const blocked = join(tempDir(), "file");
  writeFileSync(blocked, "");
  const unwritable = cachedCompile("src", options, "13.0", 90, compile, goodImage, join(blocked, "cuda"));
  assert.equal(unwritable.cached, false);
  assert.equal(kernelCacheDir({ SHORTGPT_CACHE_DIR: "/c" }), "/c/cuda");
  assert.equal(kernelCacheDir({ XDG_CACHE_HOME: "/x" }), "/x/shortgpt/cuda");
});

/** libnvrtc where the search finds one, else where pip's wheel put it on this machine. */
function findNvrtc(): string | undefined {
  for (const folder of searchFolders(SYSTEM_SEARCH)) {
    for (const file of ["libnvrtc.so.13", "libnvrtc.so.12"]) if (existsSync(join(folder, file))) return join(folder, file);
  }
  return undefined;
}

test("the kernel source compiles for Hopper in both precisions (NVRTC where found, else nvcc) and defines every kernel the backend launches", (t) => {
  for (const name of [...KERNEL_NAMES, ...BF16_KERNEL_NAMES]) assert.match(KERNEL_SOURCE, new RegExp(`extern "C" __global__ void (__launch_bounds__\\(\\d+\\) )?${name}\\(`), `kernel ${name} is defined`);
  const namesFor = (bf16: number): readonly string[] => [...KERNEL_NAMES, ...(bf16 ? BF16_KERNEL_NAMES : [])];
  const nvrtc = findNvrtc();
  const nvcc = spawnSync("nvcc", ["--version"], { encoding: "utf8" });
  if (nvrtc) {
    const rtc = bindNvrtc(nvrtc);
    for (const bf16 of [0, 1]) {
      const cubin = nvrtcCompile(rtc, KERNEL_SOURCE, "kernels.cu", compileOptions(90, { GIN_BF16: bf16 }));
      assert.deepEqual([...cubin.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46], "an ELF cubin");
      for (const name of namesFor(bf16)) assert.ok(Buffer.from(cubin).includes(name), `${name} in the cubin`);
    }
    assert.throws(() => nvrtcCompile(rtc, "extern \"C\" __global__ void broken( {", "broken.cu", compileOptions(90, {})), (e: unknown) => e instanceof DeviceError && /NVRTC could not compile broken\.cu/.test(e.message));
    t.diagnostic(`compiled with ${nvrtc}`);
  } else if (nvcc.status === 0) {
    const dir = tempDir();
    writeFileSync(join(dir, "k.cu"), KERNEL_SOURCE);
    for (const bf16 of [0, 1]) {
      const r = spawnSync("nvcc", ["--ptx", "-arch=compute_90", `-DGIN_BF16=${bf16}`, "-o", join(dir, `k${bf16}.ptx`), join(dir, "k.cu")], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      const ptx = readFileSync(join(dir, `k${bf16}.ptx`), "utf8");
      for (const name of namesFor(bf16)) assert.match(ptx, new RegExp(`\\.entry ${name}\\(`));
    }
    t.diagnostic("no libnvrtc found: compiled with nvcc");
  } else {
    // Neither compiler: the backend must then say NVRTC is missing.
    assert.throws(() => findCudaLibraries(), (e: unknown) => e instanceof DeviceError);
    t.diagnostic("no libnvrtc and no nvcc here: only the refusal was checked");
  }
});

test("--backend cuda without a driver is one clear line (exit 1); auto falls back without a word; bad --precision and --device are option errors", async () => {
  let noDriver = false;
  try {
    findCudaLibraries();
  } catch (err) {
    noDriver = err instanceof NoCudaDriverError;
  }
  if (noDriver) {
    const run = runCli(["score", MODEL_BIN, "--data", TINYSTORIES, "--max-tokens", "600", "--seq-len", "128", "--backend", "cuda"]);
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /needs libcuda\.so\.1.*: not found in .*\/usr\/local\/nvidia\/lib64.*is there a GPU and a driver/);
    assert.equal(run.stderr.trim().split("\n").length, 1, "one line");
    await assert.rejects(selectBackend("cuda", { threads: 1 }), (e: unknown) => e instanceof NoCudaDriverError);
    const { backend, notes } = await selectBackend("auto", { threads: 1 }, { ...BACKEND_FACTORIES, onnx: BACKEND_FACTORIES.reference });
    assert.equal(backend.name, "reference");
    assert.deepEqual(notes, [], "no GPU is the normal case: auto says nothing");
  } else {
    // A machine with a driver: auto must at least have tried cuda (a failure is a note, a success the backend).
    const { backend, notes } = await selectBackend("auto", { threads: 1 });
    assert.ok(backend.name.startsWith("cuda:") || notes.some((n) => n.startsWith("backend cuda unavailable")));
    await backend.dispose();
  }
  // A cuda failure other than a missing driver is reported when auto falls back.
  const broken = async (): Promise<never> => {
    throw new DeviceError("cuInit failed: CUDA_ERROR_NO_DEVICE");
  };
  const fallback = await selectBackend("auto", { threads: 1 }, { ...BACKEND_FACTORIES, cuda: broken, onnx: BACKEND_FACTORIES.reference });
  assert.deepEqual(fallback.notes, ["backend cuda unavailable (cuInit failed: CUDA_ERROR_NO_DEVICE); falling back"]);
  const precision = runCli(["score", MODEL_BIN, "--data", TINYSTORIES, "--precision", "fp16"]);
  assert.equal(precision.status, 2);
  assert.match(precision.stderr, /--precision "fp16" is not a precision \(choose one of: bf16, fp32/);
  await assert.rejects(selectBackend("cuda", { threads: 1, device: -1 }), (e: unknown) => e instanceof OptionError && /--device -1/.test(e.message));
});

test("host backends: hidden states stay with the backend that made them; rows, statistics and the head take row lists", async () => {
  const a = createReferenceBackend();
  const b = hostBackend(createReferenceKernels());
  const dim = 4;
  const x = Float32Array.of(1, 0, 0, 0, 0, 2, 0, 0, 3, 4, 0, 0);
  const y = Float32Array.of(1, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0);
  const sx = await a.upload(x, 3, dim);
  const sy = await a.upload(y, 3, dim);
  const stats = await a.rowStats(sx, sy, { cosine: true, magnitude: true });
  assert.deepEqual([...stats.cosine!], [1, 0, 0.8]);
  assert.deepEqual([...stats.magnitude!], [0, 1, 0.75]);
  const picked = await a.rowStats(sx, sy, { cosine: true, magnitude: false }, Int32Array.of(2, 0));
  assert.deepEqual([...picked.cosine!], [0.8, 1]);
  assert.equal(picked.magnitude, undefined);
  assert.deepEqual([...(await a.readRows(sx, Int32Array.of(2)))], [3, 4, 0, 0]);
  await assert.rejects(a.readRows(sx, Int32Array.of(3)), (e: unknown) => e instanceof OptionError && /row 3 is outside 0\.\.2/.test(e.message));
  const foreign = { rows: 3, dim, owner: "cuda:0" };
  await assert.rejects(b.rowStats(foreign, sy, { cosine: true, magnitude: false }), (e: unknown) => e instanceof OptionError && /made by backend cuda:0/.test(e.message));
  const head = await a.prepareHead("h", () => ({ finalNorm: new Float32Array(dim).fill(1), classifier: Float32Array.of(1, 0, 0, 0, 0, 1, 0, 0) }), 2);
  const nll = await a.runHead(sx, Int32Array.of(1), head, 1e-5, Int32Array.of(1));
  assert.ok(nll.kind === "nll" && nll.targetLogit[0]! > 1.9 && nll.logSumExp[0]! > nll.targetLogit[0]!);
});

test("the gpu bundle's device check runs its own harness on the reference backend (dry run: the comparisons have nothing to compare)", () => {
  const out = tempDir();
  mkdirSync(out, { recursive: true });
  const r = spawnSync(process.execPath, [join("dist", "bench", "gpu", "deviceCheck.js"), "--out", out, "--dry-run-on-reference", "--skip-correctness", "--only-shapes", "tiny"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const report = JSON.parse(readFileSync(join(out, "shortgpt.json"), "utf8")) as { speed: { shape: string; task: string; tokensPerSecond: number; bi?: number[]; nll?: number }[] };
  assert.deepEqual(report.speed.map((s) => `${s.shape}/${s.task}`), ["tiny/score", "tiny/ppl"]);
  assert.equal(report.speed[0]!.bi!.length, 2);
  assert.ok(report.speed[1]!.nll! > Math.log(1000) * 0.9, "random weights: about log(vocab) nats");
});

// The CUDA functions the cuda backend calls, bound through koffi (FFI, no addon of our own): the
// driver API (context, memory, modules, launches), cuBLAS (GEMMs) and NVRTC (run-time
// compilation). Every call's status is checked; a failure is a DeviceError naming the call.
// Device pointers are bigints (CUdeviceptr); all work goes to the legacy default stream, so that
// the synchronous copies order themselves after the kernels without explicit syncs.

import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import koffi from "koffi";
import { DeviceError } from "../../errors.js";
import type { CudaLibraryPaths } from "./libraries.js";

export type DevicePtr = bigint;

/** cuBLAS and CUDA data types and enums used here (cublas_api.h, library_types.h). */
export const CUDA_R_32F = 0;
export const CUDA_R_16BF = 14;
export const CUBLAS_COMPUTE_32F = 68;
export const CUBLAS_OP_N = 0;
export const CUBLAS_OP_T = 1;
export const CUBLAS_GEMM_DEFAULT = -1;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;
const CUDA_ERROR_OUT_OF_MEMORY = 2;

const CUBLAS_STATUS: Record<number, string> = {
  1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED", 7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH",
  11: "CUBLAS_STATUS_MAPPING_ERROR", 13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
  16: "CUBLAS_STATUS_LICENSE_ERROR",
};

/** A kernel parameter: a device pointer, a 32-bit int, a float, or a 64-bit int. */
export type KernelArg = { ptr: DevicePtr | null } | { i32: number } | { f32: number } | { i64: number };

export interface Gemm {
  transA: number;
  transB: number;
  m: number;
  n: number;
  k: number;
  a: DevicePtr;
  aType: number;
  lda: number;
  b: DevicePtr;
  bType: number;
  ldb: number;
  beta: number;
  c: DevicePtr;
  cType: number;
  ldc: number;
}

export interface StridedBatch {
  strideA: number;
  strideB: number;
  strideC: number;
  count: number;
}

type Fn = (...args: unknown[]) => unknown;

export class CudaApi {
  private readonly cu: Record<string, Fn> = {};
  private readonly blas: Record<string, Fn> = {};
  private readonly rtc: Record<string, Fn>;
  private cublasHandle: unknown = null;
  readonly deviceIndex: number;
  readonly deviceName: string;
  /** Compute capability, e.g. 90 for Hopper. */
  readonly computeCapability: number;
  readonly totalMemory: number;

  constructor(paths: CudaLibraryPaths, deviceIndex: number) {
    const driver = loadLibrary(paths.cuda);
    bindFunctions(driver, this.cu, [
      "int cuInit(unsigned int flags)",
      "int cuDeviceGetCount(_Out_ int *count)",
      "int cuDeviceGet(_Out_ int *device, int ordinal)",
      "int cuDeviceGetName(void *name, int len, int device)",
      "int cuDeviceGetAttribute(_Out_ int *value, int attribute, int device)",
      "int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int device)",
      "int cuDevicePrimaryCtxRetain(_Out_ void **ctx, int device)",
      "int cuCtxSetCurrent(void *ctx)",
      "int cuCtxSynchronize()",
      "int cuMemGetInfo_v2(_Out_ size_t *free, _Out_ size_t *total)",
      "int cuMemAlloc_v2(_Out_ uint64_t *ptr, size_t bytes)",
      "int cuMemFree_v2(uint64_t ptr)",
      "int cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t bytes)",
      "int cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t bytes)",
      "int cuMemcpyDtoD_v2(uint64_t dst, uint64_t src, size_t bytes)",
      "int cuMemsetD8_v2(uint64_t dst, uint8_t value, size_t bytes)",
      "int cuModuleLoadData(_Out_ void **module, const void *image)",
      "int cuModuleGetFunction(_Out_ void **fn, void *module, const char *name)",
      "int cuLaunchKernel(void *fn, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx, unsigned int by, unsigned int bz, unsigned int shared, void *stream, void **params, void **extra)",
      "int cuGetErrorName(int error, _Out_ const char **name)",
    ]);
    this.deviceIndex = deviceIndex;
    this.check("cuInit", this.cu["cuInit"]!(0));
    const count = [0];
    this.check("cuDeviceGetCount", this.cu["cuDeviceGetCount"]!(count));
    if (!(Number.isInteger(deviceIndex) && deviceIndex >= 0 && deviceIndex < count[0]!)) {
      throw new DeviceError(`--device ${deviceIndex}: this machine has ${count[0]} CUDA device(s)`, { option: "--device", expected: count[0]! > 0 ? `0..${count[0]! - 1}` : "a GPU", got: deviceIndex });
    }
    const device = [0];
    this.check("cuDeviceGet", this.cu["cuDeviceGet"]!(device, deviceIndex));
    const nameBuf = Buffer.alloc(256);
    this.check("cuDeviceGetName", this.cu["cuDeviceGetName"]!(nameBuf, 256, device[0]));
    this.deviceName = nameBuf.toString("utf8").replace(/\0.*$/s, "");
    const major = [0];
    const minor = [0];
    this.check("cuDeviceGetAttribute", this.cu["cuDeviceGetAttribute"]!(major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device[0]));
    this.check("cuDeviceGetAttribute", this.cu["cuDeviceGetAttribute"]!(minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device[0]));
    this.computeCapability = major[0]! * 10 + minor[0]!;
    const total = [0];
    this.check("cuDeviceTotalMem", this.cu["cuDeviceTotalMem_v2"]!(total, device[0]));
    this.totalMemory = Number(total[0]);
    const ctx = [null];
    this.check("cuDevicePrimaryCtxRetain", this.cu["cuDevicePrimaryCtxRetain"]!(ctx, device[0]));
    this.check("cuCtxSetCurrent", this.cu["cuCtxSetCurrent"]!(ctx[0]));

    preloadSiblings(paths.cublas, /^libcublasLt\.so\.\d+$/);
    const cublas = loadLibrary(paths.cublas);
    bindFunctions(cublas, this.blas, [
      "int cublasCreate_v2(_Out_ void **handle)",
      "int cublasDestroy_v2(void *handle)",
      "int cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, uint64_t A, int Atype, int lda, uint64_t B, int Btype, int ldb, const void *beta, uint64_t C, int Ctype, int ldc, int computeType, int algo)",
      "int cublasGemmStridedBatchedEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, uint64_t A, int Atype, int lda, int64_t strideA, uint64_t B, int Btype, int ldb, int64_t strideB, const void *beta, uint64_t C, int Ctype, int ldc, int64_t strideC, int batchCount, int computeType, int algo)",
    ]);
    const handle = [null];
    this.checkBlas("cublasCreate", this.blas["cublasCreate_v2"]!(handle));
    this.cublasHandle = handle[0];

    this.rtc = bindNvrtc(paths.nvrtc);
  }

  private check(call: string, status: unknown, what?: string): void {
    if (status === 0) return;
    const code = Number(status);
    const name = [null as string | null];
    const errorName = this.cu["cuGetErrorName"]?.(code, name) === 0 && name[0] ? name[0] : `error ${code}`;
    if (code === CUDA_ERROR_OUT_OF_MEMORY) {
      const [free, total] = this.memoryInfoUnchecked();
      throw new DeviceError(`out of GPU memory${what ? ` allocating ${what}` : ""} (${mib(free)} MiB free of ${mib(total)} MiB on device ${this.deviceIndex})`, {
        hint: "use a smaller --batch-tokens, a device with more memory, or --precision bf16; weights that do not fit are streamed layer by layer",
      });
    }
    throw new DeviceError(`${call} failed: ${errorName}${what ? ` (${what})` : ""}`, { hint: "check the driver (nvidia-smi) and that the CUDA libraries match it; SHORTGPT_CUDA_LIBS chooses them" });
  }

  private checkBlas(call: string, status: unknown): void {
    if (status === 0) return;
    throw new DeviceError(`${call} failed: ${CUBLAS_STATUS[Number(status)] ?? `status ${String(status)}`}`, { hint: "check that libcublas matches the driver's CUDA version (SHORTGPT_CUDA_LIBS chooses it)" });
  }

  private memoryInfoUnchecked(): [number, number] {
    const free = [0];
    const total = [0];
    this.cu["cuMemGetInfo_v2"]!(free, total);
    return [Number(free[0]), Number(total[0])];
  }

  /** Free and total bytes of device memory. */
  memoryInfo(): { free: number; total: number } {
    const free = [0];
    const total = [0];
    this.check("cuMemGetInfo", this.cu["cuMemGetInfo_v2"]!(free, total));
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  alloc(bytes: number, what: string): DevicePtr {
    const out = [0];
    this.check("cuMemAlloc", this.cu["cuMemAlloc_v2"]!(out, Math.max(1, bytes)), `${mib(bytes)} MiB for ${what}`);
    return BigInt(out[0]!);
  }

  free(ptr: DevicePtr): void {
    this.check("cuMemFree", this.cu["cuMemFree_v2"]!(ptr));
  }

  upload(dst: DevicePtr, src: ArrayBufferView): void {
    this.check("cuMemcpyHtoD", this.cu["cuMemcpyHtoD_v2"]!(dst, viewBytes(src), src.byteLength));
  }

  download(dst: ArrayBufferView, src: DevicePtr): void {
    this.check("cuMemcpyDtoH", this.cu["cuMemcpyDtoH_v2"]!(viewBytes(dst), src, dst.byteLength));
  }

  copy(dst: DevicePtr, src: DevicePtr, bytes: number): void {
    this.check("cuMemcpyDtoD", this.cu["cuMemcpyDtoD_v2"]!(dst, src, bytes));
  }

  synchronize(): void {
    this.check("cuCtxSynchronize", this.cu["cuCtxSynchronize"]!());
  }

  loadModule(image: Uint8Array): unknown {
    const mod = [null];
    this.check("cuModuleLoadData", this.cu["cuModuleLoadData"]!(mod, image));
    return mod[0];
  }

  getFunction(module: unknown, name: string): unknown {
    const fn = [null];
    this.check("cuModuleGetFunction", this.cu["cuModuleGetFunction"]!(fn, module, name), name);
    return fn[0];
  }

  launch(fn: unknown, name: string, grid: [number, number?, number?], block: number, args: readonly KernelArg[]): void {
    const params = args.map((a) => {
      if ("ptr" in a) return BigUint64Array.of(a.ptr ?? 0n);
      if ("i32" in a) return Int32Array.of(a.i32);
      if ("f32" in a) return Float32Array.of(a.f32);
      return BigInt64Array.of(BigInt(a.i64));
    });
    this.check("cuLaunchKernel", this.cu["cuLaunchKernel"]!(fn, grid[0], grid[1] ?? 1, grid[2] ?? 1, block, 1, 1, 0, null, params, null), name);
  }

  gemm(g: Gemm): void {
    this.checkBlas("cublasGemmEx", this.blas["cublasGemmEx"]!(
      this.cublasHandle, g.transA, g.transB, g.m, g.n, g.k, ONE, g.a, g.aType, g.lda, g.b, g.bType, g.ldb, g.beta === 0 ? ZERO : ONE,
      g.c, g.cType, g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT,
    ));
  }

  gemmStridedBatched(g: Gemm, batch: StridedBatch): void {
    this.checkBlas("cublasGemmStridedBatchedEx", this.blas["cublasGemmStridedBatchedEx"]!(
      this.cublasHandle, g.transA, g.transB, g.m, g.n, g.k, ONE, g.a, g.aType, g.lda, batch.strideA, g.b, g.bType, g.ldb, batch.strideB,
      g.beta === 0 ? ZERO : ONE, g.c, g.cType, g.ldc, batch.strideC, batch.count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT,
    ));
  }

  nvrtcVersion(): string {
    const major = [0];
    const minor = [0];
    this.rtc["nvrtcVersion"]!(major, minor);
    return `${major[0]}.${minor[0]}`;
  }

  /** Compiles CUDA C source to a cubin for the given options; a compile error is a DeviceError with NVRTC's log. */
  compile(source: string, name: string, options: readonly string[]): Uint8Array {
    return nvrtcCompile(this.rtc, source, name, options);
  }

  dispose(): void {
    if (this.cublasHandle) this.blas["cublasDestroy_v2"]!(this.cublasHandle);
    this.cublasHandle = null;
  }
}

/** NVRTC: source -> cubin. Shared with the compile test, which loads NVRTC alone (no GPU needed). */
export function nvrtcCompile(rtc: Record<string, Fn>, source: string, name: string, options: readonly string[]): Uint8Array {
  const prog = [null];
  const created = rtc["nvrtcCreateProgram"]!(prog, source, name, 0, null, null);
  if (created !== 0) throw new DeviceError(`nvrtcCreateProgram failed with status ${String(created)}`);
  try {
    const status = rtc["nvrtcCompileProgram"]!(prog[0], options.length, [...options]);
    if (status !== 0) {
      const size = [0];
      rtc["nvrtcGetProgramLogSize"]!(prog[0], size);
      const log = Buffer.alloc(Number(size[0]));
      rtc["nvrtcGetProgramLog"]!(prog[0], log);
      throw new DeviceError(`NVRTC could not compile ${name} (${options.join(" ")}): ${log.toString("utf8").replace(/\0+$/, "").trim().slice(0, 2000)}`, {
        hint: "the NVRTC library may be older than the GPU (SHORTGPT_CUDA_LIBS chooses another)",
      });
    }
    const size = [0];
    if (rtc["nvrtcGetCUBINSize"]!(prog[0], size) !== 0) throw new DeviceError(`nvrtcGetCUBINSize failed for ${name}`);
    const cubin = Buffer.alloc(Number(size[0]));
    if (rtc["nvrtcGetCUBIN"]!(prog[0], cubin) !== 0) throw new DeviceError(`nvrtcGetCUBIN failed for ${name}`);
    return new Uint8Array(cubin.buffer, cubin.byteOffset, cubin.byteLength);
  } finally {
    rtc["nvrtcDestroyProgram"]!(prog);
  }
}

const NVRTC_FUNCTIONS = [
  "int nvrtcVersion(_Out_ int *major, _Out_ int *minor)",
  "int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, void *headers, void *includeNames)",
  "int nvrtcCompileProgram(void *prog, int numOptions, const char **options)",
  "int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)",
  "int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)",
  "int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)",
  "int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)",
  "int nvrtcDestroyProgram(_Inout_ void **prog)",
];

/** Binds NVRTC (alone, it compiles without a GPU, as the tests do). */
export function bindNvrtc(path: string): Record<string, Fn> {
  preloadSiblings(path, /^libnvrtc-builtins\.so\.[\d.]+$/);
  const rtc: Record<string, Fn> = {};
  bindFunctions(loadLibrary(path), rtc, NVRTC_FUNCTIONS);
  return rtc;
}

function loadLibrary(path: string): koffi.IKoffiLib {
  try {
    return koffi.load(path);
  } catch (err) {
    throw new DeviceError(`cannot load ${path}: ${err instanceof Error ? err.message : String(err)}`, { hint: "set SHORTGPT_CUDA_LIBS to a folder with matching CUDA 12/13 libraries" });
  }
}

/** Declares each C prototype on the library, keyed by the function's name. */
function bindFunctions(lib: koffi.IKoffiLib, into: Record<string, Fn>, decls: readonly string[]): void {
  for (const decl of decls) into[/\s(\w+)\(/.exec(decl)![1]!] = lib.func(decl) as Fn;
}

/**
 * Loads the libraries beside `path` whose names match (cuBLAS's Lt library, NVRTC's builtins):
 * they are opened by name at run time, which fails for a folder outside the dynamic linker's
 * path (a Python wheel's, SHORTGPT_CUDA_LIBS); one already loaded satisfies that lookup.
 */
function preloadSiblings(path: string, name: RegExp): void {
  const folder = dirname(path);
  let files: string[];
  try {
    files = readdirSync(folder);
  } catch {
    return;
  }
  for (const file of files.filter((f) => name.test(f)).sort()) {
    try {
      koffi.load(join(folder, file));
    } catch {
      // not loadable here: the dynamic linker may still find another copy
    }
  }
}

const ONE = Float32Array.of(1);
const ZERO = Float32Array.of(0);

function mib(bytes: number): string {
  const m = bytes / 2 ** 20;
  return m < 10 ? m.toFixed(2) : m.toFixed(0);
}

/** The bytes a typed array views (koffi passes a Buffer/Uint8Array view as a pointer to its first byte). */
function viewBytes(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

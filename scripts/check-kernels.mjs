// Compile-checks the cuda backend's kernel source (src/backend/cuda/kernelSource.ts) with nvcc,
// for a machine that has the CUDA toolkit but no GPU or NVRTC: the same source and -D options the
// backend hands NVRTC at run time (compile.ts), for each architecture and GEMM input type. A
// compile error here is one NVRTC would report on the device; passing says nothing about results
// (bench/gpu/deviceCheck.ts checks those on a GPU).
//
//   npx tsc -p . && node scripts/check-kernels.mjs [--arch 80,90] [--nvcc PATH]
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const { values: args } = parseArgs({ options: { arch: { type: "string" }, nvcc: { type: "string" } } });
const nvcc = args.nvcc ?? process.env.NVCC ?? "/usr/local/cuda/bin/nvcc";
const archs = (args.arch ?? "80,90").split(",").map(Number);

const { KERNEL_SOURCE, KERNEL_NAMES, BF16_KERNEL_NAMES } = await import(join(root, "dist", "src", "backend", "cuda", "kernelSource.js"));
const { compileOptions } = await import(join(root, "dist", "src", "backend", "cuda", "compile.js"));

const dir = mkdtempSync(join(tmpdir(), "shortgpt-kernels-"));
let failed = 0;
try {
  const file = join(dir, "shortgpt_kernels.cu");
  writeFileSync(file, KERNEL_SOURCE);
  for (const cc of archs) {
    for (const bf16 of [0, 1]) {
      // NVRTC's options as the backend builds them; nvcc spells the architecture -arch and needs -cubin to stop there.
      const nvrtc = compileOptions(cc, { GIN_BF16: bf16 });
      const defines = nvrtc.filter((o) => o.startsWith("-D") || o.startsWith("-std"));
      const cubin = join(dir, `sm${cc}-${bf16}.cubin`);
      const run = spawnSync(nvcc, [`-arch=sm_${cc}`, ...defines, "-cubin", "-Werror", "all-warnings", "-o", cubin, file], { encoding: "utf8" });
      const label = `sm_${cc} GIN_BF16=${bf16} (NVRTC options: ${nvrtc.join(" ")})`;
      if (run.error || run.status !== 0) {
        failed++;
        console.error(`FAIL ${label}\n${run.error?.message ?? ""}${run.stdout}${run.stderr}`);
        continue;
      }
      // Every kernel the backend looks up must be in the image: its name as a string of the ELF symbol table.
      const image = readFileSync(cubin).toString("latin1");
      const expected = [...KERNEL_NAMES, ...(bf16 ? BF16_KERNEL_NAMES : [])];
      const absent = expected.filter((k) => !image.includes(`\0${k}\0`));
      if (absent.length > 0) {
        failed++;
        console.error(`FAIL ${label}: kernels missing from the image: ${absent.join(", ")}`);
        continue;
      }
      console.log(`ok   ${label}: all ${expected.length} kernels in the image`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exitCode = failed > 0 ? 1 : 0;

// Makes build/gpu-bundle/, the self-contained folder carried to the borrowed GPU machine (which has
// no Node.js and no network): this node binary xz-compressed, the compiled dist/src and dist/bench,
// a minimal linux-x64 node_modules (koffi's one prebuilt, @huggingface/tokenizers), the python peer
// and device-check.sh. Fails when the folder would exceed the carry limit or when code reachable
// from the device entry points statically imports a package the bundle lacks.
//
//   npm run gpu-bundle            (tsc first, then this script)
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "build", "gpu-bundle");
// The device tool carries at most 64 MiB; 60 leaves room for the outputs that travel back.
const LIMIT_BYTES = 60 * 1024 * 1024;
// Packages the device code may load; onnxruntime-* and vega are imported lazily or only by
// reports and stay behind (the import walk below fails the build if that stops being true).
const PACKAGES = ["koffi", "@huggingface/tokenizers"];

function fail(message) {
  console.error(`gpu-bundle: ${message}`);
  process.exit(1);
}

function copy(from, to) {
  mkdirSync(dirname(to), { recursive: true });
  cpSync(from, to, { recursive: true, dereference: true });
}

function sizeOf(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((sum, name) => sum + sizeOf(join(path, name)), 0);
}

function mib(bytes) {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

for (const dir of ["dist/src", "dist/bench"]) {
  if (!existsSync(join(root, dir))) fail(`${dir} is missing: run tsc -p . first (npm run gpu-bundle does)`);
}
if (process.platform !== "linux" || process.arch !== "x64") fail(`the device is linux-x64; this node is ${process.platform}-${process.arch}`);

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// node: xz's default preset (-9 saves 2 MiB and costs a minute more); cached per node version
// and size under build/, since the binary only changes when node does.
const nodeCache = join(root, "build", `node-${process.version}-${statSync(process.execPath).size}.xz`);
if (!existsSync(nodeCache)) {
  const xz = spawnSync("xz", ["-T2", "-c", process.execPath], { maxBuffer: 512 * 1024 * 1024 });
  if (xz.status !== 0) fail(`xz failed (${xz.error?.message ?? xz.stderr.toString().trim()})`);
  writeFileSync(`${nodeCache}.tmp`, xz.stdout);
  renameSync(`${nodeCache}.tmp`, nodeCache);
}
copyFileSync(nodeCache, join(out, "node.xz"));
writeFileSync(join(out, "node.version"), `${process.version}\n`);

copy(join(root, "dist", "src"), join(out, "dist", "src"));
copy(join(root, "dist", "bench"), join(out, "dist", "bench"));
copy(join(root, "package.json"), join(out, "package.json")); // "type": "module", and repoRoot() finds the bundle root
// The tiny Gemma 2/3 and Phi-3 checkpoints the device check runs end to end (bench/gpu/familyChecks.ts,
// found through repoRoot(): they are in the repository, not in ../shared).
copy(join(root, "test", "fixtures", "hf-attn"), join(out, "test", "fixtures", "hf-attn"));
// The tiny Mamba, Mamba-2, RWKV-4 and RWKV-6 checkpoints of bench/gpu/recurrentChecks.ts.
for (const fixture of ["mamba_tiny", "mamba2_tiny", "rwkv4_tiny", "rwkv6_tiny.gguf"]) copy(join(root, "test", "fixtures", fixture), join(out, "test", "fixtures", fixture));

// koffi: index.js inlines its package.json and tools, and finds build/koffi/<triplet>/koffi.node;
// only the linux_x64 one is kept (the other 17 prebuilts are most of its 28 MiB).
const koffi = join(root, "node_modules", "koffi");
for (const file of ["package.json", "index.js", "index.d.ts", "LICENSE.txt", "build/koffi/linux_x64/koffi.node"]) {
  copy(join(koffi, file), join(out, "node_modules", "koffi", file));
}
const tokenizers = join(root, "node_modules", "@huggingface", "tokenizers");
for (const file of ["package.json", "dist", "LICENSE"]) {
  if (existsSync(join(tokenizers, file))) copy(join(tokenizers, file), join(out, "node_modules", "@huggingface", "tokenizers", file));
}
for (const name of PACKAGES) {
  const pkg = JSON.parse(readFileSync(join(out, "node_modules", name, "package.json"), "utf8"));
  const deps = Object.keys(pkg.dependencies ?? {});
  if (deps.length > 0) fail(`${name} now depends on ${deps.join(", ")}: add them to the bundle`);
}

for (const file of readdirSync(join(root, "bench", "gpu")).filter((f) => f.endsWith(".py"))) {
  copy(join(root, "bench", "gpu", file), join(out, "bench", "gpu", file));
}
copy(join(root, "bench", "gpu", "device-check.sh"), join(out, "device-check.sh"));

// The CPU bf16 engine for device-check.sh's CPU step (SHORTGPT_CPU_CHECK=1: the device's Xeon has
// AMX, which this machine lacks): the helper, the PyTorch peer script, and, when the helper links
// oneDNN, Debian's libdnnl (xz, cached like node: 40 MiB raw) with the two libraries it loads.
// The host-memory and recurrent-scan helpers too (small): the CPU twins of the device checks'
// recurrent layers and the CPU step run on them as on this machine (TypeScript twins without).
for (const helper of ["shortgpt_memory.node", "shortgpt_scan.node"]) {
  if (existsSync(join(root, "build", helper))) copy(join(root, "build", helper), join(out, "build", helper));
}
const cpuHelper = join(root, "build", "shortgpt_cpu.node");
if (existsSync(cpuHelper)) {
  copy(cpuHelper, join(out, "build", "shortgpt_cpu.node"));
  copy(join(root, "bench", "peer_torch.py"), join(out, "bench", "peer_torch.py"));
  const ldd = spawnSync("ldd", [cpuHelper], { encoding: "utf8" });
  const linked = (name) => /\s=>\s(\S+)/.exec(ldd.stdout.split("\n").find((line) => line.trim().startsWith(name)) ?? "")?.[1];
  const dnnl = linked("libdnnl.so");
  if (dnnl) {
    const dnnlCache = join(root, "build", `libdnnl-${statSync(dnnl).size}.so.xz`);
    if (!existsSync(dnnlCache)) {
      const xz = spawnSync("xz", ["-T2", "-c", dnnl], { maxBuffer: 512 * 1024 * 1024 });
      if (xz.status !== 0) fail(`xz failed on ${dnnl}`);
      writeFileSync(`${dnnlCache}.tmp`, xz.stdout);
      renameSync(`${dnnlCache}.tmp`, dnnlCache);
    }
    copy(dnnlCache, join(out, "build", "cpu-libs", "libdnnl.so.2.xz"));
    const dnnlLdd = spawnSync("ldd", [dnnl], { encoding: "utf8" }).stdout;
    for (const name of ["libgomp.so.1", "libOpenCL.so.1"]) {
      const from = /\s=>\s(\S+)/.exec(dnnlLdd.split("\n").find((line) => line.trim().startsWith(name)) ?? "")?.[1];
      if (from) copy(from, join(out, "build", "cpu-libs", name));
    }
  }
}

// The real model the correctness checks run (stories260K) and some of its text: ../shared does
// not travel, so a copy goes into the bundle (build/, never the repository); device-check.sh
// points SHORTGPT_SHARED at it.
const shared = resolve(process.env.SHORTGPT_SHARED ?? join(root, "..", "shared"));
for (const file of ["stories260K.bin", "tok512.bin", "stories260K.gguf"]) {
  const from = join(shared, "models", "stories260K", file);
  if (!existsSync(from)) fail(`${from} is missing (set SHORTGPT_SHARED to the shared folder)`);
  copy(from, join(out, "shared", "models", "stories260K", file));
}
// MMLU (the device check's items/s row) and stories260K's tokenizer as tokenizer.json (the prune end-to-end row's checkpoint).
for (const split of ["dev", "test"]) {
  for (const file of readdirSync(join(shared, "data", "mmlu", split))) copy(join(shared, "data", "mmlu", split, file), join(out, "shared", "data", "mmlu", split, file));
}
const hfDir = join(out, "shared", "stories-hf");
const converted = spawnSync(process.execPath, [join(root, "dist", "src", "cli", "main.js"), "convert", join(shared, "models", "stories260K", "stories260K.bin"), "--to", "safetensors", hfDir], { encoding: "utf8" });
if (converted.status !== 0) fail(`converting stories260K for its tokenizer.json failed: ${converted.stderr}`);
for (const file of ["model.safetensors", "config.json"]) rmSync(join(hfDir, file), { force: true });
const text = readFileSync(join(shared, "data", "tinystories", "tinystories_val.txt"), "utf8");
mkdirSync(join(out, "shared", "data", "tinystories"), { recursive: true });
writeFileSync(join(out, "shared", "data", "tinystories", "tinystories_val.txt"), text.slice(0, 200_000));

// Walk the static imports from the device entry points: a bare specifier that is neither node:
// nor bundled would crash on the device, where there is no node_modules to fall back on.
const entries = [...readdirSync(join(out, "dist", "bench", "gpu")).filter((f) => f.endsWith(".js")).map((f) => join(out, "dist", "bench", "gpu", f)), join(out, "dist", "src", "cli", "main.js")];
const seen = new Set();
const missing = new Map();
const lazy = new Set();
const pending = [...entries];
while (pending.length > 0) {
  const file = pending.pop();
  if (seen.has(file)) continue;
  seen.add(file);
  if (!existsSync(file)) fail(`${relative(out, file)} is imported but not in dist`);
  const text = readFileSync(file, "utf8");
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+["']([^"']+)["']|^\s*import\s+["']([^"']+)["']/gm)) {
    const spec = m[1] ?? m[2];
    if (spec.startsWith(".")) pending.push(resolve(dirname(file), spec));
    else if (!spec.startsWith("node:")) {
      const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
      if (!PACKAGES.includes(name)) missing.set(name, relative(out, file));
    }
  }
  for (const m of text.matchAll(/import\(\s*["']([^"'.][^"']*)["']\s*\)/g)) lazy.add(m[1]);
}
if (missing.size > 0) {
  fail(`device code statically imports packages the bundle lacks: ${[...missing].map(([n, f]) => `${n} (from ${f})`).join(", ")}`);
}

const total = sizeOf(out);
console.log(`gpu-bundle: ${relative(root, out)} = ${mib(total)} (node.xz ${mib(statSync(join(out, "node.xz")).size)}, limit ${mib(LIMIT_BYTES)}); ` +
  `${entries.length} entry points, ${seen.size} modules walked${lazy.size > 0 ? `, lazy imports left out: ${[...lazy].join(", ")}` : ""}`);
if (total > LIMIT_BYTES) fail(`bundle is ${mib(total)}, over the ${mib(LIMIT_BYTES)} limit`);

// Run the dry run from a copy outside the repository, so node cannot resolve packages from the
// repository's own node_modules and hide a file the bundle is missing.
if (!process.argv.includes("--no-verify")) {
  const probe = mkdtempSync(join(tmpdir(), "gpu-bundle-verify-"));
  try {
    cpSync(out, probe, { recursive: true });
    execFileSync("bash", [join(probe, "device-check.sh"), "--dry-run", join(probe, "gpu-out")], { stdio: "inherit", env: { ...process.env, SHORTGPT_NODE_DIR: join(probe, ".node") } });
  } catch {
    fail("the dry run of the copied bundle failed (see above)");
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

// npm run bench: shortgpt's engine against PyTorch + transformers, measured in the same run.
//  1. stories260K: tokens/s of scoring and perplexity on every backend.
//  1b. The CPU's features and GEMMs: the bf16 kernel against onnxruntime's fp32 Gemm (bench/cpuGemm.ts).
//  2-3. TinyLlama-1.1B and Llama-2-7B shapes (random BF16 weights): BI scoring and perplexity,
//     8 x 512 tokens, 2 threads, shortgpt bf16 and fp32 (--precision) vs PyTorch bf16 and fp32
//     (a PyTorch dtype whose weights do not fit in this machine's memory is reported so); ratios,
//     peak RSS, and the bf16 engines' BI against shortgpt fp32's (ranking, largest difference).
//  3b. Llama-2-7B shape (section "prune"): pruning 8 of 32
//     layers (MB/s, RSS) with the native O_DIRECT writer and with buffered writes, beside
//     cp -r + sync of the checkpoint, in interleaved rounds (medians and ranges), with the input
//     in the page cache and (where drop_caches is writable) with a cold cache.
// Each measurement runs in its own process (bench/runTask.ts) so its peak RSS is its own.
//  4. Benchmark tasks on stories260K: items per second (the full MMLU test, 0-shot; 500 items of each other task).
//  5. The other families at real shapes (random weights from transformers' own initialisation, saved
//     bf16 by save_pretrained: bench/random_hf_checkpoint.py): Mamba-1.4B, RWKV-4-430M, Gemma-2-2B,
//     Phi-3-mini; BI scoring of 2 x 256 tokens, shortgpt onnx fp32 vs PyTorch fp32 and bf16, and the
//     largest BI difference from shortgpt's (the same computation, not only the same speed). Families read as
//     llama.cpp GGUF only (RWKV-7 1.5B: random weights of the published shape, bench/random_rwkv7_gguf.py) run
//     against llama.cpp (node-llama-cpp, bench/peer_llamacpp.ts) on the same windows, with the largest difference of
//     next-token log-probabilities at a few positions as their correctness column.
// Writes bench/results.json and bench/RESULTS.md. Options: --skip-7b, --skip-peer, --7b-ppl (perplexity rows on the 7B shape too), --score-only
// (BI scoring without perplexity), and
// --only stories|cpu|tinyllama|7b|prune|tasks|families (or several, comma-separated) to rerun sections (the others are kept
// from results.json; with --families NAME,... only those models' rows of the families section).

import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { LLAMA2_7B, type LlamaShape, TINYLLAMA_1B, ensureRandomCheckpoint } from "./randomCheckpoint.js";
import { repoRoot, sharedPath } from "../src/shared.js";

const root = repoRoot();
const cache = join(root, "bench", "cache");
const args = new Set(process.argv.slice(2));
const THREADS = 2;
const log = (line: string): void => void process.stderr.write(`[bench] ${line}\n`);

type Row = Record<string, string | number>;
interface Section {
  key: string;
  section: string;
  rows: Row[];
  measured: string;
}
const results: Section[] = [];
const only = (() => {
  const i = process.argv.indexOf("--only");
  return i >= 0 ? process.argv[i + 1] : undefined;
})();
const wants = (key: string): boolean => only === undefined || only.split(",").includes(key);

function runJson(command: string, argv: string[]): Record<string, unknown> {
  log(`${command} ${argv.join(" ")}`);
  const r = spawnSync(command, argv, { encoding: "utf8", maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${command} failed (${r.status}):\n${r.stderr}`);
  const line = r.stdout.trim().split("\n").pop()!;
  log(`-> ${line.length > 400 ? `${line.slice(0, 400)}...` : line}`);
  return JSON.parse(line) as Record<string, unknown>;
}

function ours(task: string, model: string, extra: string[]): Record<string, unknown> {
  return runJson(process.execPath, [join(root, "dist", "bench", "runTask.js"), task, model, ...extra]);
}

/** The Python with torch + transformers: .venv (made from the local wheel index if missing), else the system's. */
function peerPython(): string | undefined {
  const venv = join(root, ".venv", "bin", "python");
  const has = (py: string): boolean => spawnSync(py, ["-c", "import torch, transformers, safetensors"]).status === 0;
  if (existsSync(venv) && has(venv)) return venv;
  log("creating .venv with torch, transformers, safetensors (offline, from pip's configured index)");
  spawnSync("python3", ["-m", "venv", join(root, ".venv")], { stdio: "inherit" });
  spawnSync(venv, ["-m", "pip", "install", "-q", "torch", "transformers", "safetensors", "numpy"], { stdio: "inherit" });
  if (has(venv)) return venv;
  log("pip could not install torch; trying Debian's python3-torch");
  spawnSync("apt-get", ["install", "-y", "-q", "python3-torch", "python3-numpy"], { stdio: "inherit" });
  return has("python3") ? "python3" : undefined;
}

/** Total size of the files under a folder. */
function dirBytes(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

function windowsFile(shape: Pick<LlamaShape, "vocabSize">, nWindows: number, seqLen: number): string {
  // Deterministic ids, BOS first: the same tokens for shortgpt and the peer.
  let state = 12345;
  const next = (): number => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
  const windows = Array.from({ length: nWindows }, () => [1, ...Array.from({ length: seqLen - 1 }, () => 2 + (next() % (shape.vocabSize - 2)))]);
  const path = join(cache, `ids-${nWindows}x${seqLen}-${shape.vocabSize}.json`);
  writeFileSync(path, JSON.stringify({ windows }));
  return path;
}

/** The families section's checkpoints: bench/random_hf_checkpoint.py's names, the published configs' vocabularies. */
const FAMILY_SHAPES = [
  { name: "rwkv-4-430m", title: "RWKV-4-430M (RWKV/rwkv-4-430m-pile shape)", vocabSize: 50277, bf16Engine: true },
  { name: "mamba-1.4b", title: "Mamba-1.4B (state-spaces/mamba-1.4b-hf shape)", vocabSize: 50280, bf16Engine: true },
  { name: "gemma-2-2b", title: "Gemma-2-2B (google/gemma-2-2b shape)", vocabSize: 256000, bf16Engine: true },
  { name: "phi-3-mini", title: "Phi-3-mini (microsoft/Phi-3-mini-4k-instruct shape)", vocabSize: 32064, bf16Engine: true },
] as const;

/**
 * The families section's GGUF checkpoints, whose peer is llama.cpp: transformers has no RWKV-7, and shortgpt reads
 * it as llama.cpp's rwkv7 GGUF. `script` writes the random-weight file (cached by a stamp beside it).
 */
const GGUF_FAMILY_SHAPES = [
  { name: "rwkv-7-1.5b", title: "RWKV-7 1.5B (RWKV7-Goose World 1.5B shape, llama.cpp rwkv7 GGUF, BF16 matrices)", vocabSize: 65536, script: "random_rwkv7_gguf.py" },
] as const;

/** Window positions whose next-token log-probabilities the GGUF families compare with llama.cpp's. */
const LOGPROB_POSITIONS = [0, 85, 170, 255];
/** llama.cpp's most likely tokens at each of them that the comparison covers. */
const LOGPROB_TOP = 32;

/** The families table's columns, in order: rows kept from an earlier results.json may lack the newer ones. */
const FAMILY_COLUMNS = ["model", "engine", "tokens/s", "peak RSS GiB", "largest BI gap to shortgpt", "largest next-token log-prob gap to shortgpt", "shortgpt fp32 / this", "shortgpt bf16 / this"];

const gib = (bytes: unknown): string => (Number(bytes) / 2 ** 30).toFixed(2);

/** An engine's GFLOP/s as a share of the bf16 kernel's cache-resident rate (set once the CPU section ran). */
let ofPeak = (_gflops: number): string => "";

/** Reads a checkpoint's weight files once, so that a run finds them in the page cache (as after a download) whatever ran before it. */
function warmPageCache(dir: string): void {
  spawnSync("sh", ["-c", `sync && cat "${dir}"/*.safetensors > /dev/null`], { stdio: "inherit" });
}

/** Bytes PyTorch needs to hold a shape's weights in a dtype (parameters x 2 or 4), plus a quarter for the rest. */
function peerNeedsBytes(shape: LlamaShape, dtype: string): number {
  const { hiddenSize: d, intermediateSize: h, nLayers, nHeads, nKvHeads, vocabSize } = shape;
  const kv = (d / nHeads) * nKvHeads;
  const params = nLayers * (2 * d * d + 2 * d * kv + 3 * d * h) + 2 * vocabSize * d;
  return params * (dtype === "bf16" ? 2 : 4) * 1.25;
}

/**
 * One shape, 8 x 512 tokens: shortgpt bf16 and fp32 against PyTorch bf16 and fp32 (each a process of
 * its own, in turn), every row against both shortgpt engines; and for BI, how far the bf16 engines'
 * scores are from shortgpt fp32's (ranking and largest difference).
 */
function againstPyTorch(key: string, shape: LlamaShape, title: string): Section {
  const python = args.has("--skip-peer") ? undefined : peerPython();
  const dir = ensureRandomCheckpoint(shape, cache, log);
  const ids = windowsFile(shape, 8, 512);
  const rows: Row[] = [];
  // Perplexity on the 7B shape doubles a 25-minute section: BI scoring only unless --7b-ppl.
  const scoreOnly = args.has("--score-only") || (key === "7b" && !args.has("--7b-ppl"));
  for (const task of scoreOnly ? ["score"] : ["score", "ppl"]) {
    const mine: Record<string, number> = {};
    const scores: Record<string, number[]> = {};
    const taskRows: Row[] = [];
    for (const precision of ["bf16", "fp32"]) {
      warmPageCache(dir); // each run starts with the weights in the page cache: none inherits a warmer one
      const r = ours(task, dir, ["--tokens", ids, "--backend", "onnx", "--threads", String(THREADS), "--precision", precision]);
      mine[precision] = Number(r["tokensPerSecond"]);
      if (r["bi"]) scores[`shortgpt ${precision}`] = r["bi"] as number[];
      taskRows.push({ task, engine: `shortgpt ${String(r["backend"])}${r["gemm"] ? `, GEMM ${String(r["gemm"])}` : ""} ${precision}`, "tokens/s": mine[precision]!.toFixed(1), "GFLOP/s": Number(r["gflops"]).toFixed(0), "of peak": ofPeak(Number(r["gflops"])), "peak RSS GiB": gib(r["peakRssBytes"]) });
    }
    for (const dtype of python ? ["bf16", "fp32"] : []) {
      if (peerNeedsBytes(shape, dtype) > totalmem()) {
        taskRows.push({ task, engine: `PyTorch ${dtype}`, "tokens/s": "does not fit", "peak RSS GiB": `needs ~${gib(peerNeedsBytes(shape, dtype))} of ${gib(totalmem())}` });
        continue;
      }
      warmPageCache(dir);
      const p = runJson(python!, [join(root, "bench", "peer_torch.py"), "--model", dir, "--tokens", ids, "--dtype", dtype, "--task", task, "--threads", String(THREADS), "--batch", "8"]);
      if (p["bi"]) scores[`PyTorch ${dtype}`] = p["bi"] as number[];
      taskRows.push({ task, engine: `PyTorch ${p["torch"]} ${dtype}`, "tokens/s": Number(p["tokens_per_second"]).toFixed(1), "GFLOP/s": "", "of peak": "", "peak RSS GiB": gib(p["peak_rss_bytes"]) });
    }
    // Each row against both shortgpt engines: above 1 means shortgpt is faster than that row.
    for (const row of taskRows) {
      const theirs = Number(row["tokens/s"]);
      const ratio = (m: number | undefined): string => (Number.isFinite(theirs) && m ? (m / theirs).toFixed(2) : "");
      rows.push({ ...row, "shortgpt bf16 / this": ratio(mine["bf16"]), "shortgpt fp32 / this": ratio(mine["fp32"]) });
    }
    const reference = scores["shortgpt fp32"];
    for (const [engine, bi] of Object.entries(scores)) {
      if (!reference || engine === "shortgpt fp32") continue;
      rows.push({ task: "BI vs shortgpt fp32", engine, "tokens/s": `max |dBI| ${maxAbsDiff(bi, reference).toExponential(1)}`, "GFLOP/s": "", "of peak": "", "peak RSS GiB": `ranking ${sameRanking(bi, reference) ? "equal" : `differs (${rankingMoves(bi, reference)} layers)`}` });
    }
  }
  return { key, section: `${title}, 8 x 512 tokens, ${THREADS} threads (GFLOP/s "of peak": of the bf16 kernel's cache-resident rate)`, rows, measured: new Date().toISOString() };
}

const maxAbsDiff = (a: number[], b: number[]): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const ranking = (bi: number[]): number[] => bi.map((v, i) => [v, i] as const).sort((x, y) => x[0] - y[0]).map(([, i]) => i);
const sameRanking = (a: number[], b: number[]): boolean => ranking(a).every((layer, i) => layer === ranking(b)[i]);
const rankingMoves = (a: number[], b: number[]): number => ranking(a).filter((layer, i) => layer !== ranking(b)[i]).length;

/**
 * A GGUF family's rows: shortgpt's BI scoring (onnx fp32) against llama.cpp's prompt evaluation of the same windows
 * (CPU, the same threads), and the largest |log p| difference of the next token between the two at LOGPROB_POSITIONS
 * (shortgpt's log-probabilities from a second, untimed run of its streaming engine and head).
 */
function againstLlamaCpp(python: string, family: (typeof GGUF_FAMILY_SHAPES)[number], nWindows: number, seqLen: number): Row[] {
  const path = join(cache, `${family.name}.gguf`);
  runJson(python, [join(root, "bench", family.script), "--out", path, "--shared", sharedPath()]);
  const ids = windowsFile(family, nWindows, seqLen);
  spawnSync("sh", ["-c", `cat "${path}" > /dev/null`], { stdio: "inherit" }); // each run starts with the weights in the page cache
  const mine = ours("score", path, ["--tokens", ids, "--backend", "onnx", "--threads", String(THREADS), "--precision", "fp32"]);
  const mineRate = Number(mine["tokensPerSecond"]);
  const positions = LOGPROB_POSITIONS.join(",");
  const myLogprobs = ours("logprobs", path, ["--tokens", ids, "--positions", positions, "--backend", "onnx", "--threads", String(THREADS)])["logprobs"] as { window: number; pos: number; values: number[] }[];
  spawnSync("sh", ["-c", `cat "${path}" > /dev/null`], { stdio: "inherit" });
  const peer = runJson(process.execPath, [join(root, "dist", "bench", "peer_llamacpp.js"), path, "--tokens", ids, "--threads", String(THREADS), "--positions", positions, "--top", String(LOGPROB_TOP)]);
  let gap = 0;
  for (const { window, pos, top } of peer["logprobs"] as { window: number; pos: number; top: [number, number][] }[]) {
    const mineAt = myLogprobs.find((l) => l.window === window && l.pos === pos)!.values;
    for (const [token, logprob] of top) gap = Math.max(gap, Math.abs(mineAt[token]! - logprob));
  }
  const peerRate = Number(peer["tokensPerSecond"]);
  return [
    { model: family.title, engine: `shortgpt ${String(mine["backend"])} fp32`, "tokens/s": mineRate.toFixed(1), "peak RSS GiB": gib(mine["peakRssBytes"]), "shortgpt fp32 / this": "1.00" },
    {
      model: family.title, engine: `${String(peer["engine"])}, evaluation alone ${Number(peer["evalTokensPerSecond"]).toFixed(1)} tokens/s`, "tokens/s": peerRate.toFixed(1), "peak RSS GiB": gib(peer["peakRssBytes"]),
      "largest next-token log-prob gap to shortgpt": gap.toExponential(1), "shortgpt fp32 / this": (mineRate / peerRate).toFixed(2),
    },
  ];
}

/** A section of the previous results.json, if any. */
function previousSection(key: string): Partial<Section> | undefined {
  const file = join(root, "bench", "results.json");
  if (!existsSync(file)) return undefined;
  return ((JSON.parse(readFileSync(file, "utf8")) as { results?: Partial<Section>[] }).results ?? []).find((r) => r.key === key);
}

async function main(): Promise<void> {
  mkdirSync(cache, { recursive: true });

  // 1. stories260K on each backend.
  if (wants("stories")) {
    const rows: Row[] = [];
    const model = sharedPath("models", "stories260K", "stories260K.bin");
    const ids = join(cache, "ids-stories.json");
    let state = 7;
    const windows = Array.from({ length: 16 }, () => [1, ...Array.from({ length: 511 }, () => 3 + ((state = (state * 1103515245 + 12345) >>> 0) % 509))]);
    writeFileSync(ids, JSON.stringify({ windows }));
    for (const backend of ["reference", "wasm", "onnx"]) {
      for (const task of ["score", "ppl"]) {
        const r = ours(task, model, ["--tokens", ids, "--backend", backend, "--threads", String(THREADS)]);
        rows.push({ model: "stories260K", task, engine: String(r["backend"]), "tokens/s": Math.round(Number(r["tokensPerSecond"])) });
      }
    }
    results.push({ key: "stories", section: "stories260K (8192 tokens in windows of 512)", rows, measured: new Date().toISOString() });
  }

  // 1b. The CPU's GEMM units: CPU features, the bf16 kernels (the helper's own, oneDNN's) against
  // onnxruntime's fp32 Gemm, and the faster one's cache-resident rate, the "peak" the engines' GFLOP/s are measured against.
  let peakGflops = NaN;
  let cpuLine = "";
  if (wants("tinyllama") || wants("7b") || wants("cpu")) {
    const g = runJson(process.execPath, [join(root, "dist", "bench", "cpuGemm.js"), "--threads", String(THREADS)]);
    peakGflops = Number(g["bf16PeakGflops"]);
    cpuLine = `CPU ${String(g["cpu"])}, features ${JSON.stringify(g["features"])}, bf16 engine ${g["bf16Engine"] ? "on" : "off"}, bf16 GEMM peak (cache-resident, the faster kernel) ${peakGflops.toFixed(0)} GFLOP/s${g["gemmImpl"] ? ` (oneDNN's ${String(g["gemmImpl"])})` : ""}; oneDNN standalone: ${String(g["onednn"])}`;
    results.push({ key: "cpu", section: `CPU GEMMs, 1024 token rows, ${THREADS} threads (${cpuLine})`, rows: g["rows"] as Row[], measured: new Date().toISOString() });
  }
  ofPeak = (gflops: number): string => (Number.isFinite(peakGflops) ? `${((100 * gflops) / peakGflops).toFixed(0)}%` : "");

  // 2-3. TinyLlama-1.1B and Llama-2-7B shapes against PyTorch: shortgpt bf16 and fp32 against PyTorch bf16 and fp32.
  if (wants("tinyllama")) results.push(againstPyTorch("tinyllama", TINYLLAMA_1B, "TinyLlama-1.1B shape"));
  if (!args.has("--skip-7b") && wants("7b")) results.push(againstPyTorch("7b", LLAMA2_7B, "Llama-2-7B shape (13.5 GB of BF16 weights; shortgpt streams them a layer at a time, PyTorch holds them all)"));

  // 3b. Llama-2-7B shape: pruning 8 of 32 layers beside cp. The disk and the page cache make
  // single runs swing by 3x here, so the three ways of copying take turns for ROUNDS rounds and
  // each reports its median and range. Before every run the input is read once (into the page
  // cache, as after a download), so no run inherits a warmer cache from the one before it.
  if (!args.has("--skip-7b") && wants("prune")) {
    const dir = ensureRandomCheckpoint(LLAMA2_7B, cache, log);
    const layers = [20, 21, 22, 23, 24, 25, 26, 27].join(",");
    const ROUNDS = 3;
    // Pruning includes flushing the output to disk (it fsyncs before the final rename), so the
    // peer is a whole-checkpoint copy + sync.
    const prune = (extra: string[]): { mbPerSecond: number; rss: number } => {
      const pr = ours("prune", dir, ["--out", join(cache, "llama2-7b-pruned"), "--layers", layers, ...extra]);
      // Each row measures the path it names: the native writer with O_DIRECT, or plain buffered writes.
      const native = !extra.includes("--no-native-output");
      const [nativeBytes, directBytes] = [Number(pr["nativeBytes"]), Number(pr["directBytes"])];
      if (native ? !(nativeBytes > 0 && directBytes === nativeBytes) : nativeBytes !== 0) {
        throw new Error(`prune${native ? "" : " --no-native-output"} wrote ${nativeBytes} bytes natively, ${directBytes} with O_DIRECT: not the path this row measures (node scripts/build-native.mjs builds the helper)`);
      }
      return { mbPerSecond: Number(pr["mbPerSecond"]), rss: Number(pr["peakRssBytes"]) };
    };
    const copy = (): number => {
      const target = join(cache, "copy-test");
      rmSync(target, { recursive: true, force: true });
      const started = process.hrtime.bigint();
      spawnSync("sh", ["-c", `cp -r --reflink=never "${dir}" "${target}" && sync`], { stdio: "inherit" });
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const mbPerSecond = dirBytes(target) / 1e6 / seconds;
      rmSync(target, { recursive: true, force: true });
      return mbPerSecond;
    };
    const warm = (): void => warmPageCache(dir);
    // Emptying the page cache needs root; without it the cold rows are left out.
    const dropCaches = (): boolean => spawnSync("sh", ["-c", "sync && echo 1 > /proc/sys/vm/drop_caches"], { stdio: "ignore" }).status === 0;
    const cold = dropCaches();
    const runs = { native: [] as number[], buffered: [] as number[], cp: [] as number[], nativeCold: [] as number[], cpCold: [] as number[], rss: [] as number[], bufferedRss: [] as number[] };
    for (let round = 0; round < ROUNDS; round++) {
      log(`prune round ${round + 1} of ${ROUNDS}`);
      warm();
      const n = prune([]);
      runs.native.push(n.mbPerSecond);
      runs.rss.push(n.rss);
      warm();
      const b = prune(["--no-native-output"]);
      runs.buffered.push(b.mbPerSecond);
      runs.bufferedRss.push(b.rss);
      warm();
      runs.cp.push(copy());
      if (cold && dropCaches()) {
        const c = prune([]);
        runs.nativeCold.push(c.mbPerSecond);
        runs.rss.push(c.rss);
      }
      if (cold && dropCaches()) runs.cpCold.push(copy());
    }
    const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
    const range = (v: number[]): string => `${Math.round(Math.min(...v))}-${Math.round(Math.max(...v))}`;
    const row = (task: string, v: number[], rss: string, peer: number[]): Row => ({ task, "median MB/s": median(v).toFixed(0), "range MB/s": range(v), "peak RSS GiB": rss, "median vs cp": (median(v) / median(peer)).toFixed(2) });
    const rows: Row[] = [
      row("prune 8 of 32 layers (native O_DIRECT writer, as shipped)", runs.native, gib(Math.max(...runs.rss)), runs.cp),
      row("prune 8 of 32 layers (buffered writes, the fallback)", runs.buffered, gib(Math.max(...runs.bufferedRss)), runs.cp),
      row("peer: cp -r of the whole checkpoint + sync", runs.cp, "", runs.cp),
    ];
    if (runs.nativeCold.length > 0 && runs.cpCold.length > 0) {
      rows.push(
        row("cold cache: prune 8 of 32 layers (native, as shipped)", runs.nativeCold, "", runs.cpCold),
        row("cold cache: peer cp -r + sync", runs.cpCold, "", runs.cpCold),
      );
    }
    results.push({ key: "prune", section: `Llama-2-7B shape: pruning 8 of 32 layers (10.2 GB written, fsync included), ${ROUNDS} interleaved rounds; input read into the page cache before each run, and cold (drop_caches) in the last two rows`, rows, measured: new Date().toISOString() });
  }

  // 4. Benchmark tasks on stories260K: items per second.
  if (wants("tasks")) {
    const rows: Row[] = [];
    const model = sharedPath("models", "stories260K", "stories260K.bin");
    const dataDir = sharedPath("data");
    for (const task of ["mmlu", "cmmlu", "hellaswag", "piqa", "boolq", "arc_easy", "arc_challenge", "winogrande", "lambada_openai", "copa", "openbookqa", "social_iqa", "commonsense_qa"]) {
      const limit = task === "mmlu" ? [] : ["--limit", "500"];
      const r = ours("tasks", model, ["--tasks", task, "--data-dir", dataDir, "--backend", "onnx", "--threads", String(THREADS), ...limit]);
      rows.push({ task, items: Number(r["items"]), seconds: Number(r["seconds"]).toFixed(1), "items/s": Number(r["itemsPerSecond"]).toFixed(1), acc: Number(r["acc"]).toFixed(4) });
    }
    results.push({ key: "tasks", section: "Benchmark tasks on stories260K, 0-shot, onnxruntime-node (MMLU: the full test set; others: the first 500 items or all)", rows, measured: new Date().toISOString() });
  }

  // 5. The other families at real shapes against PyTorch, on the same windows.
  if (wants("families")) {
    const python = peerPython();
    if (!python) throw new Error("the families section needs Python with torch and transformers (it writes the checkpoints with save_pretrained)");
    const [nWindows, seqLen] = [2, 256];
    // --families a,b reruns those rows only; the other models' rows are kept from results.json.
    const listed = process.argv.includes("--families") ? process.argv[process.argv.indexOf("--families") + 1]!.split(",") : undefined;
    const chosen = FAMILY_SHAPES.filter((f) => !listed || listed.includes(f.name));
    const chosenGguf = GGUF_FAMILY_SHAPES.filter((f) => !listed || listed.includes(f.name));
    const titles = [...FAMILY_SHAPES, ...GGUF_FAMILY_SHAPES].map((f) => f.title as string);
    if (listed && chosen.length + chosenGguf.length !== listed.length) throw new Error(`--families ${listed.join(",")}: choose among ${[...FAMILY_SHAPES, ...GGUF_FAMILY_SHAPES].map((f) => f.name).join(", ")}`);
    const previousRows = (previousSection("families")?.rows ?? []).filter((r) => ![...chosen, ...chosenGguf].some((f) => f.title === r["model"]));
    const rows: Row[] = [];
    for (const family of chosen) {
      const dir = join(cache, `${family.name}-shape`);
      runJson(python, [join(root, "bench", "random_hf_checkpoint.py"), "--family", family.name, "--out", dir]);
      const ids = windowsFile(family, nWindows, seqLen);
      const mine = ours("score", dir, ["--tokens", ids, "--backend", "onnx", "--threads", String(THREADS), "--precision", "fp32"]);
      const mineRate = Number(mine["tokensPerSecond"]);
      const myBi = mine["bi"] as number[];
      const rates = [mineRate];
      const familyRows: Row[] = [{ engine: `shortgpt ${String(mine["backend"])} fp32`, "tokens/s": mineRate.toFixed(1), "peak RSS GiB": gib(mine["peakRssBytes"]), "largest BI gap to shortgpt": "" }];
      // The families whose layers the CPU bf16 engine computes (Gemma/Phi-3: their default for bf16 checkpoints; RWKV-4/Mamba: their
      // projections on its GEMMs, with --precision bf16) get its row too, against PyTorch bf16.
      let bf16Rate = NaN;
      if ("bf16Engine" in family) {
        const b = ours("score", dir, ["--tokens", ids, "--backend", "onnx", "--threads", String(THREADS), "--precision", "bf16"]);
        bf16Rate = Number(b["tokensPerSecond"]);
        const gap = Math.max(...(b["bi"] as number[]).map((v, i) => Math.abs(v - myBi[i]!)));
        rates.push(bf16Rate);
        familyRows.push({ engine: `shortgpt ${String(b["backend"])}${b["gemm"] ? `, GEMM ${String(b["gemm"])}` : ""} bf16`, "tokens/s": bf16Rate.toFixed(1), "peak RSS GiB": gib(b["peakRssBytes"]), "largest BI gap to shortgpt": gap.toExponential(1) });
      }
      for (const dtype of ["fp32", "bf16"]) {
        try {
          const p = runJson(python, [join(root, "bench", "peer_torch.py"), "--model", dir, "--tokens", ids, "--dtype", dtype, "--task", "score", "--threads", String(THREADS), "--batch", String(nWindows)]);
          const biGap = Math.max(...(p["bi"] as number[]).map((b, i) => Math.abs(b - myBi[i]!)));
          rates.push(Number(p["tokens_per_second"]));
          familyRows.push({ engine: `PyTorch ${String(p["torch"])} ${dtype}`, "tokens/s": Number(p["tokens_per_second"]).toFixed(1), "peak RSS GiB": gib(p["peak_rss_bytes"]), "largest BI gap to shortgpt": biGap.toExponential(1) });
        } catch (e) {
          // A peer that cannot run (out of memory: Phi-3 in fp32 needs 15 GiB) leaves its row saying so, not the section unmeasured.
          rates.push(NaN);
          familyRows.push({ engine: `PyTorch ${dtype}`, "tokens/s": "failed", "peak RSS GiB": "", "largest BI gap to shortgpt": (e instanceof Error ? e.message : String(e)).split("\n").slice(-2).join(" ").slice(0, 120) });
        }
      }
      // Above 1: shortgpt is faster than that row (ratios of the unrounded rates).
      const ratio = (mine: number, theirs: number): string => (Number.isFinite(mine) && Number.isFinite(theirs) ? (mine / theirs).toFixed(2) : "");
      familyRows.forEach((row, i) => rows.push({ model: family.title, ...row, "shortgpt fp32 / this": ratio(mineRate, rates[i]!), "shortgpt bf16 / this": ratio(bf16Rate, rates[i]!) }));
    }
    for (const family of chosenGguf) rows.push(...againstLlamaCpp(python, family, nWindows, seqLen));
    rows.push(...previousRows);
    rows.sort((a, b) => titles.indexOf(String(a["model"])) - titles.indexOf(String(b["model"])));
    const table = rows.map((r) => Object.fromEntries(FAMILY_COLUMNS.map((k) => [k, r[k] ?? ""])));
    results.push({
      key: "families",
      section: `Other families at real shapes (random weights saved by transformers; RWKV-7 as a llama.cpp GGUF against llama.cpp, whose rate includes loading the model and evaluates each window from a fresh state, as shortgpt's includes reading its weights layer by layer), BI scoring of ${nWindows} x ${seqLen} tokens, ${THREADS} threads; log-prob gap: at positions ${LOGPROB_POSITIONS.join(", ")} of each window, over llama.cpp's ${LOGPROB_TOP} most likely tokens`,
      rows: table, measured: new Date().toISOString(),
    });
  }

  const machine = `${cpus().length} x ${cpus()[0]?.model ?? "cpu"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
  // Sections not rerun this time are kept from the previous results.json, with their date.
  const previous = existsSync(join(root, "bench", "results.json")) ? (JSON.parse(readFileSync(join(root, "bench", "results.json"), "utf8")) as { results?: Partial<Section>[] }).results ?? [] : [];
  const merged: Section[] = ["stories", "cpu", "tinyllama", "7b", "prune", "tasks", "families"].flatMap((key) => {
    const fresh = results.find((r) => r.key === key);
    // Results written before sections had keys are recognized by their titles.
    const titles: Record<string, string> = { cpu: "CPU GEMMs", stories: "stories260K", tinyllama: "TinyLlama", "7b": "Llama-2-7B shape (", prune: "Llama-2-7B shape: pruning", tasks: "Benchmark tasks", families: "Other families" };
    const old = previous.find((r) => r.key === key || (r.key === undefined && r.section?.startsWith(titles[key]!)));
    // (Earlier 7b sections also held single pruning runs, now measured in the "prune" section.)
    const rows = key === "7b" ? old?.rows?.filter((r) => !/^(prune|peer)/.test(String(r["task"]))) : old?.rows;
    return fresh ? [fresh] : rows ? [{ measured: "in an earlier run", ...old, rows, key } as Section] : [];
  });
  const md = [
    "# Benchmark results",
    "",
    `Machine: ${machine}. Command: \`npm run bench\` (options \`--skip-7b\`, \`--skip-peer\`, \`--only SECTION\`).`,
    "Random-weight BF16 checkpoints of real shapes are generated by bench/randomCheckpoint.ts and cached in bench/cache/.",
    "Each row is one process; peak RSS is that process's. This machine is shared and noisy: compare ratios, not absolute numbers.",
    "",
    ...merged.flatMap(({ section, rows, measured }) => {
      const keys = Object.keys(rows[0] ?? {});
      return [`## ${section}`, "", `Measured ${measured}.`, "", `| ${keys.join(" | ")} |`, `| ${keys.map(() => "---").join(" | ")} |`, ...rows.map((r) => `| ${keys.map((k) => r[k]).join(" | ")} |`), ""];
    }),
  ].join("\n");
  writeFileSync(join(root, "bench", "results.json"), JSON.stringify({ machine, results: merged }, null, 2) + "\n");
  writeFileSync(join(root, "bench", "RESULTS.md"), md);
  process.stdout.write(md);
}

await main();

// Joins the device check's shortgpt.json with the transformers peer's peer-*.json files into
// gpu-results.json and a markdown table: tokens/s side by side, their ratio, shortgpt's share of
// the measured bf16 GEMM peak, and how far the two Block Influence lists are apart.
//
//   node dist/bench/gpu/combineResults.js --dir OUT_DIR
// Every input may be missing or partial (a run that failed on the device): rows then show "-".

import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

/** The Llama shapes the device check runs (same numbers as peer_cuda.py's SHAPES). */
export interface ModelShape { dim: number; hiddenDim: number; nLayers: number; nHeads: number; nKvHeads: number; vocab: number }
export const SHAPES: Record<string, ModelShape> = {
  "tinyllama": { dim: 2048, hiddenDim: 5632, nLayers: 22, nHeads: 32, nKvHeads: 4, vocab: 32000 },
  "llama2-7b": { dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocab: 32000 },
  "llama3-8b": { dim: 4096, hiddenDim: 14336, nLayers: 32, nHeads: 32, nKvHeads: 8, vocab: 128256 },
  "tiny": { dim: 64, hiddenDim: 160, nLayers: 4, nHeads: 4, nKvHeads: 2, vocab: 256 },
};

export type Task = "score" | "ppl";

/** One measurement from either side, reduced to what the comparison needs. */
/** coldSeconds: the first (warm-up) call, which pays for kernel compilation and library setup. */
export interface Measurement { tokensPerSecond?: number; seconds?: number; coldSeconds?: number; windows?: number; bi?: number[]; nll?: number }

export interface Row {
  shape: string; seqLen: number; task: Task;
  shortgpt: Measurement | null; peer: Measurement | null;
  /** shortgpt tokens/s divided by the peer's; > 1 means shortgpt is faster. */
  ratio: number | null;
  flopsPerToken: number | null;
  /** shortgpt's achieved FLOP/s as a fraction of the bf16 GEMM peak measured on the same card. */
  peakFraction: number | null;
  peerPeakFraction: number | null;
  maxBiDiff: number | null;
  nllDiff: number | null;
}

export interface Correctness { check: string; ok: boolean; detail: string }

export interface Combined {
  device: string | null; gpu: string | null; peakTflops: number | null;
  versions: { torch: string | null; transformers: string | null };
  correctness: Correctness[]; rows: Row[]; notes: string[];
  /** End-to-end rows (MMLU items/s, prune seconds): shortgpt's and the peer's value under one name. */
  extras: ExtraRow[];
}

/** A measurement of either side beyond the tokens/s table: `better` says which way is faster. */
export interface Extra { name: string; unit: string; better: "higher" | "lower"; value: number }
export interface ExtraRow { name: string; unit: string; shortgpt: number | null; peer: number | null; ratio: number | null }

function extra(v: unknown): Extra | null {
  if (!isRecord(v)) return null;
  const name = str(v["name"]), unit = str(v["unit"]), value = num(v["value"]), better = v["better"];
  return name !== undefined && unit !== undefined && value !== undefined && (better === "higher" || better === "lower") ? { name, unit, better, value } : null;
}

/** Pairs the two sides' extras by name; ratio > 1 means shortgpt is faster. */
export function combineExtras(ours: unknown[], peers: unknown[]): ExtraRow[] {
  const mine = ours.map(extra).filter((e): e is Extra => e !== null);
  const theirs = peers.map(extra).filter((e): e is Extra => e !== null);
  const names = [...new Set([...mine, ...theirs].map((e) => e.name))];
  return names.map((name) => {
    const a = mine.find((e) => e.name === name);
    const b = theirs.find((e) => e.name === name);
    const better = (a ?? b)!.better;
    const ratio = a && b ? (better === "higher" ? a.value / b.value : b.value / a.value) : null;
    return { name, unit: (a ?? b)!.unit, shortgpt: a?.value ?? null, peer: b?.value ?? null, ratio };
  });
}

/** Parameters inside the decoder layers: attention (q, k, v, o), SwiGLU MLP (gate, up, down), two norms. */
export function layerParameters(s: ModelShape): number {
  const headDim = s.dim / s.nHeads;
  const attention = 2 * s.dim * s.dim + 2 * s.dim * s.nKvHeads * headDim;
  return s.nLayers * (attention + 3 * s.dim * s.hiddenDim + 2 * s.dim);
}

/**
 * FLOPs per token, the usual dense estimate: score = 2 * P_layers (one multiply-add per weight per
 * token); ppl = 2 * P_layers + 2 * dim * vocab (the vocabulary projection). Attention's own
 * QK^T and PV products (4 * seqLen * dim per layer, about 6% at 512 tokens) are left out, so the
 * peak fraction slightly understates the work done.
 */
export function flopsPerToken(shape: string, task: Task): number | null {
  const s = SHAPES[shape];
  if (s === undefined) return null;
  return 2 * layerParameters(s) + (task === "ppl" ? 2 * s.dim * s.vocab : 0);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}
function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}
function numList(v: unknown): number[] | undefined {
  return Array.isArray(v) && v.every((x) => typeof x === "number") ? v as number[] : undefined;
}
function isTask(v: unknown): v is Task {
  return v === "score" || v === "ppl";
}

/** Copies only the fields present, so exactOptionalPropertyTypes holds and absent stays absent. */
function measurement(fields: { tokensPerSecond: unknown; seconds: unknown; coldSeconds: unknown; windows: unknown; bi: unknown; nll: unknown }): Measurement {
  const m: Measurement = {};
  const tps = num(fields.tokensPerSecond), seconds = num(fields.seconds), cold = num(fields.coldSeconds), windows = num(fields.windows);
  const bi = numList(fields.bi), nll = num(fields.nll);
  if (tps !== undefined) m.tokensPerSecond = tps;
  if (seconds !== undefined) m.seconds = seconds;
  if (cold !== undefined) m.coldSeconds = cold;
  if (windows !== undefined) m.windows = windows;
  if (bi !== undefined) m.bi = bi;
  if (nll !== undefined) m.nll = nll;
  return m;
}

const key = (shape: string, seqLen: number, task: Task): string => `${shape}|${seqLen}|${task}`;

function maxAbsDiff(a: number[] | undefined, b: number[] | undefined, notes: string[], where: string): number | null {
  if (a === undefined || b === undefined) return null;
  if (a.length !== b.length) {
    notes.push(`${where}: BI lists differ in length (shortgpt ${a.length}, peer ${b.length})`);
    return null;
  }
  return a.reduce((worst, x, i) => Math.max(worst, Math.abs(x - (b[i] ?? Number.NaN))), 0);
}

/** Joins parsed shortgpt.json (or null) and parsed peer files into rows; unknown shapes and junk are skipped with a note. */
export function combine(shortgpt: unknown, peers: unknown[]): Combined {
  const notes: string[] = [];
  const ours = new Map<string, Measurement>();
  const theirs = new Map<string, Measurement>();
  const order: string[] = [];
  const remember = (k: string): void => { if (!order.includes(k)) order.push(k); };
  let peakTflops: number | null = null;
  let gpu: string | null = null;
  const versions: Combined["versions"] = { torch: null, transformers: null };

  const correctness: Correctness[] = [];
  let device: string | null = null;
  if (isRecord(shortgpt)) {
    device = str(shortgpt.device) ?? null;
    for (const c of Array.isArray(shortgpt.correctness) ? shortgpt.correctness : []) {
      if (isRecord(c)) correctness.push({ check: str(c.check) ?? "?", ok: c.ok === true, detail: str(c.detail) ?? "" });
    }
    for (const s of Array.isArray(shortgpt.speed) ? shortgpt.speed : []) {
      const shape = isRecord(s) ? str(s.shape) : undefined, seqLen = isRecord(s) ? num(s.seqLen) : undefined;
      if (!isRecord(s) || shape === undefined || seqLen === undefined || !isTask(s.task)) {
        notes.push(`shortgpt.json: skipped a speed entry without shape/seqLen/task`);
        continue;
      }
      const k = key(shape, seqLen, s.task);
      ours.set(k, measurement({ tokensPerSecond: s.tokensPerSecond, seconds: s.seconds, coldSeconds: s.coldSeconds, windows: s.windows, bi: s.bi, nll: s.nll }));
      remember(k);
    }
  } else {
    notes.push("shortgpt.json missing or unreadable: peer columns only");
  }

  for (const p of peers) {
    const shape = isRecord(p) ? str(p.shape) : undefined, seqLen = isRecord(p) ? num(p.seq_len) : undefined;
    if (!isRecord(p) || shape === undefined || seqLen === undefined) {
      notes.push("a peer file without shape/seq_len was skipped");
      continue;
    }
    const tflops = isRecord(p.gemm_bf16) ? num(p.gemm_bf16.tflops) : undefined;
    // Each peer run measures the peak; the best one is the card's (the others lost to clocks or noise).
    if (tflops !== undefined && (peakTflops === null || tflops > peakTflops)) peakTflops = tflops;
    gpu ??= str(p.gpu) ?? null;
    versions.torch ??= str(p.torch) ?? null;
    versions.transformers ??= str(p.transformers) ?? null;
    const tasks = isRecord(p.tasks) ? p.tasks : {};
    for (const task of ["score", "ppl"] as const) {
      const t = tasks[task];
      if (!isRecord(t)) continue;
      const k = key(shape, seqLen, task);
      theirs.set(k, measurement({ tokensPerSecond: t.tokens_per_second, seconds: t.seconds, coldSeconds: t.warmup_seconds, windows: p.windows, bi: t.bi, nll: t.nll }));
      remember(k);
    }
  }

  const rows = order.map((k): Row => {
    const [shape = "", seqLenText = "0", task = "score"] = k.split("|");
    const seqLen = Number(seqLenText);
    const typedTask: Task = task === "ppl" ? "ppl" : "score";
    const a = ours.get(k) ?? null, b = theirs.get(k) ?? null;
    const flops = flopsPerToken(shape, typedTask);
    const fraction = (m: Measurement | null): number | null =>
      m?.tokensPerSecond !== undefined && flops !== null && peakTflops !== null ? m.tokensPerSecond * flops / (peakTflops * 1e12) : null;
    if (a?.windows !== undefined && b?.windows !== undefined && a.windows !== b.windows) {
      notes.push(`${shape} ${seqLen} ${task}: windows differ (shortgpt ${a.windows}, peer ${b.windows}); tokens/s still compare`);
    }
    return {
      shape, seqLen, task: typedTask, shortgpt: a, peer: b,
      ratio: a?.tokensPerSecond !== undefined && b?.tokensPerSecond !== undefined && b.tokensPerSecond > 0 ? a.tokensPerSecond / b.tokensPerSecond : null,
      flopsPerToken: flops,
      peakFraction: fraction(a),
      peerPeakFraction: fraction(b),
      maxBiDiff: maxAbsDiff(a?.bi, b?.bi, notes, `${shape} ${seqLen}`),
      nllDiff: a?.nll !== undefined && b?.nll !== undefined ? Math.abs(a.nll - b.nll) : null,
    };
  });
  if (peakTflops === null) notes.push("no bf16 GEMM peak measured: peak fractions are blank");
  return { device, gpu, peakTflops, versions, correctness, rows, notes, extras: [] };
}

function fmt(v: number | null | undefined, digits: number): string {
  return v === null || v === undefined ? "-" : v.toFixed(digits);
}

/** The comparison as a markdown table, with the correctness checks and notes under it. */
export function renderMarkdown(c: Combined): string {
  const lines = [
    `GPU: ${c.gpu ?? c.device ?? "unknown"}; bf16 GEMM peak (8192^3): ${fmt(c.peakTflops, 1)} TFLOP/s; peer: torch ${c.versions.torch ?? "-"}, transformers ${c.versions.transformers ?? "-"}`,
    "",
    "| shape | seqLen | task | shortgpt tok/s | peer tok/s | ratio | shortgpt % peak | peer % peak | max abs BI diff | abs nll diff |",
    "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of c.rows) {
    const pct = (v: number | null): string => (v === null ? "-" : (100 * v).toFixed(1));
    lines.push(`| ${r.shape} | ${r.seqLen} | ${r.task} | ${fmt(r.shortgpt?.tokensPerSecond, 0)} | ${fmt(r.peer?.tokensPerSecond, 0)} | ${fmt(r.ratio, 2)} | ${pct(r.peakFraction)} | ${pct(r.peerPeakFraction)} | ${r.maxBiDiff === null ? "-" : r.maxBiDiff.toExponential(2)} | ${r.nllDiff === null ? "-" : r.nllDiff.toExponential(2)} |`);
  }
  if (c.extras.length > 0) {
    lines.push("", "| end to end | unit | shortgpt | peer | ratio (> 1: shortgpt faster) |", "|---|---|---:|---:|---:|");
    for (const e of c.extras) lines.push(`| ${e.name} | ${e.unit} | ${fmt(e.shortgpt, 2)} | ${fmt(e.peer, 2)} | ${fmt(e.ratio, 2)} |`);
  }
  if (c.correctness.length > 0) {
    lines.push("", "Correctness:");
    for (const k of c.correctness) lines.push(`- ${k.ok ? "ok  " : "FAIL"} ${k.check}: ${k.detail}`);
  }
  if (c.notes.length > 0) {
    lines.push("", "Notes:");
    for (const n of c.notes) lines.push(`- ${n}`);
  }
  return lines.join("\n");
}

/** Parsed JSON of a file, or null with a line on stderr when it is missing or not JSON. */
function readJson(path: string): unknown {
  if (!existsSync(path)) {
    console.error(`combine: ${path} not found`);
    return null;
  }
  try {
    return JSON.parse(readFileSync(path, "utf8")) as unknown;
  } catch (err) {
    console.error(`combine: ${path} is not JSON (${(err as Error).message})`);
    return null;
  }
}

function main(): void {
  const { values } = parseArgs({ options: { dir: { type: "string", default: "gpu-out" } } });
  const dir = values.dir;
  const shortgpt = readJson(join(dir, "shortgpt.json"));
  const files = existsSync(dir) ? readdirSync(dir).sort() : [];
  const peerFiles = files.filter((f) => /^peer-.*\.json$/.test(f) && !f.startsWith("peer-extra-"));
  const peers = peerFiles.map((f) => readJson(join(dir, f))).filter((p) => p !== null);
  // Extras: shortgpt.json's own list and extra-*.json (written by device-check.sh), against peer-extra-*.json.
  const ours = [...(isRecord(shortgpt) && Array.isArray(shortgpt["extras"]) ? shortgpt["extras"] as unknown[] : []), ...files.filter((f) => /^extra-.*\.json$/.test(f)).map((f) => readJson(join(dir, f)))];
  const theirs = files.filter((f) => /^peer-extra-.*\.json$/.test(f)).map((f) => readJson(join(dir, f)));
  const combined = { ...combine(shortgpt, peers), extras: combineExtras(ours, theirs) };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "gpu-results.json"), JSON.stringify({ ...combined, peerFiles }, null, 1) + "\n");
  console.log(renderMarkdown(combined));
}

// Runs only as a script, so the test can import combine() without side effects.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();

// Log-likelihood of continuations given contexts, as lm-evaluation-harness computes it for
// causal models, run layer by layer like scoring (so models larger than memory work):
//  * tokenization split: trailing spaces of the context move to the continuation; the whole
//    string and the context are encoded separately and the continuation's tokens are the whole
//    encoding past the context's length; an empty context becomes the BOS token;
//  * the model input is (context + continuation) without its last token, cut from the left to
//    the model's context length; the continuation's tokens are scored at the last positions;
//  * `greedy`: every continuation token is the argmax at its position.
// Requests with the same input share one window (every single-token answer to one question
// costs one forward pass); the different inputs of one item (multi-token choices, WinoGrande's
// two contexts) are packed behind one copy of their common prefix, with tree attention (each
// choice sees the prefix and itself, at its own positions); requests scoring the same
// positions share the head rows.

import { type DecoderBackend, type HiddenStates, isRecurrentShape, type PreparedHead } from "../backend/backend.js";
import type { Window } from "../data/windows.js";
import { layerShape, prepareHead, releaseBatches, runLayersStreaming, type StreamingSource } from "../models/streaming.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import type { LoglikelihoodRequest } from "./tasks/tasks.js";

export interface ScoredRequest {
  /** Sum of log p(continuation token | everything before it), nats. */
  loglikelihood: number;
  /** True when every continuation token was the most likely one. */
  greedy: boolean;
  /** Continuation tokens scored. */
  tokens: number;
}

export interface LoglikelihoodOptions {
  backend: DecoderBackend;
  /** Put BOS before every context (lm-eval's add_bos_token); default: as the tokenizer does (addsBos). */
  bos?: boolean;
  /** Layers left out. */
  skip?: ReadonlySet<number>;
  /** Consecutive requests that may share a prefix, as counts (see PlanOptions). */
  groupSizes: readonly number[];
  /** Pack the inputs sharing a prefix into one window (default true). */
  sharePrefixes?: boolean;
  /** Tokens per group of windows run through all layers together; bounds the residual memory. */
  groupTokens?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface EncodedRequest {
  context: number[];
  continuation: number[];
}

/** lm-eval's context/continuation split. */
export function encodePair(tokenizer: Tokenizer, request: LoglikelihoodRequest, bos: boolean): EncodedRequest {
  let { context, continuation } = request;
  const spaces = context.length - context.trimEnd().length;
  if (spaces > 0) {
    continuation = context.slice(context.length - spaces) + continuation;
    context = context.slice(0, context.length - spaces);
  }
  if (context === "") {
    // lm-eval's prefix token: BOS when the vocabulary has one (even if texts start without it),
    // else EOS; a continuation that already starts with it gives its first token as the context.
    const prefix = tokenizer.bosId >= 0 ? tokenizer.bosId : tokenizer.eosId;
    const ids = tokenizer.encode(continuation, { bos: false });
    return ids[0] === prefix ? { context: ids.slice(0, 1), continuation: ids.slice(1) } : { context: [prefix], continuation: ids };
  }
  const whole = tokenizer.encode(context + continuation, { bos });
  const contextIds = tokenizer.encode(context, { bos });
  return { context: contextIds, continuation: whole.slice(contextIds.length) };
}

interface Job {
  window: number;
  /** rows[k]: the window index whose hidden state predicts targets[k]. */
  rows: number[];
  targets: number[];
}

/** The windows that answer a list of requests, and where each request's targets are scored. */
export interface RequestPlan {
  windows: Window[];
  /** One per request, in order. */
  jobs: Job[];
}

export interface PlanOptions {
  /** The model's context length: inputs are cut from the left to it. */
  maxLength: number;
  bos: boolean;
  /** Consecutive requests that may share a prefix (an item's requests), as counts adding up to all of them. */
  groupSizes: readonly number[];
  /** Pack the inputs of a group behind their common prefix (default true) when the cost says it pays. */
  sharePrefixes?: boolean;
  /** Relative cost of a window of T tokens (default T): packing is chosen only where it costs less. */
  windowCost?: (tokens: number) => number;
}

/**
 * Relative cost of a window of T tokens through one decoder layer: the linear layers grow
 * with T, the attention scores with T^2 (dense: a packed window computes the scores between
 * its branches too, then masks them). Per score: 2 headDim multiply-adds for q.k and p.v,
 * and about 8 more operations for the mask, softmax and reshapes.
 */
export function layerWindowCost(shape: { dim: number; hiddenDim: number; nHeads: number; nKvHeads: number; headDim: number; plainMlp?: boolean }): (tokens: number) => number {
  const { dim, hiddenDim, nHeads, nKvHeads, headDim } = shape;
  const qDim = nHeads * headDim;
  const kvDim = nKvHeads * headDim;
  const mlpMatrices = shape.plainMlp ? 2 : 3; // GPT-2's MLP has no gate
  const linear = 2 * (dim * (qDim + 2 * kvDim) + qDim * dim + mlpMatrices * dim * hiddenDim);
  const perScore = nHeads * (4 * headDim + 8);
  return (T) => linear * T + perScore * T * T;
}

const HEAD_ROWS = 512;

/**
 * Right-pads a window to a bucket length (never past the model's context). Attention is causal,
 * so padding after the last real token changes nothing before it; it makes windows of nearby
 * lengths one batch and one compiled graph, instead of one per length. Buckets are multiples of
 * 32 up to 256 tokens, then 8 per doubling (multiples of 32 below 512, 64 below 1024, 128 below
 * 2048, ...): padding stays under 12.5%, and a 5-shot MMLU run compiles a few graphs, not one
 * per question (each compile costs about as much as running several windows).
 */
function paddedLength(length: number, maxLength: number): number {
  const multiple = Math.max(32, 2 ** (Math.floor(Math.log2(Math.max(length, 1))) - 3));
  return Math.max(length, Math.min(maxLength, Math.ceil(length / multiple) * multiple));
}

function padToBucket(tokens: number[], maxLength: number): number[] {
  const length = paddedLength(tokens.length, maxLength);
  return length <= tokens.length ? tokens : [...tokens, ...new Array<number>(length - tokens.length).fill(0)];
}

/** A request's model input and targets, before windows are chosen. */
interface Encoded {
  input: number[];
  /** The input as a map key (identical inputs share windows). */
  key: string;
  /** Index in input whose hidden state predicts targets[0]. */
  first: number;
  targets: number[];
  /** The input lost tokens on the left (it cannot share a prefix with its group). */
  truncated: boolean;
}

function encodeRequest(tokenizer: Tokenizer, request: LoglikelihoodRequest, bos: boolean, maxLength: number): Encoded {
  const { context, continuation } = encodePair(tokenizer, request, bos);
  const all = [...context, ...continuation];
  const input = all.slice(Math.max(0, all.length - 1 - maxLength), all.length - 1);
  // A continuation longer than the model's context loses its first tokens, as in the harness.
  const first = input.length - continuation.length;
  return { input, key: input.join(","), first: Math.max(0, first), targets: continuation.slice(Math.max(0, -first)), truncated: all.length - 1 > maxLength };
}

function commonPrefixLength(inputs: readonly number[][]): number {
  let p = 0;
  const shortest = Math.min(...inputs.map((i) => i.length));
  while (p < shortest && inputs.every((i) => i[p] === inputs[0]![p])) p++;
  return p;
}

function groupsOf(requests: readonly LoglikelihoodRequest[], sizes: readonly number[]): number[][] {
  const groups: number[][] = [];
  let at = 0;
  for (const size of sizes) {
    groups.push(Array.from({ length: size }, (_, i) => at + i));
    at += size;
  }
  if (at !== requests.length) throw new Error(`internal: group sizes add up to ${at}, not the ${requests.length} requests`);
  return groups;
}

/**
 * Chooses the windows: identical inputs share one plain window; the distinct inputs of a group
 * that share a prefix are packed behind one copy of it (branches in order, as many per window
 * as fit the context), so e.g. HellaSwag's context is computed once for its four endings.
 */
export function planRequests(tokenizer: Tokenizer, requests: readonly LoglikelihoodRequest[], options: PlanOptions): RequestPlan {
  const { maxLength, bos } = options;
  const cost = options.windowCost ?? ((T: number): number => T);
  const encoded = requests.map((r) => encodeRequest(tokenizer, r, bos, maxLength));
  const windows: Window[] = [];
  const jobs: Job[] = encoded.map((e) => ({ window: -1, rows: [], targets: e.targets }));
  const plainWindowOf = new Map<string, number>();
  const rowsFrom = (e: Encoded, at: (i: number) => number): number[] => e.targets.map((_, k) => at(e.first + k));
  /** Request r scored in a plain window of its own input (shared by identical inputs). */
  const assignPlain = (r: number): void => {
    const e = encoded[r]!;
    let window = plainWindowOf.get(e.key);
    if (window === undefined) {
      window = windows.length;
      windows.push({ document: window, begin: 0, tokens: padToBucket(e.input, maxLength) });
      plainWindowOf.set(e.key, window);
    }
    jobs[r]!.window = window;
    jobs[r]!.rows = rowsFrom(e, (i) => i);
  };
  for (const group of groupsOf(requests, options.groupSizes)) {
    const scored = group.filter((r) => encoded[r]!.targets.length > 0); // nothing to score otherwise
    const packable = options.sharePrefixes === false ? [] : scored.filter((r) => !encoded[r]!.truncated);
    const distinct = new Map(packable.map((r) => [encoded[r]!.key, encoded[r]!.input]));
    const p = distinct.size >= 2 ? commonPrefixLength([...distinct.values()]) : 0;
    for (const r of scored) if (p === 0 || !packable.includes(r)) assignPlain(r);
    if (p === 0) continue;
    // Branches: each distinct input past the prefix, placed in the first window with room.
    const prefix = distinct.values().next().value!.slice(0, p);
    const packs: { branches: number[][]; used: number }[] = [];
    const placed = new Map<string, { pack: number; offset: number }>();
    for (const [key, input] of distinct) {
      const branch = input.slice(p);
      let pack = packs.findIndex((k) => p + k.used + branch.length <= maxLength);
      if (pack < 0) pack = packs.push({ branches: [], used: 0 }) - 1;
      const k = packs[pack]!;
      placed.set(key, { pack, offset: k.used });
      k.branches.push(branch);
      k.used += branch.length;
    }
    packs.forEach((k, index) => {
      const members = packable.filter((r) => placed.get(encoded[r]!.key)!.pack === index);
      const packedCost = cost(paddedLength(p + k.used, maxLength));
      const plainCost = k.branches.reduce((n, b) => n + cost(paddedLength(p + b.length, maxLength)), 0);
      if (k.branches.filter((b) => b.length > 0).length < 2 || packedCost >= plainCost) {
        // One sequence needs no packing, and long branches can cost more packed (their dense
        // attention scores cross each other) than apart: plain windows (which may be shared).
        for (const r of members) assignPlain(r);
        return;
      }
      windows.push(packedWindow(windows.length, prefix, k.branches, maxLength));
      for (const r of members) {
        const { offset } = placed.get(encoded[r]!.key)!;
        jobs[r]!.window = windows.length - 1;
        jobs[r]!.rows = rowsFrom(encoded[r]!, (i) => (i < p ? i : p + offset + (i - p)));
      }
    });
  }
  return { windows, jobs };
}

/** prefix, then each branch; padding after them is a branch of its own (it sees only the prefix and itself). */
function packedWindow(document: number, prefix: readonly number[], branches: readonly number[][], maxLength: number): Window {
  const tokens = [...prefix];
  const positions = prefix.map((_, i) => i);
  const ids = prefix.map(() => 0);
  branches.forEach((branch, b) => {
    branch.forEach((token, i) => {
      tokens.push(token);
      positions.push(prefix.length + i);
      ids.push(b + 1);
    });
  });
  const real = tokens.length;
  const length = paddedLength(real, maxLength);
  for (let j = real; j < length; j++) {
    tokens.push(0);
    positions.push(prefix.length + (j - real));
    ids.push(branches.length + 1);
  }
  return { document, begin: 0, tokens, layout: { positions: Int32Array.from(positions), branches: Int32Array.from(ids) } };
}

export async function scoreRequests(source: StreamingSource, tokenizer: Tokenizer, requests: readonly LoglikelihoodRequest[], options: LoglikelihoodOptions): Promise<ScoredRequest[]> {
  // A recurrence has no tree mask to share a prefix with: a recurrent model scores one sequence per window.
  const sharePrefixes = isRecurrentShape(layerShape(source.config)) ? false : options.sharePrefixes;
  const { windows, jobs } = planRequests(tokenizer, requests, {
    maxLength: source.config.contextLength, bos: options.bos ?? tokenizer.addsBos, windowCost: layerWindowCost(source.config),
    groupSizes: options.groupSizes, ...(sharePrefixes === undefined ? {} : { sharePrefixes }),
  });
  const results: ScoredRequest[] = jobs.map((j) => ({ loglikelihood: 0, greedy: true, tokens: j.targets.length }));
  const head = await prepareHead(source, options.backend);
  const groupTokens = options.groupTokens ?? 1 << 16;
  const totalTokens = windows.reduce((n, w) => n + w.tokens.length, 0);
  let doneTokens = 0;
  // Windows in order of length, so that each group holds few distinct lengths (full batches).
  const order = windows.map((_, i) => i).sort((a, b) => windows[a]!.tokens.length - windows[b]!.tokens.length || a - b);
  for (let start = 0; start < order.length;) {
    // A group of windows small enough to keep every residual stream in memory.
    let end = start;
    let tokens = 0;
    while (end < order.length && (end === start || tokens + windows[order[end]!]!.tokens.length <= groupTokens)) tokens += windows[order[end++]!]!.tokens.length;
    const members = new Set(order.slice(start, end));
    const group = order.slice(start, end).map((i) => windows[i]!);
    const batches = await runLayersStreaming(source, group, { backend: options.backend, ...(options.skip ? { skip: options.skip } : {}) });
    try {
      const rowOf = new Map<Window, { hidden: HiddenStates; offset: number }>();
      for (const batch of batches) batch.windows.forEach((w, i) => rowOf.set(w, { hidden: batch.hidden!, offset: i * batch.seqLen }));
      await scoreGroup(jobs, results, members, windows, rowOf, source, head, options.backend);
    } finally {
      releaseBatches(batches, options.backend);
    }
    doneTokens += tokens;
    options.onProgress?.(doneTokens, totalTokens);
    start = end;
  }
  return results;
}

/** The head over every distinct (window, position) the group's jobs score, HEAD_ROWS at a time per batch. */
async function scoreGroup(
  jobs: readonly Job[], results: ScoredRequest[], members: ReadonlySet<number>, windows: readonly Window[],
  rowOf: Map<Window, { hidden: HiddenStates; offset: number }>, source: StreamingSource, head: PreparedHead, backend: DecoderBackend,
): Promise<void> {
  const { vocabSize, normEps } = source.config;
  interface HeadRow { window: number; position: number; uses: { job: number; target: number }[] }
  const rows = new Map<string, HeadRow>();
  jobs.forEach((job, j) => {
    if (!members.has(job.window)) return;
    job.targets.forEach((target, k) => {
      const position = job.rows[k]!;
      const key = `${job.window}:${position}`;
      const row = rows.get(key) ?? { window: job.window, position, uses: [] };
      row.uses.push({ job: j, target });
      rows.set(key, row);
    });
  });
  // The rows of each batch's states go to the head together.
  const byStates = new Map<HiddenStates, HeadRow[]>();
  for (const row of rows.values()) {
    const { hidden } = rowOf.get(windows[row.window]!)!;
    const list = byStates.get(hidden) ?? [];
    list.push(row);
    byStates.set(hidden, list);
  }
  for (const [hidden, list] of byStates) for (let at = 0; at < list.length; at += HEAD_ROWS) {
    const chunk = list.slice(at, at + HEAD_ROWS);
    const indices = Int32Array.from(chunk, (row) => rowOf.get(windows[row.window]!)!.offset + row.position);
    const result = await backend.runHead(hidden, indices, head, normEps);
    if (result.kind !== "logits") throw new Error("internal: the backend returned log-likelihoods where logits were asked for");
    const headLogits = result.logits;
    chunk.forEach((row, i) => {
      const logits = headLogits.subarray(i * vocabSize, (i + 1) * vocabSize);
      let max = -Infinity;
      let argmax = 0;
      for (let v = 0; v < vocabSize; v++) {
        if (logits[v]! > max) {
          max = logits[v]!;
          argmax = v;
        }
      }
      let sum = 0;
      for (let v = 0; v < vocabSize; v++) sum += Math.exp(logits[v]! - max);
      const logSumExp = max + Math.log(sum);
      for (const use of row.uses) {
        results[use.job]!.loglikelihood += logits[use.target]! - logSumExp;
        if (use.target !== argmax) results[use.job]!.greedy = false;
      }
    });
  }
}

// Log-likelihood of continuations given contexts, as lm-evaluation-harness computes it for
// causal models, run layer by layer like scoring (so models larger than memory work):
//  * tokenization split: trailing spaces of the context move to the continuation; the whole
//    string and the context are encoded separately and the continuation's tokens are the whole
//    encoding past the context's length; an empty context becomes the BOS token;
//  * the model input is (context + continuation) without its last token, cut from the left to
//    the model's context length; the continuation's tokens are scored at the last positions;
//  * `greedy`: every continuation token is the argmax at its position.
// Requests with the same input share one window (every single-token answer to one question
// costs one forward pass), and requests scoring the same positions share the head rows.

import type { DecoderBackend } from "../backend/backend.js";
import type { Window } from "../data/windows.js";
import { loadLlamaGlobals } from "../models/llama.js";
import { runLayersStreaming, type StreamingSource } from "../models/streaming.js";
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
  /** Add BOS before every context (lm-eval's add_bos_token); default false, as the harness for most models. */
  bos?: boolean;
  /** Layers left out. */
  skip?: ReadonlySet<number>;
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
  if (context === "") return { context: [tokenizer.bosId], continuation: tokenizer.encode(continuation, { bos: false }) };
  const whole = tokenizer.encode(context + continuation, { bos });
  const contextIds = tokenizer.encode(context, { bos });
  return { context: contextIds, continuation: whole.slice(contextIds.length) };
}

interface Job {
  window: number;
  /** The window position whose hidden state predicts targets[0]; targets[k] is predicted at first + k. */
  first: number;
  targets: number[];
}

const HEAD_ROWS = 512;

/**
 * Right-pads a window to a multiple of PAD_MULTIPLE tokens (never past the model's context).
 * Attention is causal, so padding after the last real token changes nothing before it; it
 * makes windows of nearby lengths one batch and one compiled graph, instead of one per length.
 */
const PAD_MULTIPLE = 32;

function padToBucket(tokens: number[], maxLength: number): number[] {
  const length = Math.min(maxLength, Math.ceil(tokens.length / PAD_MULTIPLE) * PAD_MULTIPLE);
  return length <= tokens.length ? tokens : [...tokens, ...new Array<number>(length - tokens.length).fill(0)];
}

export async function scoreRequests(source: StreamingSource, tokenizer: Tokenizer, requests: readonly LoglikelihoodRequest[], options: LoglikelihoodOptions): Promise<ScoredRequest[]> {
  const maxLength = source.config.contextLength;
  const bos = options.bos ?? false;
  // Windows, deduplicated by their input tokens.
  const windows: Window[] = [];
  const windowOf = new Map<string, number>();
  const jobs: Job[] = requests.map((request) => {
    const { context, continuation } = encodePair(tokenizer, request, bos);
    if (continuation.length === 0) return { window: -1, first: 0, targets: [] }; // nothing to score
    const all = [...context, ...continuation];
    const input = all.slice(Math.max(0, all.length - 1 - maxLength), all.length - 1);
    const key = input.join(",");
    let window = windowOf.get(key);
    if (window === undefined) {
      window = windows.length;
      windows.push({ document: window, begin: 0, tokens: padToBucket(input, maxLength) });
      windowOf.set(key, window);
    }
    // A continuation longer than the model's context loses its first tokens, as in the harness.
    const first = input.length - continuation.length;
    return { window, first: Math.max(0, first), targets: continuation.slice(Math.max(0, -first)) };
  });
  const results: ScoredRequest[] = jobs.map((j) => ({ loglikelihood: 0, greedy: true, tokens: j.targets.length }));
  const { finalNorm, classifier } = loadLlamaGlobals(source.provider, source.config, source.names);
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
    const rowOf = new Map<Window, { hidden: Float32Array; offset: number }>();
    for (const batch of batches) batch.windows.forEach((w, i) => rowOf.set(w, { hidden: batch.hidden, offset: i * batch.seqLen }));
    await scoreGroup(jobs, results, members, windows, rowOf, source, finalNorm, classifier, options.backend);
    doneTokens += tokens;
    options.onProgress?.(doneTokens, totalTokens);
    start = end;
  }
  return results;
}

/** The head over every distinct (window, position) the group's jobs score, HEAD_ROWS at a time. */
async function scoreGroup(
  jobs: readonly Job[], results: ScoredRequest[], members: ReadonlySet<number>, windows: readonly Window[],
  rowOf: Map<Window, { hidden: Float32Array; offset: number }>, source: StreamingSource, finalNorm: Float32Array, classifier: Float32Array, backend: DecoderBackend,
): Promise<void> {
  const { dim, vocabSize, normEps } = source.config;
  const rows = new Map<string, { window: number; position: number; uses: { job: number; target: number }[] }>();
  jobs.forEach((job, j) => {
    if (!members.has(job.window)) return;
    job.targets.forEach((target, k) => {
      const position = job.first + k;
      const key = `${job.window}:${position}`;
      const row = rows.get(key) ?? { window: job.window, position, uses: [] };
      row.uses.push({ job: j, target });
      rows.set(key, row);
    });
  });
  const list = [...rows.values()];
  for (let at = 0; at < list.length; at += HEAD_ROWS) {
    const chunk = list.slice(at, at + HEAD_ROWS);
    const x = new Float32Array(chunk.length * dim);
    chunk.forEach((row, i) => {
      const { hidden, offset } = rowOf.get(windows[row.window]!)!;
      x.set(hidden.subarray((offset + row.position) * dim, (offset + row.position + 1) * dim), i * dim);
    });
    const head = await backend.runHead(x, chunk.length, finalNorm, classifier, vocabSize, normEps);
    if (head.kind !== "logits") throw new Error("internal: the backend returned log-likelihoods where logits were asked for");
    chunk.forEach((row, i) => {
      const logits = head.logits.subarray(i * vocabSize, (i + 1) * vocabSize);
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

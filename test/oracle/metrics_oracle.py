#!/usr/bin/env python3
"""Golden values for the layer-importance metrics and selections (issue: metrics, selection,
stability), from the numpy float64 oracle in llama_oracle.py (its reader, tokenizer, windows and
forward pass; nothing shared with the TypeScript code).

Metrics on stories260K over TinyStories scoring windows (definitions in src/metrics/layerMetrics.ts):
  bi, bi-angular, relative-magnitude, angular (block 1..3, last/all tokens), ppl (each layer
  removed), reverse-order, random (mulberry32 + Fisher-Yates, seed 7);
selections: top-k and contiguous (k = 2, with and without --keep-first 1 / --keep-last 1),
iterative bi and iterative ppl (SLEB) for k = 2.

Run: python3 test/oracle/metrics_oracle.py  (numpy only) -> test/oracle/golden/stories260K_metrics.json
"""
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama_oracle import (REPO_ROOT, Tokenizer, attention, bi_windows, load_documents,  # noqa: E402
                          load_model, perplexity, rmsnorm)

WINDOW, STRIDE, DOCUMENTS, K = 128, 128, 40, 2


def residuals(cfg, w, tokens, skip=()):
    """The residual stream entering each running layer, and leaving the last one: [x_0, ..., x_R]."""
    x = w["tok_emb"][np.asarray(tokens)]
    states = [x]
    for l in range(cfg["n_layers"]):
        if l in skip:
            continue
        h = x + attention(cfg, w, l, rmsnorm(x, w["rms_att"][l]))
        hn = rmsnorm(h, w["rms_ffn"][l])
        a = hn @ w["w1"][l].T
        x = h + (a / (1.0 + np.exp(-a)) * (hn @ w["w3"][l].T)) @ w["w2"][l].T
        states.append(x)
    return states


def cos_rows(a, b):
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def angle(c):
    return np.arccos(np.clip(c, -1.0, 1.0)) / math.pi


def residual_metrics(cfg, w, windows, skip=()):
    running = [l for l in range(cfg["n_layers"]) if l not in skip]
    R = len(running)
    cos_sum, ang_sum, mag_sum, count = np.zeros(R), np.zeros(R), np.zeros(R), 0
    block = {(n, t): np.zeros(R - n + 1) for n in (1, 2, 3) for t in ("last", "all")}
    block_count = {"last": 0, "all": 0}
    for win in windows:
        xs = residuals(cfg, w, win, skip)
        for k in range(R):
            c = cos_rows(xs[k], xs[k + 1])
            cos_sum[k] += c.sum()
            ang_sum[k] += angle(c).sum()
            mag_sum[k] += (np.linalg.norm(xs[k + 1] - xs[k], axis=-1) / np.linalg.norm(xs[k + 1], axis=-1)).sum()
        count += len(win)
        for n in (1, 2, 3):
            for s in range(R - n + 1):
                block[(n, "all")][s] += angle(cos_rows(xs[s], xs[s + n])).sum()
                block[(n, "last")][s] += angle(cos_rows(xs[s][-1:], xs[s + n][-1:])).sum()
        block_count["all"] += len(win)
        block_count["last"] += 1
    out = dict(layers=running, bi=list(1 - cos_sum / count), bi_angular=list(ang_sum / count),
               relative_magnitude=list(mag_sum / count), tokens=count, windows=len(windows), angular=[])
    for (n, t), sums in block.items():
        out["angular"].append(dict(block=n, tokens=t, starts=running[:R - n + 1], distance=list(sums / block_count[t])))
    return out


def ranking(layers, scores):
    return [l for _, l in sorted(zip(scores, layers))]


def mulberry32(seed):
    a = seed & 0xFFFFFFFF

    def rand():
        nonlocal a
        a = (a + 0x6D2B79F5) & 0xFFFFFFFF
        t = a
        t = ((t ^ (t >> 15)) * (t | 1)) & 0xFFFFFFFF
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & 0xFFFFFFFF)) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296
    return rand


def seeded_permutation(n, seed):
    rand, order = mulberry32(seed), list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(math.floor(rand() * (i + 1)))
        order[i], order[j] = order[j], order[i]
    return order


def top_k(layers, scores, k, n_layers, keep_first=0, keep_last=0):
    allowed = [l for l in ranking(layers, scores) if keep_first <= l < n_layers - keep_last]
    return sorted(allowed[:k])


def contiguous(layers, scores, k, n_layers, keep_first=0, keep_last=0):
    by_layer = dict(zip(layers, scores))
    best = None
    for start in range(keep_first, n_layers - keep_last - k + 1):
        total = sum(by_layer[l] for l in range(start, start + k))
        if best is None or total < best[1]:
            best = (start, total)
    return list(range(best[0], best[0] + k))


def main():
    shared = os.environ.get("SHORTGPT_SHARED", os.path.join(REPO_ROOT, "..", "shared"))
    cfg, w = load_model(os.path.join(shared, "models/stories260K/stories260K.bin"))
    tok = Tokenizer(os.path.join(shared, "models/stories260K/tok512.bin"))
    docs = load_documents(os.path.join(shared, "data/tinystories/tinystories_val.txt"), DOCUMENTS)
    docs_tokens = [tok.encode(d) for d in docs]
    windows = list(bi_windows(docs_tokens, WINDOW, STRIDE))
    L = cfg["n_layers"]

    res = residual_metrics(cfg, w, windows)
    layers = res["layers"]
    ppl = [perplexity(cfg, w, docs_tokens, WINDOW, STRIDE, {l})["perplexity"] for l in layers]
    golden = dict(oracle="numpy float64 (test/oracle/metrics_oracle.py)", window=WINDOW, stride=STRIDE,
                  documents=DOCUMENTS, k=K, **res, ppl=ppl,
                  reverse_order=list(range(L - 2, -1, -1)) + [L - 1],
                  random=dict(seed=7, order=seeded_permutation(L, 7)))

    per_layer = dict(bi=res["bi"], bi_angular=res["bi_angular"], relative_magnitude=res["relative_magnitude"], ppl=ppl)
    golden["selections"] = []
    for name, scores in per_layer.items():
        for keep in ((0, 0), (1, 1)):
            golden["selections"].append(dict(metric=name, keep_first=keep[0], keep_last=keep[1],
                                             top_k=top_k(layers, scores, K, L, *keep),
                                             contiguous=contiguous(layers, scores, K, L, *keep)))

    # Iterative: rescore with the layers removed so far skipped; remove the lowest; k times.
    def iterate(score_fn):
        removed, steps = [], []
        for _ in range(K):
            run_layers, scores = score_fn(set(removed))
            pick = [l for l in ranking(run_layers, scores) if l not in removed][0]
            removed.append(pick)
            steps.append(dict(removed=pick, layers=run_layers, scores=scores))
        return dict(layers=sorted(removed), steps=steps)

    def bi_scores(skip):
        r = residual_metrics(cfg, w, windows, skip)
        return r["layers"], r["bi"]

    def ppl_scores(skip):
        run_layers = [l for l in range(L) if l not in skip]
        return run_layers, [perplexity(cfg, w, docs_tokens, WINDOW, STRIDE, skip | {l})["perplexity"] for l in run_layers]

    golden["iterative"] = dict(bi=iterate(bi_scores), ppl=iterate(ppl_scores))
    out = os.path.join(REPO_ROOT, "test", "oracle", "golden", "stories260K_metrics.json")
    with open(out, "w") as f:
        json.dump(golden, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

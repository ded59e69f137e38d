#!/usr/bin/env python3
"""Independent numpy (float64) reference implementation ("oracle") for shortgpt.

It re-implements, from scratch and without sharing any code with the TypeScript
project, everything the TypeScript tests need golden numbers for:

  * reading a llama2.c legacy checkpoint (.bin) and its tokenizer (tok512.bin),
  * the llama2.c / sentencepiece-style BPE encoder and the decoder,
  * the Llama forward pass (RMSNorm, grouped-query attention with interleaved
    RoPE, SwiGLU MLP), in float64 with weights upcast from float32,
  * Block Influence (ShortGPT) per layer over sliding windows,
  * strided perplexity, optionally with layers skipped,
  * greedy generation.

Usage (from the repository root):

    python3 test/oracle/llama_oracle.py --shared /work/shared \
        --cases test/oracle/cases.json --out test/oracle/golden/stories260K.json

--shared defaults to $SHORTGPT_SHARED, else ../shared relative to the repo root.
All paths inside the cases file are relative to the shared directory.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
NORM_EPS = 1e-5
ROPE_THETA = 10000.0


# --------------------------------------------------------------------------- model
def load_model(path):
    """Parse a llama2.c legacy checkpoint into a dict of float64 arrays."""
    raw = open(path, "rb").read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack_from("<7i", raw, 0)
    shared = vocab > 0
    vocab = abs(vocab)
    head_size = dim // n_heads
    kv_dim = head_size * n_kv_heads
    L = n_layers
    shapes = [
        ("tok_emb", (vocab, dim)), ("rms_att", (L, dim)),
        ("wq", (L, dim, dim)), ("wk", (L, kv_dim, dim)), ("wv", (L, kv_dim, dim)),
        ("wo", (L, dim, dim)), ("rms_ffn", (L, dim)),
        ("w1", (L, hidden, dim)), ("w2", (L, dim, hidden)), ("w3", (L, hidden, dim)),
        ("rms_final", (dim,)),
        ("freq_cis_real", (seq_len, head_size // 2)), ("freq_cis_imag", (seq_len, head_size // 2)),
    ]
    if not shared:
        shapes.append(("wcls", (vocab, dim)))
    n_floats = sum(int(np.prod(s)) for _, s in shapes)
    expected = 28 + 4 * n_floats
    if len(raw) != expected:
        raise ValueError(f"{path}: size {len(raw)} != {expected} implied by header")
    flat = np.frombuffer(raw, dtype="<f4", offset=28).astype(np.float64)
    w, off = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape))
        w[name] = flat[off:off + n].reshape(shape)
        off += n
    if shared:
        w["wcls"] = w["tok_emb"]
    cfg = dict(dim=dim, hidden_dim=hidden, n_layers=n_layers, n_heads=n_heads,
               n_kv_heads=n_kv_heads, vocab_size=vocab, seq_len=seq_len,
               head_size=head_size, shared_classifier=shared)
    return cfg, w


def rmsnorm(x, weight):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + NORM_EPS) * weight


def rope(x, head_size):
    """Interleaved RoPE on x of shape (T, heads, head_size); positions 0..T-1."""
    T = x.shape[0]
    i = np.arange(head_size // 2, dtype=np.float64)
    freq = ROPE_THETA ** (-2.0 * i / head_size)               # (hs/2,)
    ang = np.arange(T, dtype=np.float64)[:, None] * freq       # (T, hs/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def attention(cfg, w, l, xn):
    """Causal grouped-query self-attention of one layer on a (T, dim) window."""
    T = xn.shape[0]
    hs, nh, nkv = cfg["head_size"], cfg["n_heads"], cfg["n_kv_heads"]
    q = rope((xn @ w["wq"][l].T).reshape(T, nh, hs), hs)
    k = rope((xn @ w["wk"][l].T).reshape(T, nkv, hs), hs)
    v = (xn @ w["wv"][l].T).reshape(T, nkv, hs)
    group = nh // nkv                                  # query head h -> kv head h // group
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(hs)
    scores = np.where(np.tril(np.ones((T, T), dtype=bool)), scores, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.einsum("hqk,khd->qhd", p, v).reshape(T, nh * hs)
    return out @ w["wo"][l].T


def forward(cfg, w, tokens, skip=(), want_logits=True):
    """Run one window. Returns (logits (T,vocab) or None, per-layer cosines {layer: (T,)})."""
    x = w["tok_emb"][np.asarray(tokens)]
    cosines = {}
    for l in range(cfg["n_layers"]):
        if l in skip:
            continue                                   # residual passes through unchanged
        x_in = x
        h = x + attention(cfg, w, l, rmsnorm(x, w["rms_att"][l]))
        hn = rmsnorm(h, w["rms_ffn"][l])
        a = hn @ w["w1"][l].T
        x = h + (a / (1.0 + np.exp(-a)) * (hn @ w["w3"][l].T)) @ w["w2"][l].T
        cosines[l] = np.sum(x_in * x, -1) / (np.linalg.norm(x_in, axis=-1) * np.linalg.norm(x, axis=-1))
    logits = rmsnorm(x, w["rms_final"]) @ w["wcls"].T if want_logits else None
    return logits, cosines


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


# ----------------------------------------------------------------------- tokenizer
class Tokenizer:
    def __init__(self, path):
        raw = open(path, "rb").read()
        self.max_token_length, = struct.unpack_from("<i", raw, 0)
        off, self.pieces, self.scores = 4, [], []
        while off < len(raw):
            score, n = struct.unpack_from("<fi", raw, off)
            off += 8
            self.pieces.append(raw[off:off + n])
            self.scores.append(float(score))
            off += n
        self.lookup = {}
        for i, p in enumerate(self.pieces):
            self.lookup.setdefault(p, i)

    def encode(self, text):
        """BOS + BPE ids, llama2.c style (dummy space prefix, byte fallback)."""
        if text == "":
            return [1]
        ids = []
        for ch in " " + text:
            b = ch.encode("utf-8")
            if b in self.lookup:
                ids.append(self.lookup[b])
            else:
                ids.extend(byte + 3 for byte in b)       # <0xNN> byte tokens
        while True:
            best, best_i = None, -1
            for i in range(len(ids) - 1):
                cand = self.lookup.get(self.pieces[ids[i]] + self.pieces[ids[i + 1]])
                if cand is not None and (best is None or self.scores[cand] > self.scores[best]):
                    best, best_i = cand, i                # strict '>' keeps the leftmost on ties
            if best is None:
                break
            ids[best_i:best_i + 2] = [best]
        return [1] + ids

    def decode(self, ids, prev=None):
        """Concatenate pieces; byte tokens give raw bytes; strip ' ' after BOS."""
        out = bytearray()
        for t in ids:
            piece = self.pieces[t]
            if prev == 1 and piece.startswith(b" "):
                piece = piece[1:]
            if 3 <= t <= 258:
                piece = bytes([t - 3])
            out += piece
            prev = t
        return out.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- data
def load_documents(path, limit):
    """Blank-line separated blocks, stripped, empties dropped; first `limit`."""
    text = open(path, "rb").read().decode("utf-8").replace("\r\n", "\n")
    docs, block = [], []
    for line in text.split("\n") + [""]:
        if line.strip() == "":
            doc = "\n".join(block).strip()
            if doc:
                docs.append(doc)
            block = []
        else:
            block.append(line)
    return docs[:limit]


def bi_windows(docs_tokens, L, S, max_tokens=None):
    """Scoring windows, document by document, optionally capped at max_tokens."""
    used = 0
    for toks in docs_tokens:
        begin = 0
        while True:
            win = toks[begin:begin + L]
            if max_tokens is not None and used + len(win) > max_tokens:
                win = win[:max_tokens - used]
                if len(win) >= 2:
                    yield win
                return
            if len(win) >= 2:
                used += len(win)
                yield win
            if begin + L >= len(toks):
                break
            begin += S
        if max_tokens is not None and used >= max_tokens:
            return


# ----------------------------------------------------------------------- measures
def block_influence(cfg, w, docs_tokens, L, S, max_tokens, skip):
    sums = {l: 0.0 for l in range(cfg["n_layers"]) if l not in skip}
    positions = windows = 0
    for win in bi_windows(docs_tokens, L, S, max_tokens):
        _, cos = forward(cfg, w, win, skip, want_logits=False)
        for l in sums:
            sums[l] += float(np.sum(cos[l]))
        positions += len(win)
        windows += 1
    layers = sorted(sums)
    cosine = [sums[l] / positions for l in layers]
    return dict(layers=layers, cosine=cosine, bi=[1.0 - c for c in cosine],
                tokens=positions, windows=windows)


def perplexity(cfg, w, docs_tokens, L, S, skip):
    total, count = 0.0, 0
    for toks in docs_tokens:
        N, scored_up_to, begin = len(toks), 1, 0
        while True:
            end = min(begin + L, N)
            first = max(begin + 1, scored_up_to)
            if first < end:
                logits, _ = forward(cfg, w, toks[begin:end], skip)
                lp = log_softmax(logits[first - begin - 1:end - begin - 1])
                tgt = np.asarray(toks[first:end])
                total += float(-np.sum(lp[np.arange(len(tgt)), tgt]))
                count += len(tgt)
            scored_up_to = max(scored_up_to, end)
            if end == N:
                break
            begin += S
    nll = total / count
    return dict(nll=nll, perplexity=math.exp(nll), tokens=count)


def round_sig(a, digits):
    return [[float(f"{v:.{digits}g}") for v in row] for row in a]


# --------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("SHORTGPT_SHARED",
                                                       os.path.join(REPO_ROOT, "..", "shared")))
    ap.add_argument("--cases", default=os.path.join(REPO_ROOT, "test", "oracle", "cases.json"))
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "test", "oracle", "golden", "stories260K.json"))
    args = ap.parse_args()
    cases = json.load(open(args.cases, encoding="utf-8"))
    sp = lambda rel: os.path.join(args.shared, rel)

    cfg, w = load_model(sp(cases["model"]))
    tok = Tokenizer(sp(cases["tokenizer"]))
    docs = load_documents(sp(cases["data"]), cases["documents"])
    docs_tokens = [tok.encode(d) for d in docs]
    golden = dict(
        oracle=dict(impl="numpy float64 (test/oracle/llama_oracle.py)", numpy=np.__version__),
        model=dict(path=cases["model"], **cfg),
        tokenizer=dict(path=cases["tokenizer"], vocab_size=len(tok.pieces),
                       max_token_length=tok.max_token_length),
        documents=dict(path=cases["data"], count=len(docs),
                       token_counts=[len(t) for t in docs_tokens]),
    )

    golden["tokenize"] = []
    for item in cases["tokenize"]:
        if isinstance(item, dict):
            for i in range(item["tinystories_docs"]):
                golden["tokenize"].append(dict(source="tinystories_doc", doc_index=i,
                                               text=docs[i], ids=docs_tokens[i]))
        else:
            golden["tokenize"].append(dict(source="literal", text=item, ids=tok.encode(item)))

    lc = cases["logits"]
    ids = tok.encode(lc["prompt"])
    golden["logits"] = []
    for skip in lc["skips"]:
        logits, _ = forward(cfg, w, ids, set(skip))
        golden["logits"].append(dict(prompt=lc["prompt"], ids=ids, skip=skip,
                                     shape=list(logits.shape),
                                     significant_digits=lc["significant_digits"],
                                     logits=round_sig(logits, lc["significant_digits"])))

    golden["bi"] = []
    for c in cases["bi"]:
        r = block_influence(cfg, w, docs_tokens, c["window"], c["stride"], c.get("max_tokens"),
                            set(c.get("skip", [])))
        golden["bi"].append(dict(window=c["window"], stride=c["stride"], max_tokens=c.get("max_tokens"),
                                 skip=c.get("skip", []), documents=len(docs), **r))

    golden["perplexity"] = []
    for c in cases["perplexity"]:
        r = perplexity(cfg, w, docs_tokens, c["window"], c["stride"], set(c.get("skip", [])))
        golden["perplexity"].append(dict(window=c["window"], stride=c["stride"],
                                         skip=c.get("skip", []), documents=len(docs), **r))

    g = cases["generate"]
    seq = list(g["prompt_ids"])
    for _ in range(g["steps"]):
        logits, _ = forward(cfg, w, seq)
        seq.append(int(np.argmax(logits[-1])))
    gen = seq[len(g["prompt_ids"]):]
    golden["generate"] = dict(prompt_ids=g["prompt_ids"], steps=g["steps"], ids=gen,
                              text=tok.decode(gen, prev=g["prompt_ids"][-1]))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()

"""GPU peer for the device check's end-to-end rows: what a practitioner runs with transformers + PyTorch.

  mmlu:  log-likelihoods of the exact token requests shortgpt's MMLU evaluation scored (written by
         deviceCheck.js to mmlu-requests.json), computed the way lm-eval's HFLM does: requests sorted
         by length, batches right-padded, log_softmax over the vocabulary, the continuation's log-probs summed.
  prune: Block Influence over calibration text and removal of the lowest layers, end to end: load a
         Hugging Face directory to the GPU, score (output_hidden_states), delete the layers, save_pretrained.

Usage: python3 bench/gpu/peer_extra.py mmlu --shape llama2-7b --requests FILE --batch 64 --out peer-extra-mmlu.json
       python3 bench/gpu/peer_extra.py prune --model DIR --text FILE --tokens 16384 --seq-len 2048 --remove 5 --save OUT --out F
       python3 bench/gpu/peer_extra.py make --shape tinyllama --save DIR   (the random checkpoint both sides prune)
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from peer_cuda import SHAPES, build_model, make_config


def mmlu(args) -> dict:
    data = json.load(open(args.requests))
    requests = data["requests"]
    model = build_model(make_config(args.shape, 4096), "cuda", torch.bfloat16)
    order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][0]) + len(requests[i][1])))

    def run(limit=None) -> list:
        out = [0.0] * len(requests)
        todo = order if limit is None else order[:limit]
        with torch.inference_mode():
            for b in range(0, len(todo), args.batch):
                idx = todo[b:b + args.batch]
                seqs = [(requests[i][0] + requests[i][1])[:-1] for i in idx]
                width = max(len(s) for s in seqs)
                x = torch.zeros(len(idx), width, dtype=torch.long)
                for j, s in enumerate(seqs):
                    x[j, :len(s)] = torch.tensor(s)
                logp = F.log_softmax(model(x.cuda()).logits.float(), dim=-1)
                for j, i in enumerate(idx):
                    n, s = len(requests[i][1]), len(seqs[j])
                    targets = torch.tensor(requests[i][1], device="cuda")
                    out[i] = float(logp[j, s - n:s].gather(1, targets[:, None]).sum())
        return out

    run(limit=2 * args.batch)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    values = run()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"name": f"{args.shape} mmlu 0-shot", "unit": "items/s", "better": "higher", "value": data["items"] / seconds,
            "seconds": seconds, "items": data["items"], "requests": len(requests), "batch": args.batch, "first": values[:4]}


def make(args) -> dict:
    model = build_model(make_config(args.shape, 4096), "cuda", torch.bfloat16)
    t0 = time.perf_counter()
    model.save_pretrained(args.save)
    return {"saved": args.save, "seconds": time.perf_counter() - t0}


def prune(args) -> dict:
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to("cuda")
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    ids = tokenizer(open(args.text).read(), return_tensors="pt").input_ids[0][:args.tokens]
    windows = ids[: (len(ids) // args.seq_len) * args.seq_len].view(-1, args.seq_len).cuda()
    n_layers = model.config.num_hidden_layers
    sums = torch.zeros(n_layers, dtype=torch.float64, device="cuda")
    with torch.inference_mode():
        for w in windows:
            hidden = model.model(w[None], output_hidden_states=True).hidden_states
            # hidden_states[-1] is after the final norm: the last layer's output comes from a hook-free
            # recomputation here would cost a pass, so compare inputs of consecutive layers and the
            # last layer's input with the final norm's input (as most public scripts do).
            for layer in range(n_layers - 1):
                sums[layer] += F.cosine_similarity(hidden[layer].float(), hidden[layer + 1].float(), dim=-1).sum()
    bi = (1 - sums / windows.numel()).tolist()[: n_layers - 1]
    remove = sorted(range(len(bi)), key=lambda i: bi[i])[: args.remove]
    for layer in sorted(remove, reverse=True):
        del model.model.layers[layer]
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = i
    model.config.num_hidden_layers = len(model.model.layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [t for i, t in enumerate(model.config.layer_types) if i not in remove]
    model.save_pretrained(args.save)
    tokenizer.save_pretrained(args.save)
    seconds = time.perf_counter() - t0
    return {"name": "tinyllama prune end to end", "unit": "s", "better": "lower", "value": seconds, "removed": remove,
            "tokens": int(windows.numel())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    a = sub.add_parser("mmlu")
    a.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    a.add_argument("--requests", required=True)
    a.add_argument("--batch", type=int, default=64)
    a.add_argument("--out", required=True)
    b = sub.add_parser("make")
    b.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama")
    b.add_argument("--save", required=True)
    b.add_argument("--out", required=True)
    c = sub.add_parser("prune")
    c.add_argument("--model", required=True)
    c.add_argument("--text", required=True)
    c.add_argument("--tokens", type=int, default=16384)
    c.add_argument("--seq-len", type=int, default=2048)
    c.add_argument("--remove", type=int, default=5)
    c.add_argument("--save", required=True)
    c.add_argument("--out", required=True)
    args = ap.parse_args()
    result = {"mmlu": mmlu, "make": make, "prune": prune}[args.command](args)
    with open(args.out, "w") as f:
        f.write(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "first"}))


if __name__ == "__main__":
    main()

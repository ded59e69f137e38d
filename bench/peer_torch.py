"""PyTorch + transformers peer for `npm run bench`: the forward pass users actually run.

Loads a Hugging Face Llama directory with transformers (fp32 or bf16), runs the same token
windows shortgpt runs, and reports tokens/s and peak RSS for Block Influence scoring (hidden
states of every layer, ShortGPT style, no vocabulary projection needed but transformers
computes the model body only) and for perplexity (with the vocabulary projection).

Usage: python3 bench/peer_torch.py --model DIR --tokens ids.json --dtype fp32|bf16 --task score|ppl --threads 2
Prints one JSON object on stdout.
"""
import argparse
import json
import resource
import time

import torch
from transformers import LlamaForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True, help="JSON {windows: [[ids...], ...]} (equal lengths)")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--task", choices=["score", "ppl"], default="score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="windows per forward call")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    t0 = time.perf_counter()
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=dtype)
    model.eval()
    load_seconds = time.perf_counter() - t0
    windows = json.load(open(args.tokens))["windows"]
    ids = torch.tensor(windows, dtype=torch.long)
    n_tokens = ids.numel()

    result = {"peer": "transformers+torch", "torch": torch.__version__, "dtype": args.dtype, "task": args.task,
              "threads": args.threads, "batch": args.batch, "attention": model.config._attn_implementation, "tokens": n_tokens, "load_seconds": load_seconds}
    with torch.inference_mode():
        t0 = time.perf_counter()
        if args.task == "score":
            # Capture the residual stream entering and leaving each decoder layer (before the final norm).
            captured = []
            hooks = [layer.register_forward_hook(lambda m, inp, out: captured.append((inp[0], out[0] if isinstance(out, tuple) else out)))
                     for layer in model.model.layers]
            # --batch windows per call (1 = one window at a time, as ShortGPT's reference code does).
            n_layers = len(model.model.layers)
            sums = [0.0] * n_layers
            for start in range(0, ids.shape[0], args.batch):
                captured.clear()
                model.model(input_ids=ids[start:start + args.batch])
                for i, (x_in, x_out) in enumerate(captured):
                    sums[i] += torch.nn.functional.cosine_similarity(x_in.float(), x_out.float(), dim=-1).sum().item()
            bi = [1.0 - s / n_tokens for s in sums]
            for h in hooks:
                h.remove()
            result["bi"] = bi
        else:
            total = 0.0
            for start in range(0, ids.shape[0], args.batch):
                chunk = ids[start:start + args.batch]
                total += model(input_ids=chunk, labels=chunk).loss.item() * chunk.shape[0]
            result["nll"] = total / ids.shape[0]  # every window scores the same number of tokens
        seconds = time.perf_counter() - t0
    result["seconds"] = seconds
    result["tokens_per_second"] = n_tokens / seconds
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""PyTorch + transformers peer for `npm run bench`: the forward pass users actually run.

Loads a Hugging Face directory with transformers (fp32 or bf16; Llama, and the families of the "families"
section: Mamba, RWKV-4, Gemma 2, Phi-3 through AutoModelForCausalLM), runs the same token
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
from transformers import AutoModelForCausalLM


def decoder_blocks(model):
    """The residual blocks, in order: model.layers (Llama, Gemma 2, Phi-3), backbone.layers (Mamba), rwkv.blocks (RWKV)."""
    body = model.base_model
    return body.blocks if hasattr(body, "blocks") else body.layers


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
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype)
    model.eval()
    load_seconds = time.perf_counter() - t0
    windows = json.load(open(args.tokens))["windows"]
    ids = torch.tensor(windows, dtype=torch.long)
    n_tokens = ids.numel()

    result = {"peer": "transformers+torch", "torch": torch.__version__, "dtype": args.dtype, "task": args.task,
              "threads": args.threads, "batch": args.batch, "model_type": model.config.model_type, "attention": getattr(model.config, "_attn_implementation", None), "tokens": n_tokens, "load_seconds": load_seconds}
    with torch.inference_mode():
        t0 = time.perf_counter()
        if args.task == "score":
            # Capture the residual stream entering and leaving each decoder layer (before the final norm).
            captured = []
            blocks = decoder_blocks(model)
            hooks = [layer.register_forward_hook(lambda m, inp, out: captured.append([inp[0], out[0] if isinstance(out, tuple) else out]))
                     for layer in blocks]
            pre_ln = getattr(blocks[0], "pre_ln", None)
            if pre_ln is not None:
                # RWKV: block 0 applies pre_ln to its input; the stream entering it (as shortgpt measures) is after pre_ln.
                hooks.append(pre_ln.register_forward_hook(lambda m, inp, out: pre_ln_out.append(out)))
            pre_ln_out = []
            # --batch windows per call (1 = one window at a time, as ShortGPT's reference code does).
            n_layers = len(blocks)
            sums = [0.0] * n_layers
            for start in range(0, ids.shape[0], args.batch):
                captured.clear()
                pre_ln_out.clear()
                model.base_model(input_ids=ids[start:start + args.batch])
                if pre_ln_out:
                    captured[0][0] = pre_ln_out[0]
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

"""GPU peer for the device check: Hugging Face transformers + PyTorch run the way practitioners run them.

Builds a LlamaForCausalLM with random weights (init std 0.02, fixed seed) directly on the device in the
requested dtype, then times Block Influence scoring (one forward of the model body with
output_hidden_states=True) and perplexity (model(ids, labels=ids).loss) over seeded random token windows.
Also measures the card's bf16 GEMM peak once so results can be read as a fraction of it.

Usage: python3 bench/gpu/peer_cuda.py --shape tinyllama --windows 8 --seq-len 512 --tasks score,ppl \
           --device cuda --dtype bf16 --repeats 3 --out peer.json
Writes one JSON object to --out and prints it on stdout (or a short summary with --print summary).
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

# (hidden, intermediate, layers, heads, kv heads, vocab, rope theta): the published shapes of each model.
SHAPES = {
    "tinyllama": (2048, 5632, 22, 32, 4, 32000, 10000.0),
    "llama2-7b": (4096, 11008, 32, 32, 32, 32000, 10000.0),
    "llama3-8b": (4096, 14336, 32, 32, 8, 128256, 500000.0),
    # Small enough for a CPU test of this script's logic; GQA kept so the kv-head path is exercised.
    "tiny": (64, 160, 4, 4, 2, 256, 10000.0),
}
SEED = 1234


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_config(shape: str, seq_len: int) -> LlamaConfig:
    hidden, inter, n_layers, n_heads, n_kv, vocab, theta = SHAPES[shape]
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=n_layers,
        num_attention_heads=n_heads, num_key_value_heads=n_kv, vocab_size=vocab,
        max_position_embeddings=max(seq_len, 4096), initializer_range=0.02, rms_norm_eps=1e-5,
        tie_word_embeddings=False, use_cache=False,
        # transformers 5 keeps rope_theta inside rope_parameters; effective_theta() checks it took.
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        attn_implementation="sdpa",
    )
    return config


def effective_theta(config: LlamaConfig) -> float | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return None if theta is None else float(theta)


def build_model(config: LlamaConfig, device: str, dtype: torch.dtype) -> LlamaForCausalLM:
    # Allocating under the device context and default dtype creates and initialises the weights on the
    # GPU in bf16 directly: no fp32 copy on the host, no transfer (an 8B model would take minutes on CPU).
    torch.manual_seed(SEED)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    model.to(device=device, dtype=dtype)  # no-op when the context took; a guard when it did not
    model.eval()
    return model


def score(model: LlamaForCausalLM, ids: torch.Tensor, batch: int) -> dict:
    """Block Influence per layer: 1 - mean over tokens of cos(x_l, x_{l+1}), cos computed in fp32 on the device."""
    layers = model.model.layers
    n_layers = len(layers)
    captured: dict = {}

    def hook(_module, args, kwargs, output):
        captured["in"] = args[0] if args else kwargs["hidden_states"]
        captured["out"] = output[0] if isinstance(output, tuple) else output

    # transformers' last hidden_states entry is the final norm's output, not the last layer's, so the
    # last layer's own output (the residual stream BI compares against) is taken with a forward hook.
    handle = layers[n_layers - 1].register_forward_hook(hook, with_kwargs=True)
    sums = torch.zeros(n_layers, dtype=torch.float64, device=ids.device)
    check = 0.0
    try:
        for start in range(0, ids.shape[0], batch):
            hs = model.model(input_ids=ids[start:start + batch], output_hidden_states=True).hidden_states
            if len(hs) != n_layers + 1:
                raise RuntimeError(f"expected {n_layers + 1} hidden states, got {len(hs)}")
            for layer in range(n_layers):
                x_in = hs[layer]
                x_out = hs[layer + 1] if layer < n_layers - 1 else captured["out"]
                sums[layer] += F.cosine_similarity(x_in.float(), x_out.float(), dim=-1).sum(dtype=torch.float64)
            # hidden_states[n-1] must be what entered the last layer, else the indexing above is off by one.
            check = max(check, (hs[n_layers - 1] - captured["in"]).abs().max().item())
    finally:
        handle.remove()
    n_tokens = ids.numel()
    return {"bi": (1.0 - sums / n_tokens).tolist(), "hidden_states_check": check}


def ppl(model: LlamaForCausalLM, ids: torch.Tensor, batch: int) -> dict:
    total = torch.zeros((), dtype=torch.float64, device=ids.device)
    for start in range(0, ids.shape[0], batch):
        chunk = ids[start:start + batch]
        # .loss is the mean over this chunk's predicted tokens; every window predicts seq_len - 1 of them.
        total += model(input_ids=chunk, labels=chunk).loss.double() * chunk.shape[0]
    nll = (total / ids.shape[0]).item()
    return {"nll": nll, "ppl": math.exp(nll) if nll < 700 else float("inf")}


def is_oom(err: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(err, oom)) or "out of memory" in str(err).lower()


def run_task(name, fn, model, ids, device, repeats) -> dict:
    batch = ids.shape[0]
    # The warm-up also finds the batch that fits: all windows, else halves, down to one window.
    while True:
        try:
            sync(device)
            t0 = time.perf_counter()
            fn(model, ids, batch)
            sync(device)
            warm_seconds = time.perf_counter() - t0
            break
        except Exception as err:  # noqa: BLE001 - only OOM is retried, anything else re-raised
            if not is_oom(err) or batch == 1:
                raise
            if device == "cuda":
                torch.cuda.empty_cache()
            batch = (batch + 1) // 2
            print(f"[peer] {name}: out of memory, retrying with batch {batch}", file=sys.stderr)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    result: dict = {}
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        result = fn(model, ids, batch)
        sync(device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    out = {"task": name, "batch": batch, "warmup_seconds": warm_seconds, "seconds": median, "times": times,
           "tokens_per_second": ids.numel() / median}
    if device == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    out.update(result)
    return out


def gemm_peak(device: str) -> dict | None:
    if device != "cuda":
        return None
    n = 8192
    gen = torch.Generator(device=device).manual_seed(SEED)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    for _ in range(3):
        torch.matmul(a, b)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(10):
        torch.matmul(a, b)
    sync(device)
    seconds = (time.perf_counter() - t0) / 10
    del a, b
    torch.cuda.empty_cache()
    return {"n": n, "seconds": seconds, "tflops": 2 * n ** 3 / seconds / 1e12}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--tasks", default="score,ppl")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", required=True)
    ap.add_argument("--print", choices=["json", "summary"], default="json",
                    help="what goes to stdout: the JSON written to --out, or one line per task (keeps device logs short)")
    args = ap.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    for task in tasks:
        if task not in ("score", "ppl"):
            ap.error(f"unknown task {task!r} (score, ppl)")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    result: dict = {
        "peer": "transformers+torch", "torch": torch.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
        "shape": args.shape, "windows": args.windows, "seq_len": args.seq_len, "dtype": args.dtype,
        "repeats": args.repeats, "seed": SEED,
    }
    # Matmuls in fp32 stay fp32 (no TF32) so an fp32 run is a true fp32 reference.
    torch.backends.cuda.matmul.allow_tf32 = False
    result["gemm_bf16"] = gemm_peak(args.device)

    config = make_config(args.shape, args.seq_len)
    t0 = time.perf_counter()
    model = build_model(config, args.device, dtype)
    sync(args.device)
    result["build_seconds"] = time.perf_counter() - t0
    result["attention"] = model.config._attn_implementation
    result["rope_theta"] = effective_theta(model.config)
    expected_theta = SHAPES[args.shape][6]
    if result["rope_theta"] != expected_theta:
        raise SystemExit(f"rope theta is {result['rope_theta']}, expected {expected_theta}")
    first = next(model.parameters())
    result["param_dtype"] = str(first.dtype)
    result["param_device"] = str(first.device)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    result["layer_parameters"] = sum(p.numel() for p in model.model.layers.parameters())

    gen = torch.Generator(device="cpu").manual_seed(SEED)
    ids = torch.randint(0, config.vocab_size, (args.windows, args.seq_len), generator=gen).to(args.device)

    result["tasks"] = {}
    with torch.inference_mode():
        for task in tasks:
            fn = score if task == "score" else ppl
            result["tasks"][task] = run_task(task, fn, model, ids, args.device, args.repeats)
    del model
    if args.device == "cuda":
        torch.cuda.empty_cache()

    text = json.dumps(result, indent=1)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    if args.print == "json":
        print(text)
        return
    gemm = result["gemm_bf16"]
    print(f"{args.shape} {args.windows}x{args.seq_len} on {result['gpu'] or 'cpu'}: build {result['build_seconds']:.1f} s"
          + (f", bf16 GEMM {gemm['tflops']:.0f} TFLOP/s" if gemm else ""))
    for name, t in result["tasks"].items():
        if t.get("hidden_states_check", 0.0) != 0.0:
            print(f"  WARNING: hidden_states[n-1] differs from the last layer's input by {t['hidden_states_check']}: BI indexing is off")
        value = f"nll {t['nll']:.4f}" if "nll" in t else f"bi[0..2] {[round(x, 4) for x in t['bi'][:3]]}"
        memory = f", peak {t['peak_memory_bytes'] / 2**30:.1f} GiB" if "peak_memory_bytes" in t else ""
        print(f"  {name}: {t['tokens_per_second']:.0f} tok/s (median {t['seconds'] * 1e3:.1f} ms, batch {t['batch']}{memory}), {value}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Golden values for Hugging Face Llama directories, computed by transformers + torch (CPU).

Independent of the TypeScript code: the weights are read by the `safetensors` library and run
by `AutoModelForCausalLM` (LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GemmaForCausalLM,
GPT2LMHeadModel; eager attention, float32). For each case it records the logits at every
position and the residual stream entering each layer; --compact cases (and pruned ones) record
the final normed hidden state at every position and the last position's logits instead of every
position's logits (the classifier is one matmul, checked in full on the other cases), which
keeps the golden file small.

Hidden states: transformers' `output_hidden_states=True` returns L+1 tensors; element i < L
is the residual stream entering layer i (element 0 is the embedding), but element L has the
final RMSNorm applied. We store
  residual[i], i = 0..L   the raw residual stream entering layer i, and leaving the last layer
                          for i = L (captured by a pre-hook on the final norm, so never normed)
  final_normed            transformers' hidden_states[L] (= model.norm(residual[L]))
The final norm is model.model.norm, or for GPT-2 model.transformer.ln_f (a LayerNorm; GPT-2's
hidden_states[L] is likewise ln_f(residual[L]), and residual[0] is wte + wpe).
(residual[i] is hidden_states[i] for i < L; the script asserts that hidden_states[L] equals
model.norm(residual[L]) exactly). With --f64 a case also records the
last position's logits from the model loaded in float64 (logits_f64_last, full precision).

Usage (see make_hf_golden.sh):
  hf_llama_oracle.py --ids 1,2,3 --case NAME DIR [--case NAME DIR ...] [--hidden NAME] [--f64 NAME]
                     [--compact NAME] [--last-only NAME] [--pruned NAME DIR FROM_CASE_DIR LAYERS] --out golden.json
"""

import argparse
import base64
import hashlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weight_hashes(directory):
    return {f: sha256(os.path.join(directory, f)) for f in sorted(os.listdir(directory)) if f.endswith(".safetensors")}


def load(directory, dtype=torch.float32):
    model, info = AutoModelForCausalLM.from_pretrained(
        directory, dtype=dtype, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"{directory}: transformers did not load the checkpoint cleanly: {problems}")
    model.eval()
    return model


def floats(t):
    # Exact float32 values, little-endian, base64: {"f32": "..."} (a third of the size of the
    # numbers written out in decimal); the test decodes them when it reads the file.
    data = t.detach().reshape(-1).to(torch.float32).numpy().astype("<f4").tobytes()
    return {"f32": base64.b64encode(data).decode("ascii")}


def floats64(t):
    data = t.detach().reshape(-1).to(torch.float64).numpy().astype("<f8").tobytes()
    return {"f64": base64.b64encode(data).decode("ascii")}


def final_norm(model):
    # GPT2LMHeadModel keeps its blocks under model.transformer (h, ln_f); the others under model.model.
    if hasattr(model, "transformer"):
        return model.transformer.ln_f
    return model.model.norm


def run(model, ids):
    captured = {}

    def before_norm(_module, args):
        captured["residual"] = args[0].detach().clone()

    norm = final_norm(model)
    handle = norm.register_forward_pre_hook(before_norm)
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hidden = out.hidden_states
    n_layers = model.config.num_hidden_layers
    assert len(hidden) == n_layers + 1
    normed = norm(captured["residual"])
    assert torch.equal(normed, hidden[n_layers]), "hidden_states[L] is expected to be the normed output"
    residual = [hidden[i][0] for i in range(n_layers)] + [captured["residual"][0]]
    return out.logits[0], residual, hidden[n_layers][0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", required=True, help="comma-separated token ids")
    p.add_argument("--case", nargs=2, action="append", default=[], metavar=("NAME", "DIR"))
    p.add_argument("--hidden", action="append", default=[], metavar="NAME", help="cases that also record hidden states")
    p.add_argument("--f64", action="append", default=[], metavar="NAME",
                   help="cases that also record the last position's logits with the model run in float64")
    p.add_argument("--compact", action="append", default=[], metavar="NAME",
                   help="cases that record final_normed (every position) and logits_last instead of every position's logits")
    p.add_argument("--last-only", action="append", default=[], metavar="NAME",
                   help="cases that record only the last position's logits (logits_last), to keep the golden small")
    p.add_argument("--pruned", nargs=4, action="append", default=[], metavar=("NAME", "DIR", "FROM_DIR", "LAYERS"),
                   help="a directory pruned by shortgpt, checked against FROM_DIR with LAYERS deleted in torch")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.manual_seed(0)
    ids = [int(s) for s in args.ids.split(",")]

    golden = {
        "generator": "test/oracle/hf_llama_oracle.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "ids": ids,
        "hidden_states": "residual[i] enters layer i (i < L); residual[L] leaves the last layer, before the final norm; "
                         "final_normed = model.norm(residual[L]) = transformers hidden_states[L]. Each is (T, hidden) row-major.",
        "cases": [],
        "pruned": [],
    }
    for name, directory in args.case:
        model = load(directory)
        logits, residual, final_normed = run(model, ids)
        case = {
            "name": name,
            "config": json.load(open(os.path.join(directory, "config.json"))),
            "weight_sha256": weight_hashes(directory),
        }
        if name in args.last_only or name in args.compact:
            case["logits_last"] = floats(logits[-1])
        else:
            case["logits"] = floats(logits)
        if name in args.hidden:
            case["residual"] = [floats(r) for r in residual]
        if name in args.hidden or name in args.compact:
            case["final_normed"] = floats(final_normed)
        if name in args.f64:
            # transformers keeps RoPE's inverse frequencies and angles in float32 even here.
            logits64, _, _ = run(load(directory, torch.float64), ids)
            case["logits_f64_last"] = floats64(logits64[-1])
        golden["cases"].append(case)
        print(f"{name}: logits {tuple(logits.shape)}, |logits| max {logits.abs().max().item():.4g}", file=sys.stderr)

    for name, directory, from_dir, layers in args.pruned:
        removed = sorted(int(s) for s in layers.split(","))
        pruned = load(directory)
        logits, _, final_normed = run(pruned, ids)
        # The same removal done in torch on the original model.
        original = load(from_dir)
        original.model.layers = torch.nn.ModuleList(
            [layer for i, layer in enumerate(original.model.layers) if i not in removed]
        )
        for i, layer in enumerate(original.model.layers):
            layer.self_attn.layer_idx = i
        original.config.num_hidden_layers = len(original.model.layers)
        reference, _, _ = run(original, ids)
        diff = (logits - reference).abs().max().item()
        if diff != 0.0:
            sys.exit(f"{name}: the pruned directory differs from the original with layers {removed} deleted (max {diff})")
        golden["pruned"].append({
            "name": name,
            "removed": removed,
            "config": json.load(open(os.path.join(directory, "config.json"))),
            "weight_sha256": weight_hashes(directory),
            "max_abs_diff_vs_layers_deleted_in_torch": diff,
            "final_normed": floats(final_normed),
            "logits_last": floats(logits[-1]),
        })
        print(f"{name}: pruned directory loads in transformers; equal to layers {removed} deleted in torch", file=sys.stderr)

    with open(args.out, "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

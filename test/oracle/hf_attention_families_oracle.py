#!/usr/bin/env python3
"""Tiny Gemma 2, Gemma 3 (text) and Phi-3 checkpoints saved by transformers, and their golden values.

Builds each model from a small config with transformers' own classes (Gemma2ForCausalLM,
Gemma3ForCausalLM, Phi3ForCausalLM), fills every weight from a seeded torch generator (larger
than transformers' 0.02 init, so that the soft-caps, the sliding window and LongRoPE change the
result), writes it with `save_pretrained` (float32 safetensors) to test/fixtures/hf-attn/<name>/,
then reloads the directory strictly (no missing or unexpected keys) and records with eager
attention in float32:

  logits        every position's logits for `ids` (T, vocab)
  residual      the residual stream entering each decoder layer and leaving the last, read with
                forward hooks on transformers' decoder layers ((L + 1) x (T, hidden))
  greedy        20 tokens of greedy generation after `prompt` (use_cache=True, transformers' generate)
  deleted       for each layer list in DELETE: the logits with those decoder layers removed from
                model.model.layers (each kept layer keeps its own attention type and RoPE)

With --pruned NAME DIR LAYERS (a directory written by shortgpt's removeHfLayers) it loads DIR
strictly and checks its logits equal the original's with LAYERS deleted (max abs diff recorded).

Usage (see make_attention_golden.sh):
  hf_attention_families_oracle.py --fixtures test/fixtures/hf-attn --out test/oracle/golden/hf_attention_families.json
"""

import argparse
import base64
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, Gemma2Config, Gemma2ForCausalLM, Phi3Config, Phi3ForCausalLM
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

IDS = [2, 37, 81, 11, 50, 93, 5, 3, 77, 28, 56, 31, 42, 7, 80, 19, 65, 44, 12, 90, 33, 8, 61, 70]
PROMPT = [2, 37, 81, 11]
DELETE = [[1], [0, 2]]

COMMON = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=8, max_position_embeddings=128, bos_token_id=2, eos_token_id=1, pad_token_id=0)


def configs():
    return {
        # Soft-caps small enough to bend the scores and logits; a window of 5 < 24 tokens.
        "gemma2": Gemma2Config(**COMMON, query_pre_attn_scalar=6, sliding_window=5, attn_logit_softcapping=2.0,
                               final_logit_softcapping=3.0, rms_norm_eps=1e-6),
        # Gemma 3's default pattern (5 local : 1 global) would make all 4 layers local: two of each.
        "gemma3": Gemma3TextConfig(**COMMON, query_pre_attn_scalar=6, sliding_window=5, rms_norm_eps=1e-6,
                                   layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                                   rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                    "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}}),
        # LongRoPE as Phi-3-mini-128k spells it (rope_scaling type longrope); 24 tokens stay within the
        # original 32 positions, so the short factors apply.
        "phi3": Phi3Config(**{k: v for k, v in COMMON.items() if k != "head_dim"}, original_max_position_embeddings=32, rms_norm_eps=1e-5,
                           tie_word_embeddings=False,
                           rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 2.1, 3.7], "long_factor": [1.5, 2.5, 4.0, 8.0]}),
    }


MODEL_CLASSES = {"gemma2": Gemma2ForCausalLM, "gemma3": Gemma3ForCausalLM, "phi3": Phi3ForCausalLM}


def floats(t):
    data = t.detach().reshape(-1).to(torch.float32).numpy().astype("<f4").tobytes()
    return {"f32": base64.b64encode(data).decode("ascii")}


def build(name, seed):
    config = configs()[name]
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = MODEL_CLASSES[name](config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in sorted(model.named_parameters()):
            if p.dim() == 1:  # norm weights (Gemma stores w and scales by 1 + w)
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2 + (0.0 if name.startswith("gemma") else 1.0))
            elif "embed" in pname or "lm_head" in pname:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def load(directory):
    model, info = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        sys.exit(f"{directory}: transformers did not load the checkpoint cleanly: {problems}")
    return model.eval()


def run(model, ids):
    """Logits and the residual stream around each decoder layer, read with forward hooks."""
    layers = model.model.layers
    inputs, outputs = {}, {}

    def pre(i):
        def hook(_module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            inputs[i] = x.detach().clone()
        return hook

    def post(i):
        def hook(_module, _args, out):
            outputs[i] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(pre(i), with_kwargs=True))
        handles.append(layer.register_forward_hook(post(i)))
    try:
        with torch.no_grad():
            logits = model(torch.tensor([ids]), use_cache=False).logits[0]
    finally:
        for h in handles:
            h.remove()
    n = len(layers)
    for i in range(n - 1):
        assert torch.equal(outputs[i], inputs[i + 1])
    residual = [inputs[i][0] for i in range(n)] + [outputs[n - 1][0]]
    return logits, residual


def deleted_logits(model, ids, removed):
    # transformers picks each layer's mask (and Gemma 3's RoPE) by config.layer_types[i], i the
    # position in model.layers: the kept layers keep their own types.
    config = model.config
    original = (model.model.layers, config.num_hidden_layers, getattr(config, "layer_types", None))
    model.model.layers = torch.nn.ModuleList([layer for i, layer in enumerate(original[0]) if i not in removed])
    config.num_hidden_layers = len(model.model.layers)
    if original[2] is not None:
        config.layer_types = [t for i, t in enumerate(original[2]) if i not in removed]
    try:
        with torch.no_grad():
            return model(torch.tensor([ids]), use_cache=False).logits[0]
    finally:
        model.model.layers, config.num_hidden_layers, config.layer_types = original


def greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True)
    return out[0, len(prompt):].tolist()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", required=True, help="folder for the <name>/ checkpoints")
    p.add_argument("--pruned", nargs=3, action="append", default=[], metavar=("NAME", "DIR", "LAYERS"))
    p.add_argument("--out", required=True)
    args = p.parse_args()
    golden = {
        "generator": "test/oracle/hf_attention_families_oracle.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "ids": IDS,
        "prompt": PROMPT,
        "residual": "residual[i] enters decoder layer i (i < L); residual[L] leaves the last layer, before the final norm; each (T, hidden)",
        "cases": [],
        "pruned": [],
    }
    for seed, name in enumerate(MODEL_CLASSES):
        directory = os.path.join(args.fixtures, name)
        build(name, seed + 1).save_pretrained(directory, safe_serialization=True)
        model = load(directory)  # the saved files, not the in-memory model
        logits, residual = run(model, IDS)
        golden["cases"].append({
            "name": name,
            "config": json.load(open(os.path.join(directory, "config.json"))),
            "logits": floats(logits),
            "residual": [floats(r) for r in residual],
            "greedy": greedy(model, PROMPT, 20),
            "deleted": [{"removed": d, "logits": floats(deleted_logits(model, IDS, d))} for d in DELETE],
        })
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, logits absmax {logits.abs().max():.3f}", file=sys.stderr)
    for name, directory, layers in args.pruned:
        removed = [int(s) for s in layers.split(",")]
        original = load(os.path.join(args.fixtures, name))
        want = deleted_logits(original, IDS, removed)
        got = load(directory)(torch.tensor([IDS]), use_cache=False).logits[0].detach()
        diff = (got - want).abs().max().item()
        if diff > 1e-5 * max(1.0, want.abs().max().item()):
            sys.exit(f"{directory}: transformers' logits of the pruned checkpoint differ from {name} with {removed} deleted by {diff}")
        golden["pruned"].append({"name": name, "removed": removed, "config": json.load(open(os.path.join(directory, "config.json"))), "max_abs_diff": diff})
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Tiny Gemma 2, Gemma 3 (text) and Phi-3 checkpoints that llama.cpp's GGUF architectures can hold, and their golden logits.

The hf-attn fixtures (hf_attention_families_oracle.py) exercise transformers features that llama.cpp's
gemma2/gemma3/phi3 graphs do not have: a query_pre_attn_scalar other than head_dim (llama.cpp scales by
1/sqrt(head_dim) except for the 27B layer counts), Gemma 3 layer types off llama.cpp's positional
pattern (every 6th layer global), LongRoPE past the original context, and a 96-token vocabulary with
no tokenizer. These checkpoints stay inside what llama.cpp runs: query_pre_attn_scalar = head_dim,
Gemma 3 with 6 layers in the default pattern (5 local, 1 global), Phi-3 with an original context of
512 (llama.cpp picks the short factors for contexts up to it), and a 512-token vocabulary so that
stories260K's tokenizer (tok512.bin) stands in for theirs. Everything else follows
hf_attention_families_oracle.py: transformers' own classes, seeded weights, save_pretrained
(float32 safetensors) to <fixtures>/<name>/, strict reload, eager float32 logits for `ids`.

Usage (see make_gguf_attention_golden.sh):
  gguf_attention_fixtures.py --fixtures test/fixtures/gguf-attn --out test/oracle/golden/gguf_attention_families.json
"""

import argparse
import json
import os
import sys

import torch
import transformers
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, Phi3Config, Phi3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_attention_families_oracle import floats, load, run  # noqa: E402

IDS = [1, 37, 481, 11, 250, 93, 5, 300, 77, 28, 456, 31, 42, 7, 380, 19, 65, 44, 12, 190, 33, 8, 261, 70]

COMMON = dict(vocab_size=512, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)


def configs():
    return {
        "gemma2": Gemma2Config(**COMMON, num_hidden_layers=4, head_dim=8, query_pre_attn_scalar=8, sliding_window=5,
                               attn_logit_softcapping=2.0, final_logit_softcapping=3.0, rms_norm_eps=1e-6),
        "gemma3": Gemma3TextConfig(**COMMON, num_hidden_layers=6, head_dim=8, query_pre_attn_scalar=8, sliding_window=5, rms_norm_eps=1e-6,
                                   layer_types=["sliding_attention"] * 5 + ["full_attention"],
                                   rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                    "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}}),
        "phi3": Phi3Config(**COMMON, num_hidden_layers=4, original_max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False,
                           sliding_window=None,
                           rope_scaling={"type": "longrope", "short_factor": [1.0, 1.3, 2.1, 3.7], "long_factor": [1.5, 2.5, 4.0, 8.0]}),
    }


MODEL_CLASSES = {"gemma2": Gemma2ForCausalLM, "gemma3": Gemma3ForCausalLM, "phi3": Phi3ForCausalLM}
# llama.cpp sets Phi-3's token attributes when general.name (convert: the folder's name) contains
# "phi3" or "phi-3", looking up "<|endoftext|>", which stories260K's vocabulary lacks: the folder avoids both.
FOLDERS = {"gemma2": "gemma2", "gemma3": "gemma3", "phi3": "phi_3"}


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


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixtures", required=True, help="folder for the <name>/ checkpoints")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    golden = {
        "generator": "test/oracle/gguf_attention_fixtures.py",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "ids": IDS,
        "cases": [],
    }
    for seed, name in enumerate(MODEL_CLASSES):
        directory = os.path.join(args.fixtures, FOLDERS[name])
        build(name, seed + 11).save_pretrained(directory, safe_serialization=True)
        os.remove(os.path.join(directory, "generation_config.json"))
        model = load(directory)  # the saved files, not the in-memory model
        logits, _ = run(model, IDS)
        golden["cases"].append({"name": name, "folder": FOLDERS[name], "config": json.load(open(os.path.join(directory, "config.json"))), "logits": floats(logits)})
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters, logits absmax {logits.abs().max():.3f}", file=sys.stderr)
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()

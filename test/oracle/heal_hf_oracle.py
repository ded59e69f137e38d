#!/usr/bin/env python3
"""Golden logits of healed Hugging Face directories (`prune --heal linear`), computed by
transformers + torch (CPU, float32, eager attention): the healed checkpoint must load cleanly,
unchanged in architecture, and the test checks that shortgpt computes the same logits on it.
Records the weight files' sha256 so the test knows it rebuilt the same directory.

Usage (see make_heal_golden.sh): heal_hf_oracle.py --ids 1,2,3 --case NAME DIR [...] --out golden.json
"""
import argparse
import hashlib
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

LAST_POSITIONS = 4  # logits of the last positions only, to keep the golden small


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", required=True)
    ap.add_argument("--case", nargs=2, action="append", metavar=("NAME", "DIR"), required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ids = [int(x) for x in args.ids.split(",")]
    cases = {}
    for name, directory in args.case:
        model, info = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
        problems = {k: v for k, v in info.items() if v}
        if problems:
            sys.exit(f"{directory}: transformers did not load the checkpoint cleanly: {problems}")
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        cases[name] = {
            "layers": model.config.num_hidden_layers,
            "weights": {f: sha256(os.path.join(directory, f)) for f in sorted(os.listdir(directory)) if f.endswith(".safetensors")},
            "logits_last": logits[-LAST_POSITIONS:].tolist(),
        }
    out = {"generator": "test/oracle/heal_hf_oracle.py", "transformers": transformers.__version__, "torch": torch.__version__, "ids": ids, "last_positions": LAST_POSITIONS, "cases": cases}
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()

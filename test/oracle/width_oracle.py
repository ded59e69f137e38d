#!/usr/bin/env python3
"""Golden logits for width-pruned Hugging Face directories, computed by transformers + torch (CPU).

Independent of the TypeScript code: each directory written by shortgpt (FFN channels removed,
or SliceGPT's sliced hidden size with an explicit head_dim) is loaded by AutoModelForCausalLM
in float64 (eager attention), and the logits at a few positions of one token sequence are
recorded, with the sizes transformers read from config.json and its parameter count.

Usage (see make_width_golden.sh):
  width_oracle.py --ids 1,2,3 --positions 0,8,16 --case NAME DIR [--case NAME DIR ...] --out golden.json
"""

import argparse
import json

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", required=True)
    ap.add_argument("--positions", required=True)
    ap.add_argument("--case", nargs=2, action="append", metavar=("NAME", "DIR"), required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ids = [int(x) for x in args.ids.split(",")]
    positions = [int(x) for x in args.positions.split(",")]
    cases = {}
    for name, path in args.case:
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float64, attn_implementation="eager")
        model.eval()
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        cfg = model.config
        cases[name] = {
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "head_dim": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "tie_word_embeddings": bool(cfg.tie_word_embeddings),
            "parameters": sum(p.numel() for p in model.parameters()),
            "logits": {str(p): [float("%.9g" % v) for v in logits[p].tolist()] for p in positions},
        }
    golden = {
        "generator": "test/oracle/width_oracle.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "ids": ids,
        "positions": positions,
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()

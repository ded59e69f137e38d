"""Loads directories that shortgpt prune wrote with transformers and reports, for each, missing and unexpected keys and
the largest logit difference against the original model with the same blocks deleted; exits 1 if any has a missing or
unexpected key or differs by more than 1e-5. test/mamba2.test.ts runs it on pruned Mamba-2 directories; for the other
families it is a manual check:
  .venv/bin/python test/oracle/check_pruned_hf.py ORIGINAL_DIR PRUNED_DIR 1[,2...] [PRUNED_DIR 1[,2...] ...]"""

import sys

import torch
from transformers import AutoModelForCausalLM

original_dir, pairs = sys.argv[1], sys.argv[2:]
ids = torch.tensor([[1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19, 6]])
failed = False
for pruned_dir, removed_list in zip(pairs[0::2], pairs[1::2]):
    removed = {int(i) for i in removed_list.split(",")}
    pruned, info = AutoModelForCausalLM.from_pretrained(pruned_dir, output_loading_info=True)
    original = AutoModelForCausalLM.from_pretrained(original_dir)
    blocks = original.backbone.layers if hasattr(original, "backbone") else original.rwkv.blocks
    kept = torch.nn.ModuleList([b for i, b in enumerate(blocks) if i not in removed])
    if hasattr(original, "backbone"):
        original.backbone.layers = kept
    else:
        if kept[0].layer_id != 0:  # RWKV's pre_ln (ln0) stays on the first block
            kept[0].pre_ln, kept[0].layer_id = blocks[0].pre_ln, 0
        original.rwkv.blocks = kept
    with torch.no_grad():
        diff = (pruned(ids).logits - original(ids).logits).abs().max().item()
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    print({"pruned": pruned_dir, "missing": missing, "unexpected": unexpected, "max_logit_diff": diff})
    failed = failed or bool(missing or unexpected) or diff > 1e-5
sys.exit(1 if failed else 0)

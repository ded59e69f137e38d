"""Oracle for Mamba-2 (transformers' Mamba2ForCausalLM, slow torch path): builds tiny random-weight checkpoints, saves
them with save_pretrained into test/fixtures/<name>/ (committed) and writes test/oracle/golden/<name>.json with the same
fields as hf_mamba_oracle.py (logits, hooked residual streams, Block Influence, pruned logits, 20 greedy tokens).
  mamba2_tiny:    n_groups 2 (B and C shared by pairs of heads), time_step_limit (0, 1) so the dt clamp bites, chunk
                  size 8 (the 17-token input spans three chunks of transformers' chunked scan), untied head.
  mamba2_tiny_g1: n_groups 1, the default time_step_limit (0, inf), tied head: what llama.cpp's mamba2 computes the same
                  way (it groups the gated norm by n_groups, transformers' slow path does not), for the GGUF tests.
Run: .venv/bin/python test/oracle/hf_mamba2_oracle.py (from the repo root)."""

import json
import os
import sys

import torch
import transformers
from transformers import Mamba2Config, Mamba2ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_mamba_oracle import IDS, PROMPT, REMOVED, ROOT, bi_from_streams, block_streams, f32  # noqa: E402


def perturb(model, seed):
    # Random weights on the scale of the real initialisation, so that every path (conv bias, D, dt bias, the gated
    # norm's weight) matters; dt_bias around 0 puts softplus(dt) near 0.7, across the clamp at 1 of mamba2_tiny.
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=g)
        if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
            p.copy_(1 + 0.2 * noise)
        elif name.endswith("bias"):
            p.copy_(0.5 * noise if name.endswith("dt_bias") else 0.1 * noise)
        elif name.endswith("A_log"):
            p.copy_(torch.log(torch.rand(p.shape, generator=g) * 4 + 0.5))
        elif name.endswith("embeddings.weight"):
            p.copy_(noise)
        elif name.endswith(".D"):
            p.copy_(0.5 * noise)
        else:
            fan_in = p.shape[-1] if p.dim() > 1 else 4
            p.copy_(noise / fan_in**0.5)


def make(name, n_groups, time_step_limit, tied, seed):
    config = Mamba2Config(vocab_size=512, hidden_size=16, expand=2, num_heads=4, head_dim=8, n_groups=n_groups,
                          state_size=4, num_hidden_layers=3, conv_kernel=4, chunk_size=8, use_conv_bias=True,
                          use_bias=False, layer_norm_epsilon=1e-5, time_step_limit=time_step_limit,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = Mamba2ForCausalLM(config).eval()
    perturb(model, seed)
    if tied:
        model.tie_weights()
    return name, model


def main():
    torch.set_grad_enabled(False)
    for name, model in [make("mamba2_tiny", 2, (0.0, 1.0), False, 2345), make("mamba2_tiny_g1", 1, (0.0, float("inf")), True, 3456)]:
        out_dir = os.path.join(ROOT, "test", "fixtures", name)
        model.save_pretrained(out_dir, safe_serialization=True)
        blocks = model.backbone.layers
        n = len(blocks)
        logits, streams = block_streams(model, blocks, IDS)
        residual = [streams[0][2]] + [t for kind, _, t in streams if kind == "out"]
        # Greedy by recomputing the whole sequence each step: the slow path's meaning, dt clamp included.
        seq = list(PROMPT)
        for _ in range(20):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        greedy = seq[len(PROMPT):]
        model.generation_config.eos_token_id = None
        cached = model.generate(torch.tensor([PROMPT]), max_new_tokens=20, do_sample=False)[0, len(PROMPT):].tolist()
        # transformers' one-token cached step skips time_step_limit, so generate can differ where the clamp bites.
        print(name, "generate equals recompute:", cached == greedy, file=sys.stderr)
        if model.config.time_step_limit[1] == float("inf"):
            assert cached == greedy, (cached, greedy)
        pruned = {}
        for removed in [REMOVED, 0]:
            model.backbone.layers = torch.nn.ModuleList([b for i, b in enumerate(blocks) if i != removed])
            pruned[str(removed)] = f32(model(torch.tensor([IDS])).logits[0])
            model.backbone.layers = blocks
        golden = {
            "transformers_version": transformers.__version__,
            "fixture": f"test/fixtures/{name}",
            "ids": IDS, "prompt": PROMPT, "greedy": greedy, "generate_equals_recompute": cached == greedy,
            "logits": f32(logits), "residual": [f32(r) for r in residual],
            "block_influence": bi_from_streams(streams, n),
            "pruned_logits": pruned,
        }
        path = os.path.join(ROOT, "test", "oracle", "golden", f"{name}.json")
        with open(path, "w") as f:
            json.dump(golden, f, indent=1, sort_keys=True)
        print(name, "greedy", greedy, "->", path, file=sys.stderr)


if __name__ == "__main__":
    main()

"""Oracle for the recurrent families: builds tiny random-weight transformers checkpoints (MambaForCausalLM), saves them
with save_pretrained into test/fixtures/<name>/ (a few tens of KB, committed), and writes test/oracle/golden/<name>.json:
the logits of every position, the residual stream entering and leaving every block (forward hooks on the blocks), Block
Influence from those streams, the logits with one block deleted, and a 20-token greedy continuation (model.generate,
which carries the recurrent state). Run: .venv/bin/python test/oracle/hf_mamba_oracle.py (from the repo root)."""

import base64
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import MambaConfig, MambaForCausalLM, RwkvConfig, RwkvForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
IDS = [1, 37, 40, 11, 25, 9, 50, 3, 7, 12, 26, 31, 42, 7, 48, 19, 6]
PROMPT = [1, 37, 40, 11]
REMOVED = 1


def f32(a):
    return {"f32": base64.b64encode(np.ascontiguousarray(np.asarray(a, dtype=np.float32)).tobytes()).decode()}


def perturb(model, seed):
    # Random weights everywhere, on the scale of the real initialisation, so every path (conv bias, D, dt bias) matters.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if name.endswith("norm.weight") or name.endswith("norm_f.weight") or (".ln" in name or "pre_ln" in name or "ln_out" in name) and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            elif name.endswith("time_mix_key") or name.endswith("time_mix_value") or name.endswith("time_mix_receptance"):
                p.copy_(torch.rand(p.shape, generator=g))
            elif name.endswith("time_decay") or name.endswith("time_first"):
                p.copy_(noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            elif name.endswith("A_log"):
                p.copy_(torch.log(torch.rand(p.shape, generator=g) * 4 + 0.5))
            elif name.endswith("embeddings.weight"):
                p.copy_(noise)
            elif name.endswith(".D"):
                p.copy_(0.5 * noise)
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else 4
                p.copy_(noise / fan_in**0.5)


def block_streams(model, blocks, ids):
    streams = []
    hooks = []
    for i, block in enumerate(blocks):
        hooks.append(block.register_forward_pre_hook(lambda m, args, i=i: streams.append(("in", i, args[0][0].clone()))))
        hooks.append(block.register_forward_hook(lambda m, args, out, i=i: streams.append(("out", i, (out[0] if isinstance(out, tuple) else out)[0].clone()))))
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    for h in hooks:
        h.remove()
    if hasattr(blocks[0], "pre_ln"):
        # RWKV: the residual stream entering block 0 is after its pre_ln (ln0), as in the official code.
        with torch.no_grad():
            streams[0] = ("in", 0, blocks[0].pre_ln(streams[0][2]))
    return logits, streams


def bi_from_streams(streams, n_layers):
    ins = {i: t for kind, i, t in streams if kind == "in"}
    outs = {i: t for kind, i, t in streams if kind == "out"}
    return [float(1 - torch.nn.functional.cosine_similarity(ins[i].double(), outs[i].double(), dim=-1).mean()) for i in range(n_layers)]


def mamba_case():
    # vocab 512: stories260K's tokenizer stands in when the tests convert it to GGUF for llama.cpp.
    config = MambaConfig(vocab_size=512, hidden_size=16, state_size=4, num_hidden_layers=3, conv_kernel=4, expand=2,
                         time_step_rank=4, use_conv_bias=True, use_bias=False, layer_norm_epsilon=1e-5,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = MambaForCausalLM(config).eval()
    perturb(model, 1234)
    return "mamba_tiny", model, model.backbone.layers, set_mamba_blocks


def set_mamba_blocks(model, blocks):
    model.backbone.layers = torch.nn.ModuleList(blocks)


def rwkv_case():
    # rescale_every 0: transformers' inference-time halving of the stream every N blocks is off, so the hooked streams
    # are the model's own (BI is scale-free either way; with 3 blocks and the default 6 it would not trigger).
    config = RwkvConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3, attention_hidden_size=16, intermediate_size=32,
                        context_length=64, rescale_every=0, layer_norm_epsilon=1e-5, bos_token_id=1, eos_token_id=2,
                        tie_word_embeddings=False)
    torch.manual_seed(0)
    model = RwkvForCausalLM(config).eval()
    perturb(model, 4321)
    return "rwkv4_tiny", model, model.rwkv.blocks, set_rwkv_blocks


def set_rwkv_blocks(model, blocks):
    # The first block applies pre_ln (ln0) to the embedding; a pruned checkpoint keeps it on its new first block.
    first = blocks[0]
    if first.layer_id != 0:
        first.pre_ln = model.rwkv.blocks[0].pre_ln
        first.layer_id = 0
    model.rwkv.blocks = torch.nn.ModuleList(blocks)


def main():
    torch.set_grad_enabled(False)
    for make in [mamba_case, rwkv_case]:
        name, model, blocks, set_blocks = make()
        out_dir = os.path.join(ROOT, "test", "fixtures", name)
        model.save_pretrained(out_dir, safe_serialization=True)
        n = len(blocks)
        logits, streams = block_streams(model, blocks, IDS)
        residual = [streams[0][2]] + [t for kind, _, t in streams if kind == "out"]
        # No stop token: 20 greedy tokens whatever they are (suppressing EOS instead would change the argmax).
        model.generation_config.eos_token_id = None
        gen = model.generate(torch.tensor([PROMPT]), max_new_tokens=20, do_sample=False)[0, len(PROMPT):].tolist()
        assert len(gen) == 20
        # Greedy again by recomputing the whole sequence each step: the cached (recurrent-state) path must agree.
        seq = list(PROMPT)
        for _ in range(20):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
        assert seq[len(PROMPT):] == gen, (seq, gen)
        pruned = {}
        for removed in [REMOVED, 0]:
            set_blocks(model, [b for i, b in enumerate(blocks) if i != removed])
            pruned[str(removed)] = f32(model(torch.tensor([IDS])).logits[0])
            set_blocks(model, list(blocks))
        golden = {
            "transformers_version": transformers.__version__,
            "fixture": f"test/fixtures/{name}",
            "ids": IDS, "prompt": PROMPT, "greedy": gen,
            "logits": f32(logits), "residual": [f32(r) for r in residual],
            "block_influence": bi_from_streams(streams, n),
            "pruned_logits": pruned,
        }
        path = os.path.join(ROOT, "test", "oracle", "golden", f"{name}.json")
        with open(path, "w") as f:
            json.dump(golden, f, indent=1, sort_keys=True)
        print(name, "greedy", gen, "->", path, file=sys.stderr)


if __name__ == "__main__":
    main()

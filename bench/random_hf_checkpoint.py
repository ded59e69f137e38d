"""Random-weight checkpoints of real model shapes for `npm run bench -- --only families`, saved by transformers' own
save_pretrained in bf16 (so shortgpt reads what transformers writes) and cached: a directory whose shape.json matches
is reused. The configs are the published ones (config.json of the named Hub repos, copied here: the benchmark runs
offline). The model is built on the meta device and filled with seeded values (fill_weights): transformers' own
initialisation took 3 CPU-minutes for the 430M RWKV alone on this machine, too slow for the 2-4B shapes.

Usage: python3 bench/random_hf_checkpoint.py --family mamba-1.4b|gemma-2-2b|phi-3-mini|rwkv-4-430m --out DIR
Prints one JSON object on stdout: {"dir": ..., "params": ..., "created": true|false}.
"""
import argparse
import json
import math
import os
import shutil
import time

import torch
import transformers

GENERATOR_VERSION = 2

# model class, config class, config fields (from the Hub repo named in the comment).
SHAPES = {
    # state-spaces/mamba-1.4b-hf
    "mamba-1.4b": ("MambaForCausalLM", "MambaConfig", {
        "hidden_size": 2048, "num_hidden_layers": 48, "state_size": 16, "expand": 2, "conv_kernel": 4, "intermediate_size": 4096,
        "time_step_rank": 128, "vocab_size": 50280, "layer_norm_epsilon": 1e-5, "use_bias": False, "use_conv_bias": True,
        "residual_in_fp32": True, "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
    }),
    # google/gemma-2-2b
    "gemma-2-2b": ("Gemma2ForCausalLM", "Gemma2Config", {
        "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
        "head_dim": 256, "vocab_size": 256000, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "query_pre_attn_scalar": 256, "sliding_window": 4096, "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
    }),
    # microsoft/Phi-3-mini-4k-instruct
    "phi-3-mini": ("Phi3ForCausalLM", "Phi3Config", {
        "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
        "vocab_size": 32064, "max_position_embeddings": 4096, "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "sliding_window": 2047, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000,
    }),
    # RWKV/rwkv-4-430m-pile
    "rwkv-4-430m": ("RwkvForCausalLM", "RwkvConfig", {
        "hidden_size": 1024, "num_hidden_layers": 24, "attention_hidden_size": 1024, "intermediate_size": 4096, "vocab_size": 50277,
        "context_length": 1024, "layer_norm_epsilon": 1e-5, "rescale_every": 6, "tie_word_embeddings": False,
        "bos_token_id": 0, "eos_token_id": 0,
    }),
}


def fill_weights(model, model_type: str, generator: torch.Generator) -> None:
    """Seeded values on the scale of a trained model: matrices N(0, 0.02), norms at their identity (Gemma's (1 + w) at
    zero), biases zero; the recurrent parameters where a stable scan needs them (Mamba: A = -(1..d_state), D = 1, dt in
    [1e-3, 0.1] through its bias; RWKV: time_decay across -5..3, token-shift mixes across 0..1)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            values = torch.empty(p.shape, dtype=torch.float32)
            if leaf == "A_log":
                values.copy_(torch.log(torch.arange(1, p.shape[1] + 1, dtype=torch.float32)).expand(p.shape))
            elif leaf == "D":
                values.fill_(1.0)
            elif name.endswith("dt_proj.bias"):
                dt = torch.exp(torch.rand(p.shape, generator=generator) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
                values.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) = dt
            elif leaf == "time_decay":
                values.copy_(torch.linspace(-5, 3, p.numel()).reshape(p.shape))
            elif leaf == "time_first":
                values.copy_(math.log(0.3) + 0.5 * (torch.rand(p.shape, generator=generator) - 0.5))
            elif leaf.startswith("time_mix"):
                values.copy_(torch.linspace(0, 1, p.numel()).reshape(p.shape))
            elif p.dim() == 1 and leaf == "weight":
                values.fill_(0.0 if model_type == "gemma2" else 1.0)
            elif p.dim() == 1:
                values.zero_()
            else:
                values.normal_(0.0, 0.02, generator=generator)
            p.copy_(values)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", required=True, choices=sorted(SHAPES))
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    model_class, config_class, fields = SHAPES[args.family]
    stamp = {"family": args.family, "fields": fields, "generator": GENERATOR_VERSION, "transformers": transformers.__version__}
    stamp_path = os.path.join(args.out, "shape.json")
    if os.path.exists(stamp_path) and json.load(open(stamp_path)) == stamp:
        print(json.dumps({"dir": args.out, "created": False}))
        return
    t0 = time.perf_counter()
    config = getattr(transformers, config_class)(**fields)
    with torch.device("meta"):
        model = getattr(transformers, model_class)(config)
    model = model.to(torch.bfloat16).to_empty(device="cpu")
    fill_weights(model, config.model_type, torch.Generator().manual_seed(0))
    if config.tie_word_embeddings:
        model.tie_weights()
    params = sum(p.numel() for p in model.parameters())
    # Written beside the target and renamed, so an interrupted run never leaves a half checkpoint that looks cached.
    tmp = args.out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size="2GB")
    json.dump(stamp, open(os.path.join(tmp, "shape.json"), "w"))
    shutil.rmtree(args.out, ignore_errors=True)
    os.rename(tmp, args.out)
    print(json.dumps({"dir": args.out, "params": params, "created": True, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()

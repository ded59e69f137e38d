"""Writes test/fixtures/rwkv6_tiny.gguf: a tiny random-weight RWKV-6 ("Finch") model in llama.cpp's
GGUF architecture `rwkv6`, with gguf-py's GGUFWriter (llama.cpp's own Python package).

Independent of shortgpt's TypeScript: the metadata keys, tensor names and ggml shapes are the ones
llama.cpp's converter (convert_hf_to_gguf.py, class Rwkv6Model) writes and its loader
(llama_model_rwkv6::load_arch_tensors) checks; llama.cpp itself (node-llama-cpp) is then the oracle
for what the file means (test/rwkv6.test.ts).

Sizes: 3 blocks, embedding 32 = 2 heads of 16, channel mixing 64, the ddlerp LoRA 8 wide per branch,
the decay LoRA 16, a 320-token SentencePiece-style vocabulary (llama.cpp's "llama" tokenizer type
needs <unk>, <s>, </s> and the 256 byte tokens). F32, seeded: rerunning writes the same bytes.

Run: .venv/bin/python test/oracle/rwkv6_gguf_fixture.py [--out PATH] [--rescale-every N] [--layers N]
"""

import argparse

import numpy as np
from gguf import GGUFWriter, TokenType

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="test/fixtures/rwkv6_tiny.gguf")
parser.add_argument("--rescale-every", type=int, default=0)
parser.add_argument("--layers", type=int, default=3)
parser.add_argument("--seed", type=int, default=6)
args = parser.parse_args()

DIM, HEAD_SIZE, FFN, MIX_EXTRA, DECAY_EXTRA, VOCAB = 32, 16, 64, 8, 16, 320
N_HEADS = DIM // HEAD_SIZE
EPS = 1e-5
rng = np.random.RandomState(args.seed)


def normal(*shape, scale=1.0):
    return (rng.standard_normal(size=shape) * scale).astype(np.float32)


def uniform(lo, hi, *shape):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


w = GGUFWriter(args.out, "rwkv6")
w.add_name("rwkv6-tiny-random")
w.add_context_length(1048576)  # as the converter: a recurrence has no context limit
w.add_embedding_length(DIM)
w.add_block_count(args.layers)
w.add_layer_norm_eps(EPS)
w.add_rescale_every_n_layers(args.rescale_every)
w.add_wkv_head_size(HEAD_SIZE)
w.add_time_mix_extra_dim(MIX_EXTRA)
w.add_time_decay_extra_dim(DECAY_EXTRA)
w.add_feed_forward_length(FFN)
w.add_head_count(0)  # "required by llama.cpp, unused" (the converter's comment)
w.add_file_type(0)  # all F32

# Vocabulary: <unk>, <s>, </s>, the byte tokens, then made-up pieces.
tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{b:02X}>".encode() for b in range(256)]
letters = "abcdefghijklmnopqrstuvwxyz"
extra = ["\u2581" + a for a in letters] + [a + b for a in "etaoin" for b in "etaoin"]
tokens += [p.encode() for p in extra[: VOCAB - len(tokens)]]
assert len(tokens) == VOCAB, len(tokens)
types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256 + [TokenType.NORMAL] * (VOCAB - 259)
w.add_tokenizer_model("llama")
w.add_token_list(tokens)
w.add_token_scores([0.0] * 259 + [-float(i) for i in range(VOCAB - 259)])
w.add_token_types(types)
w.add_bos_token_id(1)
w.add_eos_token_id(2)
w.add_unk_token_id(0)

# Tensors: numpy shapes are ggml's ne reversed (row-major), as GGUFWriter stores them.
w.add_tensor("token_embd.weight", normal(VOCAB, DIM))
w.add_tensor("token_embd_norm.weight", uniform(0.5, 1.5, DIM))
w.add_tensor("token_embd_norm.bias", normal(DIM, scale=0.1))
for i in range(args.layers):
    b = f"blk.{i}"
    w.add_tensor(f"{b}.attn_norm.weight", uniform(0.5, 1.5, DIM))
    w.add_tensor(f"{b}.attn_norm.bias", normal(DIM, scale=0.1))
    w.add_tensor(f"{b}.attn_norm_2.weight", uniform(0.5, 1.5, DIM))
    w.add_tensor(f"{b}.attn_norm_2.bias", normal(DIM, scale=0.1))
    w.add_tensor(f"{b}.time_mix_lerp_x.weight", uniform(0, 1, DIM))
    w.add_tensor(f"{b}.time_mix_w1.weight", normal(5 * MIX_EXTRA, DIM, scale=0.3))  # ne {DIM, 5*extra}
    w.add_tensor(f"{b}.time_mix_w2.weight", normal(5, DIM, MIX_EXTRA, scale=0.3))  # ne {extra, DIM, 5}
    w.add_tensor(f"{b}.time_mix_lerp_fused.weight", uniform(0, 1, 5, 1, 1, DIM))  # w, k, v, r, g
    w.add_tensor(f"{b}.time_mix_first.weight", normal(N_HEADS, HEAD_SIZE, scale=0.5))
    w.add_tensor(f"{b}.time_mix_decay.weight", uniform(-2, 1, DIM))
    w.add_tensor(f"{b}.time_mix_decay_w1.weight", normal(DECAY_EXTRA, DIM, scale=0.3))
    w.add_tensor(f"{b}.time_mix_decay_w2.weight", normal(DIM, DECAY_EXTRA, scale=0.3))
    for name in ("key", "value", "receptance", "gate"):
        w.add_tensor(f"{b}.time_mix_{name}.weight", normal(DIM, DIM, scale=DIM ** -0.5))
    w.add_tensor(f"{b}.time_mix_ln.weight", uniform(0.5, 1.5, DIM))
    w.add_tensor(f"{b}.time_mix_ln.bias", normal(DIM, scale=0.1))
    w.add_tensor(f"{b}.time_mix_output.weight", normal(DIM, DIM, scale=DIM ** -0.5))
    w.add_tensor(f"{b}.channel_mix_lerp_k.weight", uniform(0, 1, DIM))
    w.add_tensor(f"{b}.channel_mix_lerp_r.weight", uniform(0, 1, DIM))
    w.add_tensor(f"{b}.channel_mix_key.weight", normal(FFN, DIM, scale=DIM ** -0.5))
    w.add_tensor(f"{b}.channel_mix_value.weight", normal(DIM, FFN, scale=FFN ** -0.5))
    w.add_tensor(f"{b}.channel_mix_receptance.weight", normal(DIM, DIM, scale=DIM ** -0.5))
w.add_tensor("output_norm.weight", uniform(0.5, 1.5, DIM))
w.add_tensor("output_norm.bias", normal(DIM, scale=0.1))
w.add_tensor("output.weight", normal(VOCAB, DIM, scale=DIM ** -0.5 * 3))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(f"wrote {args.out}")

"""Writes a tiny random-weight RWKV-7 in llama.cpp's GGUF architecture `rwkv7`, F32, with
gguf-py's GGUFWriter, so that llama.cpp (node-llama-cpp in test/rwkv7.test.ts, which runs this
script) is the oracle for its meaning.

Two heads of 64 channels: llama.cpp's CPU wkv7 kernel steps through a head in SIMD blocks of 32
or 64 floats, and a head size of 16 gave llama.cpp outputs that depend on memory outside the
head (measured); 64 is the released models' head size. That makes the file 1.7 MB, so the test
writes it instead of committing it.

Facts of llama.cpp's format (its rwkv7 loader and gguf-py's MODEL_ARCH.RWKV7): metadata
rwkv7.{context_length, embedding_length, block_count, feed_forward_length,
attention.layer_norm_epsilon, attention.head_count (0: unused), wkv.head_size,
attention.{decay,iclr,value_residual_mix,gate}_lora_rank}; tensors token_embd, token_embd_norm
(weight, bias), output_norm (weight, bias), output, and per block attn_norm, attn_norm_2 (weight,
bias), time_mix_{lerp_fused, w0, w1, w2, a0, a1, a2, v0, v1, v2, g1, g2, k_k, k_a, r_k, key,
value, receptance, ln (weight, bias), output}, channel_mix_{lerp_k, key, value}. Block 0's v0/v1/v2
are loaded with the iclr rank and never used (block 0 sets the value residual).

The vocabulary is stories260K's (512 SentencePiece tokens), copied from ../shared.

    .venv/bin/python test/oracle/rwkv7_gguf_fixture.py --shared ../shared --out /tmp/rwkv7_tiny.gguf
"""
import argparse
import os

import numpy as np
from gguf import GGUFReader, GGUFWriter, GGUFValueType

DIM, HEAD_SIZE, HIDDEN, LAYERS = 128, 64, 64, 3
DECAY_RANK, ICLR_RANK, VALUE_RANK, GATE_RANK = 16, 16, 8, 16
EPS = 1e-5
SEED = 7


def tokenizer_fields(shared):
    """stories260K.gguf's tokenizer.* metadata as (key, type, value)."""
    reader = GGUFReader(os.path.join(shared, "models", "stories260K", "stories260K.gguf"))
    out = []
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.ARRAY:
            items = [field.parts[i] for i in field.data]
            sub = field.types[1]
            if sub == GGUFValueType.STRING:
                value = [bytes(p).decode("utf-8") for p in items]
            else:
                value = [p.tolist()[0] for p in items]
            out.append((key, vtype, value, sub))
        elif vtype == GGUFValueType.STRING:
            out.append((key, vtype, bytes(field.parts[field.data[0]]).decode("utf-8"), None))
        else:
            out.append((key, vtype, field.parts[field.data[0]].tolist()[0], None))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=os.environ.get("SHORTGPT_SHARED", "../shared"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    normal = lambda shape, std: f32(rng.normal(0.0, std, shape))
    uniform = lambda shape: f32(rng.uniform(0.0, 1.0, shape))

    tok = tokenizer_fields(args.shared)
    vocab = len(next(v for k, _, v, _ in tok if k == "tokenizer.ggml.tokens"))
    w = GGUFWriter(args.out, "rwkv7")
    w.add_context_length(1048576)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(HIDDEN)
    w.add_layer_norm_eps(EPS)
    w.add_head_count(0)
    w.add_wkv_head_size(HEAD_SIZE)
    w.add_decay_lora_rank(DECAY_RANK)
    w.add_iclr_lora_rank(ICLR_RANK)
    w.add_value_residual_mix_lora_rank(VALUE_RANK)
    w.add_gate_lora_rank(GATE_RANK)
    w.add_file_type(0)
    for key, vtype, value, sub in tok:
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=sub)
        else:
            w.add_key_value(key, value, vtype)

    # numpy shapes (out, in); gguf-py writes the reversed ggml dims.
    w.add_tensor("token_embd.weight", normal((vocab, DIM), 1.0))
    w.add_tensor("token_embd_norm.weight", 1 + normal(DIM, 0.1))
    w.add_tensor("token_embd_norm.bias", normal(DIM, 0.1))
    for i in range(LAYERS):
        b = f"blk.{i}"
        v_rank = ICLR_RANK if i == 0 else VALUE_RANK
        tensors = {
            "attn_norm.weight": 1 + normal(DIM, 0.1), "attn_norm.bias": normal(DIM, 0.1),
            "attn_norm_2.weight": 1 + normal(DIM, 0.1), "attn_norm_2.bias": normal(DIM, 0.1),
            "time_mix_lerp_fused.weight": uniform((6, 1, 1, DIM)),
            "time_mix_w0.weight": normal(DIM, 1.0), "time_mix_w1.weight": normal((DECAY_RANK, DIM), 0.3), "time_mix_w2.weight": normal((DIM, DECAY_RANK), 0.3),
            "time_mix_a0.weight": normal(DIM, 1.0), "time_mix_a1.weight": normal((ICLR_RANK, DIM), 0.3), "time_mix_a2.weight": normal((DIM, ICLR_RANK), 0.3),
            "time_mix_v0.weight": normal(DIM, 1.0), "time_mix_v1.weight": normal((v_rank, DIM), 0.3), "time_mix_v2.weight": normal((DIM, v_rank), 0.3),
            "time_mix_g1.weight": normal((GATE_RANK, DIM), 0.3), "time_mix_g2.weight": normal((DIM, GATE_RANK), 0.3),
            "time_mix_k_k.weight": 1 + normal(DIM, 0.2), "time_mix_k_a.weight": uniform(DIM), "time_mix_r_k.weight": normal(DIM, 0.5),
            "time_mix_key.weight": normal((DIM, DIM), DIM ** -0.5), "time_mix_value.weight": normal((DIM, DIM), DIM ** -0.5),
            "time_mix_receptance.weight": normal((DIM, DIM), DIM ** -0.5),
            "time_mix_ln.weight": 1 + normal(DIM, 0.1), "time_mix_ln.bias": normal(DIM, 0.1),
            "time_mix_output.weight": normal((DIM, DIM), DIM ** -0.5),
            "channel_mix_lerp_k.weight": uniform((1, 1, DIM)),
            "channel_mix_key.weight": normal((HIDDEN, DIM), DIM ** -0.5), "channel_mix_value.weight": normal((DIM, HIDDEN), HIDDEN ** -0.5),
        }
        for name, value in tensors.items():
            w.add_tensor(f"{b}.{name}", value)
    w.add_tensor("output_norm.weight", 1 + normal(DIM, 0.1))
    w.add_tensor("output_norm.bias", normal(DIM, 0.1))
    w.add_tensor("output.weight", normal((vocab, DIM), 3 * DIM ** -0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()

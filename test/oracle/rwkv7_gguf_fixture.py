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

    .venv/bin/python test/oracle/rwkv7_gguf_fixture.py --shared ../shared --out /tmp/rwkv7_tiny.gguf [--matrices bf16]

--matrices bf16 writes the matrices as llama.cpp's converter writes a BF16 model; bf16-values-as-f32 the same numbers
in F32, which llama.cpp computes with exactly (its BF16 kernels round their activations to bf16 too).
"""
import argparse
import os
import re

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, GGUFValueType, quants

# The tiny test shape; bench/random_rwkv7_gguf.py writes the 1.5B one with the same tensors.
TINY = {"dim": 128, "head_size": 64, "hidden": 64, "layers": 3, "decay_rank": 16, "iclr_rank": 16, "value_rank": 8, "gate_rank": 16}
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


def pad_vocabulary(tok, vocab):
    """stories260K's tokenizer fields with filler tokens appended up to `vocab` (normal pieces, score 0)."""
    have = len(next(v for k, _, v, _ in tok if k == "tokenizer.ggml.tokens"))
    extra = vocab - have
    if extra <= 0:
        return tok
    filler = {"tokenizer.ggml.tokens": [f"<filler_{i}>" for i in range(extra)], "tokenizer.ggml.scores": [0.0] * extra, "tokenizer.ggml.token_type": [1] * extra}
    return [(k, t, v + filler[k] if k in filler else v, sub) for k, t, v, sub in tok]


def write_rwkv7_gguf(out, shared, shape, seed=SEED, vocab=None, matrix_type=None, rounded_as_f32=False):
    """A random-weight rwkv7 GGUF of `shape` (TINY's keys). vocab: pad stories260K's 512 tokens up to it.
    matrix_type: None writes every tensor F32; a 16-bit GGMLQuantizationType writes the tensors llama.cpp's
    converter writes in 16 bits that way (2-D matrices but the decay LoRA w1/w2; 1-D tensors and lerp_fused stay F32).
    rounded_as_f32: those tensors' 16-bit values stored as F32 instead (the same numbers, which llama.cpp then
    multiplies without rounding its activations to 16 bits as its BF16/F16 kernels do)."""
    dim, head_size, hidden, layers = shape["dim"], shape["head_size"], shape["hidden"], shape["layers"]
    decay_rank, iclr_rank, value_rank, gate_rank = shape["decay_rank"], shape["iclr_rank"], shape["value_rank"], shape["gate_rank"]
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    normal = lambda shape, std: f32(rng.normal(0.0, std, shape))
    uniform = lambda shape: f32(rng.uniform(0.0, 1.0, shape))

    tok = tokenizer_fields(shared)
    if vocab is not None:
        tok = pad_vocabulary(tok, vocab)
    vocab = len(next(v for k, _, v, _ in tok if k == "tokenizer.ggml.tokens"))
    w = GGUFWriter(out, "rwkv7")
    w.add_context_length(1048576)
    w.add_embedding_length(dim)
    w.add_block_count(layers)
    w.add_feed_forward_length(hidden)
    w.add_layer_norm_eps(EPS)
    w.add_head_count(0)
    w.add_wkv_head_size(head_size)
    w.add_decay_lora_rank(decay_rank)
    w.add_iclr_lora_rank(iclr_rank)
    w.add_value_residual_mix_lora_rank(value_rank)
    w.add_gate_lora_rank(gate_rank)
    w.add_file_type({None: 0, GGMLQuantizationType.F16: 1, GGMLQuantizationType.BF16: 32}[None if rounded_as_f32 else matrix_type])
    for key, vtype, value, sub in tok:
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(key, value, vtype, sub_type=sub)
        else:
            w.add_key_value(key, value, vtype)

    def add(name, value):
        sixteen = matrix_type is not None and value.ndim == 2 and not re.search(r"time_mix_w[12]\.weight$", name)
        if sixteen and rounded_as_f32:
            w.add_tensor(name, quants.dequantize(quants.quantize(value, matrix_type), matrix_type).reshape(value.shape))
        elif sixteen:
            w.add_tensor(name, quants.quantize(value, matrix_type), raw_dtype=matrix_type)
        else:
            w.add_tensor(name, value)

    # numpy shapes (out, in); gguf-py writes the reversed ggml dims.
    add("token_embd.weight", normal((vocab, dim), 1.0))
    add("token_embd_norm.weight", 1 + normal(dim, 0.1))
    add("token_embd_norm.bias", normal(dim, 0.1))
    # The LoRAs' first matrices read the whole width: their spread shrinks with it (0.3 at the tiny width of 128), so
    # that their outputs stay on one scale (a wide model's sigmoids and tanh saturate otherwise).
    lora_in = 0.3 * (128 / dim) ** 0.5
    for i in range(layers):
        b = f"blk.{i}"
        v_rank = iclr_rank if i == 0 else value_rank
        tensors = {
            "attn_norm.weight": 1 + normal(dim, 0.1), "attn_norm.bias": normal(dim, 0.1),
            "attn_norm_2.weight": 1 + normal(dim, 0.1), "attn_norm_2.bias": normal(dim, 0.1),
            "time_mix_lerp_fused.weight": uniform((6, 1, 1, dim)),
            "time_mix_w0.weight": normal(dim, 1.0), "time_mix_w1.weight": normal((decay_rank, dim), lora_in), "time_mix_w2.weight": normal((dim, decay_rank), 0.3),
            "time_mix_a0.weight": normal(dim, 1.0), "time_mix_a1.weight": normal((iclr_rank, dim), lora_in), "time_mix_a2.weight": normal((dim, iclr_rank), 0.3),
            "time_mix_v0.weight": normal(dim, 1.0), "time_mix_v1.weight": normal((v_rank, dim), lora_in), "time_mix_v2.weight": normal((dim, v_rank), 0.3),
            "time_mix_g1.weight": normal((gate_rank, dim), lora_in), "time_mix_g2.weight": normal((dim, gate_rank), 0.3),
            "time_mix_k_k.weight": 1 + normal(dim, 0.2), "time_mix_k_a.weight": uniform(dim), "time_mix_r_k.weight": normal(dim, 0.5),
            "time_mix_key.weight": normal((dim, dim), dim ** -0.5), "time_mix_value.weight": normal((dim, dim), dim ** -0.5),
            "time_mix_receptance.weight": normal((dim, dim), dim ** -0.5),
            "time_mix_ln.weight": 1 + normal(dim, 0.1), "time_mix_ln.bias": normal(dim, 0.1),
            "time_mix_output.weight": normal((dim, dim), dim ** -0.5),
            "channel_mix_lerp_k.weight": uniform((1, 1, dim)),
            "channel_mix_key.weight": normal((hidden, dim), dim ** -0.5), "channel_mix_value.weight": normal((dim, hidden), hidden ** -0.5),
        }
        for name, value in tensors.items():
            add(f"{b}.{name}", value)
    add("output_norm.weight", 1 + normal(dim, 0.1))
    add("output_norm.bias", normal(dim, 0.1))
    add("output.weight", normal((vocab, dim), 3 * dim ** -0.5))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=os.environ.get("SHORTGPT_SHARED", "../shared"))
    parser.add_argument("--out", required=True)
    parser.add_argument("--matrices", choices=["f32", "bf16", "bf16-values-as-f32"], default="f32")
    args = parser.parse_args()
    bf16 = args.matrices != "f32"
    write_rwkv7_gguf(args.out, args.shared, TINY, matrix_type=GGMLQuantizationType.BF16 if bf16 else None, rounded_as_f32=args.matrices == "bf16-values-as-f32")


if __name__ == "__main__":
    main()

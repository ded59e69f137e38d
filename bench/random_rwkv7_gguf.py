"""A random-weight RWKV-7 of the RWKV7-Goose World 1.5B shape as llama.cpp's GGUF architecture rwkv7, for the
families section of `npm run bench` (its llama.cpp row), cached: a file whose .shape.json stamp matches is reused.

The shape is the published one (RWKV-x070-World-1.5B-v3, as RWKV/RWKV7-Goose-World3-1.5B-HF's config.json: 24 layers,
d_model 2048, head size 64, FFN 8192, vocab 65536, LoRA ranks decay 96, iclr (a) 96, value residual 64, gate 256; the
ranks of RWKV-LM's v7 rule for C = 2048). Tensors are written as llama.cpp's convert_hf_to_gguf.py writes such a model
in BF16: 2-D matrices in BF16 except the decay LoRA w1/w2, which it keeps in F32 with every 1-D tensor and lerp_fused.
The weights are test/oracle/rwkv7_gguf_fixture.py's (one writer for both), its vocabulary (stories260K's 512 tokens)
padded with filler tokens to 65536: the benchmark feeds token ids, never text.

Usage: .venv/bin/python bench/random_rwkv7_gguf.py --out bench/cache/rwkv-7-1.5b.gguf [--shared ../shared]
Prints one JSON object on stdout: {"path": ..., "params": ..., "created": true|false}.
"""
import argparse
import json
import os
import sys
import time

from gguf import GGMLQuantizationType, GGUFReader

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "oracle"))
from rwkv7_gguf_fixture import write_rwkv7_gguf  # noqa: E402

GENERATOR_VERSION = 2
GOOSE_1B5 = {"dim": 2048, "head_size": 64, "hidden": 8192, "layers": 24, "decay_rank": 96, "iclr_rank": 96, "value_rank": 64, "gate_rank": 256}
VOCAB = 65536


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=os.environ.get("SHORTGPT_SHARED", "../shared"))
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    stamp = {"generator": GENERATOR_VERSION, "shape": GOOSE_1B5, "vocab": VOCAB, "matrices": "BF16"}
    stamp_path = args.out + ".shape.json"
    if os.path.exists(args.out) and os.path.exists(stamp_path) and json.load(open(stamp_path)) == stamp:
        print(json.dumps({"path": args.out, "created": False}))
        return
    t0 = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    write_rwkv7_gguf(tmp, args.shared, GOOSE_1B5, vocab=VOCAB, matrix_type=GGMLQuantizationType.BF16)
    params = sum(int(t.n_elements) for t in GGUFReader(tmp).tensors)
    os.replace(tmp, args.out)
    json.dump(stamp, open(stamp_path, "w"))
    print(json.dumps({"path": args.out, "params": params, "created": True, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()

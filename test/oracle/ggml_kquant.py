"""Golden bytes for shortgpt's quantizers from llama.cpp's own code: the K-quants (Q4_K, Q5_K, Q6_K)
from ggml's reference C functions, Q5_0 / Q5_1 (llama.cpp's fallbacks for K-quant rows that are not
whole blocks of 256) from gguf-py.

gguf-py (0.19) quantizes only the legacy types, so the K-quants come from the ggml library that
node-llama-cpp ships (libggml-base.so), called through ctypes: quantize_row_q{4,5,6}_K_ref(x, y, k),
the plain reference quantizers (no importance matrix). ggml_quantize_chunk with imatrix = NULL calls
the same functions for these types; the script checks that it returns the same bytes. gguf-py's
dequantize must read the reference blocks back to the values shortgpt's dequantizer gives (the test
compares shortgpt's dequantized values with "dequantized").

Inputs are float32 values both sides can make exactly: explicit rows (zeros, an outlier, all
positive, tiny and large scales) stored in the golden, and a long generated row (a 32-bit LCG
drawn the same way in test/quant.test.ts) of which only the sha256 of each type's bytes is stored.

Run: .venv/bin/python test/oracle/ggml_kquant.py   (needs numpy, gguf; node_modules installed)
Writes test/oracle/golden/ggml_kquant.json.
"""

import ctypes
import glob
import hashlib
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import GGML_QUANT_SIZES, dequantize, quantize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = sorted(glob.glob(os.path.join(ROOT, "node_modules", "@node-llama-cpp", "linux-x64", "bins", "*", "libggml-base.so")))[0]
ggml = ctypes.CDLL(LIB)
GGML_TYPE_ID = {"Q4_K": 12, "Q5_K": 13, "Q6_K": 14}
for name in GGML_TYPE_ID:
    fn = getattr(ggml, f"quantize_row_{name[:2].lower()}_K_ref")
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn.restype = None
ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
ggml.ggml_quantize_chunk.restype = ctypes.c_size_t


def ggml_ref(name: str, x: np.ndarray) -> bytes:
    x = np.ascontiguousarray(x, dtype=np.float32)
    block_size, block_bytes = GGML_QUANT_SIZES[T[name]]
    out = np.zeros(x.size // block_size * block_bytes, dtype=np.uint8)
    getattr(ggml, f"quantize_row_{name[:2].lower()}_K_ref")(x.ctypes.data, out.ctypes.data, x.size)
    chunk = np.zeros_like(out)
    n = ggml.ggml_quantize_chunk(GGML_TYPE_ID[name], x.ctypes.data, chunk.ctypes.data, 0, 1, x.size, None)
    assert n == out.size and chunk.tobytes() == out.tobytes(), f"{name}: ggml_quantize_chunk differs from the _ref function"
    return out.tobytes()


def lcg_row(n: int, seed: int) -> np.ndarray:
    """u = the top 24 bits of a 32-bit LCG, v = u / 2^23 - 1 in [-1, 1), x = v^3 * 2 + v / 8: exact in float32 ops."""
    state = seed
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        v = np.float32((state >> 8) / 8388608.0 - 1.0)
        out[i] = np.float32(np.float32(np.float32(v * v) * v) * np.float32(2)) + np.float32(v / np.float32(8))
    return out


def explicit_rows() -> np.ndarray:
    rng = np.random.RandomState(20240301)
    rows = rng.standard_normal(size=(6, 256)).astype(np.float32)
    rows[1] *= 1e-3
    rows[2, :64] = 0.0  # zero sub-blocks (scale 0 for them)
    rows[3, 5] = -9.5  # one large value dominates its sub-block and the block
    rows[4] = np.abs(rows[4]) + 0.25  # all positive: the min is clamped to 0
    rows[5, 128:] = 0.75  # a constant half
    return np.concatenate([rows.reshape(-1), np.zeros(256, dtype=np.float32)])  # and an all-zero block


explicit = explicit_rows()
generated = lcg_row(256 * 64, 12345)
out = {"library": os.path.relpath(LIB, ROOT), "explicit": {"input": explicit.tobytes().hex(), "bytes": {}, "dequantized": {}},
       "generated": {"seed": 12345, "length": int(generated.size), "sha256": {}, "input_sha256": hashlib.sha256(generated.tobytes()).hexdigest()}}
for name in ["Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1"]:
    quant = (lambda x: ggml_ref(name, x)) if name in GGML_TYPE_ID else (lambda x: quantize(x.reshape(1, -1), T[name]).tobytes())
    b = quant(explicit)
    out["explicit"]["bytes"][name] = b.hex()
    values = dequantize(np.frombuffer(b, dtype=np.uint8).reshape(1, -1), T[name]).reshape(-1).astype(np.float32)
    out["explicit"]["dequantized"][name] = hashlib.sha256(values.tobytes()).hexdigest()
    out["generated"]["sha256"][name] = hashlib.sha256(quant(generated)).hexdigest()

path = os.path.join(ROOT, "test", "oracle", "golden", "ggml_kquant.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"wrote {path} ({os.path.getsize(path)} bytes) from {out['library']}")

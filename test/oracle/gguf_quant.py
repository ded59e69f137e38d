"""Golden values for ggml block quantization, from gguf-py (llama.cpp's own Python package).

Independent of shortgpt's TypeScript: random blocks of every supported type are dequantized by
gguf.quants.dequantize, and random float32 rows are quantized to Q8_0 and Q4_0 by
gguf.quants.quantize (llama.cpp's reference quantizers). test/quant.test.ts compares bit for bit.

Run: .venv/bin/python test/oracle/gguf_quant.py  (needs: pip install gguf numpy)
Writes test/oracle/golden/gguf_quant.json.
"""

import json
import os

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import GGML_QUANT_SIZES, dequantize, quantize

# Byte offsets of the float16 fields (scale d, and min where there is one) inside each block.
HALF_FIELDS = {
    "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
}
BLOCKS = {"Q4_0": 4, "Q4_1": 4, "Q5_0": 4, "Q5_1": 4, "Q8_0": 4, "Q2_K": 2, "Q3_K": 2, "Q4_K": 2, "Q5_K": 2, "Q6_K": 2}

rng = np.random.RandomState(20240229)
out = {"dequantize": {}, "quantize": {}}
for name, fields in HALF_FIELDS.items():
    qtype = T[name]
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = rng.randint(0, 256, size=(BLOCKS[name], block_bytes)).astype(np.uint8)
    for f in fields:
        # Finite scales of varied magnitude (one negative): random bytes could be NaN or infinity.
        halves = (rng.uniform(-0.5, 2.0, size=BLOCKS[name]) * 10.0 ** rng.randint(-4, 1, size=BLOCKS[name])).astype(np.float16)
        raw[:, f:f + 2] = halves.view(np.uint8).reshape(-1, 2)
    values = dequantize(raw.reshape(1, -1), qtype).reshape(-1).astype(np.float32)
    assert values.size == BLOCKS[name] * block_size and np.all(np.isfinite(values))
    out["dequantize"][name] = {"bytes": raw.tobytes().hex(), "values": [float(v) for v in values]}

rows = rng.standard_normal(size=(4, 64)).astype(np.float32)
rows[1] *= 1e-3
rows[2, :32] = 0.0  # an all-zero block: scale 0
rows[3, 5] = -7.5  # one large value dominates the block's scale
for name in ["Q8_0", "Q4_0"]:
    q = quantize(rows, T[name])
    out["quantize"][name] = {"input": [float(v) for v in rows.reshape(-1)], "bytes": q.tobytes().hex()}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden", "gguf_quant.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"wrote {path}")

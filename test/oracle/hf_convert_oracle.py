#!/usr/bin/env python3
"""Golden values for stories260K converted to a Hugging Face directory by `shortgpt convert`.

Independent of the TypeScript code: the directory is loaded by transformers
(`LlamaForCausalLM`, float32, eager attention) and its tokenizer.json by the Rust `tokenizers`
library. Records the token ids of a few strings, and the logits at every position of one prompt
(BOS + its ids), so test/convert.test.ts can check that the directory shortgpt writes means the
same thing to transformers as the llama2.c original means to shortgpt.

Usage (see make_convert_golden.sh): hf_convert_oracle.py DIR --out golden.json
"""

import argparse
import hashlib
import json

import tokenizers
import torch
import transformers

STRINGS = [
    "Once upon a time, there was a little girl named Lily. She loved to play",
    "Hello wörld, naïve café 🙂 日本語",
    "  two leading spaces and\ttabs\nand newlines",
    "",
]

parser = argparse.ArgumentParser()
parser.add_argument("dir")
parser.add_argument("--out", required=True)
args = parser.parse_args()

tok = tokenizers.Tokenizer.from_file(f"{args.dir}/tokenizer.json")
config = json.load(open(f"{args.dir}/config.json"))
ids = {s: tok.encode(s, add_special_tokens=False).ids for s in STRINGS}
prompt = [config["bos_token_id"]] + ids[STRINGS[0]]

model = transformers.LlamaForCausalLM.from_pretrained(args.dir, torch_dtype=torch.float32, attn_implementation="eager")
model.eval()
with torch.no_grad():
    logits = model(torch.tensor([prompt])).logits[0]

with open(f"{args.dir}/model.safetensors", "rb") as f:
    weights_sha256 = hashlib.sha256(f.read()).hexdigest()

out = {
    "transformers_version": transformers.__version__,
    "tokenizers_version": tokenizers.__version__,
    "weights_sha256": weights_sha256,
    "strings": STRINGS,
    "ids": [ids[s] for s in STRINGS],
    "prompt": prompt,
    "logits": [float(v) for v in logits.reshape(-1)],
}
with open(args.out, "w") as f:
    json.dump(out, f)
print(f"wrote {args.out}: {len(prompt)} positions x {logits.shape[1]} logits")

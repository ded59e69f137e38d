#!/usr/bin/env bash
# Regenerates test/oracle/golden/width_pruned.json: writes the width-pruned Hugging Face directories
# (stories260K converted to HF and the tiny random GQA Llama, Qwen2 and Qwen3, each by FFN channels and by SliceGPT at
# one layer's parameters) with the project's own code, then runs transformers on them.
# Needs a Python with torch, transformers and safetensors ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
npx tsc -p . >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
node dist/test/fixtures/widthDirs.js "$work/dirs" >/dev/null
cases=()
for name in stories-hf stories-ffn stories-slicegpt tiny-hf tiny-ffn tiny-slicegpt qwen2-hf qwen2-ffn qwen2-slicegpt qwen3-hf qwen3-ffn qwen3-slicegpt; do cases+=(--case "$name" "$work/dirs/$name"); done
"$PYTHON" test/oracle/width_oracle.py --ids 1,37,402,11,250,99,500,3,77,128,256,311,42,7,480,199,65 --positions 0,16 "${cases[@]}" \
  --out test/oracle/golden/width_pruned.json
ls -l test/oracle/golden/width_pruned.json

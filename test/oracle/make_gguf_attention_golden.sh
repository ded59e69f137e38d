#!/usr/bin/env bash
# Regenerates test/fixtures/gguf-attn/{gemma2,gemma3,phi3} (tiny random checkpoints written by transformers'
# save_pretrained, in the range llama.cpp's GGUF architectures hold) and test/oracle/golden/gguf_attention_families.json.
# Needs a Python with torch and transformers ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" test/oracle/gguf_attention_fixtures.py --fixtures test/fixtures/gguf-attn --out test/oracle/golden/gguf_attention_families.json
ls -l test/fixtures/gguf-attn/*/model.safetensors test/oracle/golden/gguf_attention_families.json

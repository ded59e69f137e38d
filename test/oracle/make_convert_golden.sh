#!/usr/bin/env bash
# Regenerates test/oracle/golden/stories260K_converted_hf.json: converts stories260K.bin to a
# Hugging Face directory with `shortgpt convert`, then reads it with transformers and tokenizers.
# Needs a Python with torch, transformers and tokenizers ($PYTHON, default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
SHARED="${SHORTGPT_SHARED:-../shared}"
npx tsc -p . >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
node dist/src/cli/main.js convert "$SHARED/models/stories260K/stories260K.bin" --to safetensors "$work/hf" >/dev/null
"$PYTHON" test/oracle/hf_convert_oracle.py "$work/hf" --out test/oracle/golden/stories260K_converted_hf.json

#!/usr/bin/env bash
# Regenerates test/oracle/golden/hf_llama_tiny.json: writes the tiny HF Llama (and Qwen2, Qwen3, Gemma, GPT-2, and Llama with
# llama3 or linear RoPE scaling) fixtures with the project's own generator, prunes one with removeHfLayers, and runs transformers on them.
# Needs a Python with torch, transformers, safetensors and numpy ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
npx tsc -p . >/dev/null || true   # emits even when unrelated files have type errors
test -f dist/test/fixtures/hfLlama.js
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
node dist/test/fixtures/hfLlama.js "$work/f32" --dtype F32
node dist/test/fixtures/hfLlama.js "$work/bf16" --dtype BF16
node dist/test/fixtures/hfLlama.js "$work/f16" --dtype F16
node dist/test/fixtures/hfLlama.js "$work/f32-sharded" --dtype F32 --shards 2
node dist/test/fixtures/hfLlama.js "$work/qwen2" --dtype F32 --family qwen2
node dist/test/fixtures/hfLlama.js "$work/qwen3" --dtype F32 --family qwen3
node dist/test/fixtures/hfLlama.js "$work/gemma" --dtype F32 --family gemma
node dist/test/fixtures/hfLlama.js "$work/gpt2" --dtype F32 --family gpt2
node dist/test/fixtures/hfLlama.js "$work/llama3" --dtype F32 --family llama3
node dist/test/fixtures/hfLlama.js "$work/llama-linear" --dtype F32 --family llama-linear
node --input-type=module -e "
  import { removeHfLayers } from './dist/src/prune/removeLayersHf.js';
  removeHfLayers('$work/f32-sharded', '$work/f32-sharded-pruned', [1, 2]);
"
# Round trips through shortgpt convert: HF -> GGUF (F32, stories260K's vocabulary) -> HF, for
# transformers to load the directories shortgpt writes (cases "<name>-rt").
shared="${SHORTGPT_SHARED:-../shared}"
rt_cases=()
for name in f32 qwen2 qwen3 gemma gpt2; do
  node dist/src/cli/main.js convert "$work/$name" --to gguf "$work/$name.gguf" --tokenizer "$shared/models/stories260K/tok512.bin" >/dev/null
  node dist/src/cli/main.js convert "$work/$name.gguf" --to safetensors "$work/$name-rt" >/dev/null
  rt_cases+=(--case "$name-rt" "$work/$name-rt" --last-only "$name-rt")
done
"$PYTHON" test/oracle/hf_llama_oracle.py \
  --ids 1,37,402,11,250,99,500,3,77,128,256,311,42,7,480,199,65 \
  --case f32 "$work/f32" --case bf16 "$work/bf16" --case f16 "$work/f16" --case qwen2 "$work/qwen2" --case qwen3 "$work/qwen3" --case gemma "$work/gemma" \
  --case gpt2 "$work/gpt2" --case llama3 "$work/llama3" --case llama-linear "$work/llama-linear" "${rt_cases[@]}" \
  --hidden f32 --compact bf16 --compact f16 --compact qwen2 --compact qwen3 --compact gemma --compact gpt2 --compact llama3 --compact llama-linear \
  --f64 f32 --f64 gemma --f64 gpt2 --f64 llama3 --f64 llama-linear \
  --pruned f32-sharded-pruned "$work/f32-sharded-pruned" "$work/f32-sharded" 1,2 \
  --out test/oracle/golden/hf_llama_tiny.json
ls -l test/oracle/golden/hf_llama_tiny.json

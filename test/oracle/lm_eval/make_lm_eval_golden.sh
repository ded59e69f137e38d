#!/usr/bin/env bash
# Regenerate test/oracle/golden/lm_eval_stories260K_{bin,gguf}.json: convert
# stories260K (.bin + tok512.bin, and .gguf) to Hugging Face directories with
# the shortgpt CLI, then run lm-evaluation-harness on each (run_harness.py).
#
# env: SHORTGPT_CLI    command for the shortgpt CLI (default: node dist/src/cli/main.js,
#                      run from the repository root)
#      PYTHON          python with lm_eval 0.4.13 (default: .venv/bin/python)
#      SHORTGPT_SHARED shared data folder (default: ../shared beside the repository)
#      LIMIT           items per task (default: 25)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
SHORTGPT_CLI="${SHORTGPT_CLI:-node dist/src/cli/main.js}"
PYTHON="${PYTHON:-.venv/bin/python}"
export SHORTGPT_SHARED="${SHORTGPT_SHARED:-$ROOT/../shared}"
LIMIT="${LIMIT:-25}"
MODELS="$SHORTGPT_SHARED/models/stories260K"
OUT="test/oracle/golden"
HERE="test/oracle/lm_eval"

export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shortgpt-lm-eval-models.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"

start=$(date +%s)
# shellcheck disable=SC2086  # SHORTGPT_CLI is a command line
$SHORTGPT_CLI convert "$MODELS/stories260K.bin" --to safetensors "$WORK/stories260K_bin" \
  --tokenizer "$MODELS/tok512.bin"
# shellcheck disable=SC2086
$SHORTGPT_CLI convert "$MODELS/stories260K.gguf" --to safetensors "$WORK/stories260K_gguf"

for m in bin gguf; do
  echo "== harness on stories260K.$m"
  "$PYTHON" "$HERE/run_harness.py" --model-dir "$WORK/stories260K_$m" \
    --label "stories260K.$m converted by: $SHORTGPT_CLI convert" \
    --limit "$LIMIT" \
    --run "arc_easy,arc_challenge,piqa,boolq,copa,openbookqa,social_iqa,commonsense_qa,hellaswag,winogrande,lambada_openai,mmlu_subset,cmmlu_subset:0" \
    --run "mmlu_subset,cmmlu_subset:5" \
    --out "$OUT/lm_eval_stories260K_$m.json"
done
echo "done in $(( $(date +%s) - start )) s"

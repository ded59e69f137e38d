#!/usr/bin/env bash
# Regenerates test/fixtures/hf-attn/{gemma2,gemma3,phi3} (tiny random checkpoints written by transformers'
# save_pretrained) and test/oracle/golden/hf_attention_families.json; prunes each with shortgpt's removeHfLayers
# and has transformers load the result strictly and check its logits. Needs a Python with torch and transformers
# ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
npx tsc -p . >/dev/null
fixtures=test/fixtures/hf-attn
golden=test/oracle/golden/hf_attention_families.json
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# First pass: the checkpoints (seeded, so the second pass writes the same bytes).
"$PYTHON" test/oracle/hf_attention_families_oracle.py --fixtures "$fixtures" --out "$work/first.json"
pruned=()
for name in gemma2 gemma3 phi3; do
  node --input-type=module -e "
    import { removeHfLayers } from './dist/src/prune/removeLayersHf.js';
    removeHfLayers('$fixtures/$name', '$work/$name-pruned', [0, 2]);
  "
  pruned+=(--pruned "$name" "$work/$name-pruned" 0,2)
done
"$PYTHON" test/oracle/hf_attention_families_oracle.py --fixtures "$fixtures" "${pruned[@]}" --out "$golden"
ls -l "$fixtures"/*/model.safetensors "$golden"

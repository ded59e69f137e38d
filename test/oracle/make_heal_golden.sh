#!/usr/bin/env bash
# Regenerates test/oracle/golden/heal_hf.json: heals the tiny HF Llama and GPT-2 fixtures (layer 2
# removed) with the project's own code and runs transformers on the results; and
# test/oracle/golden/heal_fit.json (numpy). Needs a Python with torch, transformers, numpy ($PYTHON).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
npx tsc -p . >/dev/null
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
node dist/test/fixtures/healHf.js "$work/llama" llama >/dev/null
node dist/test/fixtures/healHf.js "$work/gpt2" gpt2 >/dev/null
ids="$(node --input-type=module -e "import { HEAL_FIXTURE_IDS } from './dist/test/fixtures/healHf.js'; console.log(HEAL_FIXTURE_IDS.join(','))")"
"$PYTHON" test/oracle/heal_hf_oracle.py --ids "$ids" --case llama "$work/llama/healed" --case gpt2 "$work/gpt2/healed" --out test/oracle/golden/heal_hf.json
"$PYTHON" test/oracle/heal_fit_oracle.py > test/oracle/golden/heal_fit.json
ls -l test/oracle/golden/heal_hf.json test/oracle/golden/heal_fit.json

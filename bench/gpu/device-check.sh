#!/usr/bin/env bash
# The one command run on the borrowed GPU machine, from inside the unpacked gpu bundle: unpacks node,
# finds the CUDA libraries, runs shortgpt's device check, the transformers peer on four shapes, and
# the combine step, keeping each step's log in OUT_DIR/logs so one failure never loses the rest.
#
#   bash device-check.sh [--dry-run] [OUT_DIR]       (OUT_DIR defaults to $OUT, then ./gpu-out)
# --dry-run only unpacks node and checks that koffi and the compiled code load from the bundle.
# Budget: SHORTGPT_CHECK_BUDGET seconds in all (default 480), SHORTGPT_NODE_TIMEOUT for the
# device check (default 200), SHORTGPT_PEER_TIMEOUT per peer run (default 120). SHORTGPT_CHECK_ARGS:
# extra options for deviceCheck.js (e.g. --only-shapes tinyllama); SHORTGPT_PEER_SPECS: the peer's
# shape:seqLen runs (default: the four of the table). SHORTGPT_CPU_CHECK=1 adds the CPU bf16/AMX step (a2).
set -u

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$BUNDLE" || exit 1
OUT_DIR="${1:-${OUT:-./gpu-out}}"
mkdir -p "$OUT_DIR/logs" || exit 1
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
BUDGET="${SHORTGPT_CHECK_BUDGET:-480}"
NODE_TIMEOUT="${SHORTGPT_NODE_TIMEOUT:-200}"
PEER_TIMEOUT="${SHORTGPT_PEER_TIMEOUT:-120}"
PYTHON="${PYTHON:-python3}"
SECONDS=0

log() { echo "[$(date -u +%H:%M:%S) +${SECONDS}s] $*"; }

# Seconds a step may take: its own limit, cut to what is left of the budget minus a reserve
# for the combine step; 0 means skip.
step_limit() {
  local left=$((BUDGET - SECONDS - 20))
  if [ "$left" -lt "$1" ]; then echo $((left > 10 ? left : 0)); else echo "$1"; fi
}

# run_step NAME LIMIT CMD...: runs CMD under timeout with its output in logs/NAME.log and on stdout.
run_step() {
  local name="$1" limit="$2"; shift 2
  if [ "$limit" -le 0 ]; then log "$name: skipped, budget spent"; return 1; fi
  log "$name: start (limit ${limit}s): $*"
  local rc to=()
  if command -v timeout >/dev/null 2>&1; then to=(timeout -k 10 "$limit"); fi
  ${to[@]+"${to[@]}"} "$@" 2>&1 | tee "$OUT_DIR/logs/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then log "$name: ok"
  elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then log "$name: TIMED OUT after ${limit}s"
  else log "$name: FAILED (exit $rc)"; fi
  return "$rc"
}

# --- node: unpacked once to /tmp (xz, else python's lzma: the machine may lack xz) ---
NODE_DIR="${SHORTGPT_NODE_DIR:-/tmp/shortgpt-node}"
NODE="$NODE_DIR/node"
if [ ! -x "$NODE" ] || ! "$NODE" --version >/dev/null 2>&1; then
  log "unpacking node to $NODE"
  mkdir -p "$NODE_DIR" || exit 1
  if command -v xz >/dev/null 2>&1; then
    xz -dc node.xz > "$NODE.tmp"
  else
    "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' node.xz "$NODE.tmp"
  fi
  chmod +x "$NODE.tmp" && mv "$NODE.tmp" "$NODE"
fi
if ! "$NODE" --version >/dev/null 2>&1; then log "node does not run: $("$NODE" --version 2>&1 | head -3)"; exit 1; fi
log "node $("$NODE" --version)"

if [ "$DRY_RUN" -eq 1 ]; then
  # import.meta.resolve shows the koffi that loaded is the bundle's, not one from a parent folder.
  "$NODE" --input-type=module -e "const k = await import('koffi'); console.log('koffi ok', k.default.version, import.meta.resolve('koffi'))" || { log "koffi does not load"; exit 1; }
  "$NODE" --input-type=module -e "await import('@huggingface/tokenizers'); console.log('tokenizers ok', import.meta.resolve('@huggingface/tokenizers'))" || { log "@huggingface/tokenizers does not load"; exit 1; }
  "$NODE" dist/bench/gpu/combineResults.js --dir "$OUT_DIR" >/dev/null || { log "combineResults.js does not run"; exit 1; }
  log "dry run ok"
  exit 0
fi

# --- CUDA libraries: every folder that may hold libcuda / libcudart / cuBLAS / NVRTC ---
# pip's nvidia-* wheels put them in nvidia/<component>/lib (CUDA 12) or nvidia/cu13/lib (CUDA 13).
LIB_DIRS="/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib:/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu"
PY_NVIDIA="$("$PYTHON" -c 'import glob, os, nvidia; print(":".join(sorted({d for p in nvidia.__path__ for d in glob.glob(os.path.join(p, "*", "lib")) if os.path.isdir(d)})))' 2>/dev/null)"
if [ -n "$PY_NVIDIA" ]; then LIB_DIRS="$LIB_DIRS:$PY_NVIDIA"; fi
export SHORTGPT_CUDA_LIBS="$LIB_DIRS"
log "SHORTGPT_CUDA_LIBS=$SHORTGPT_CUDA_LIBS"
for lib in libcuda.so.1 libcudart.so libcublas.so libcublasLt.so libnvrtc.so; do
  found=""
  IFS=: read -r -a dirs <<< "$SHORTGPT_CUDA_LIBS"
  for d in "${dirs[@]}"; do
    hit="$(ls "$d"/"$lib"* 2>/dev/null | head -1)"
    if [ -n "$hit" ]; then found="$hit"; break; fi
  done
  log "  $lib -> ${found:-NOT FOUND}"
done
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv 2>/dev/null
else
  log "nvidia-smi not found"
fi

# --- (a) shortgpt's own device check (correctness, then speed) ---
# LD_LIBRARY_PATH for node only, so libraries the CUDA libraries load in turn resolve too; the
# python peer keeps torch's own bundled CUDA libraries.
run_step shortgpt "$(step_limit "$NODE_TIMEOUT")" env SHORTGPT_SHARED="$BUNDLE/shared" SHORTGPT_CACHE_DIR="${SHORTGPT_CACHE_DIR:-/tmp/shortgpt-cache}" LD_LIBRARY_PATH="$SHORTGPT_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$NODE" dist/bench/gpu/deviceCheck.js --out "$OUT_DIR" ${SHORTGPT_CHECK_ARGS:-}
[ -f "$OUT_DIR/shortgpt.json" ] || log "no shortgpt.json: the table will have peer columns only"

# --- (a2) the CPU bf16 engine on this machine's Xeon (SHORTGPT_CPU_CHECK=1; issue #18's AMX check):
# the GEMMs alone (the helper's kernel, oneDNN in the helper, with the ISA oneDNN picked), then BI
# on a random TinyLlama-shaped bf16 checkpoint, 8 x 512 tokens, 2 threads: shortgpt bf16 with each
# GEMM kernel against PyTorch bf16 and fp32, as the README's CPU table. ---
if [ "${SHORTGPT_CPU_CHECK:-0}" = "1" ]; then
  CPU_LIBS="$BUNDLE/build/cpu-libs"
  if [ -f "$CPU_LIBS/libdnnl.so.2.xz" ] && [ ! -f "$BUNDLE/build/libdnnl.so.2" ]; then
    if command -v xz >/dev/null 2>&1; then xz -dc "$CPU_LIBS/libdnnl.so.2.xz" > "$BUNDLE/build/libdnnl.so.2"
    else "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$CPU_LIBS/libdnnl.so.2.xz" "$BUNDLE/build/libdnnl.so.2"; fi
  fi
  grep -m1 -o 'amx_bf16' /proc/cpuinfo >/dev/null && log "CPU has amx_bf16" || log "CPU has no amx_bf16"
  CPU_ENV=(env LD_LIBRARY_PATH="$BUNDLE/build:$CPU_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  run_step cpu-gemm "$(step_limit 120)" "${CPU_ENV[@]}" sh -c "\"$NODE\" dist/bench/cpuGemm.js --threads 2 > \"$OUT_DIR/cpu-gemm.json\""
  WORK="${TMPDIR:-/tmp}/shortgpt-cpu-check"
  rm -rf "$WORK" && mkdir -p "$WORK"
  if run_step cpu-make-checkpoint "$(step_limit 60)" env PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu/peer_extra.py make --shape tinyllama --save "$WORK/model" --out "$OUT_DIR/logs/cpu-make-checkpoint.json"; then
    cp shared/stories-hf/tokenizer.json shared/stories-hf/tokenizer_config.json "$WORK/model/"
    "$PYTHON" -c 'import json, random, sys; r = random.Random(0); json.dump({"windows": [[r.randrange(32000) for _ in range(512)] for _ in range(8)]}, open(sys.argv[1], "w"))' "$WORK/ids.json"
    for gemm in onednn native; do
      run_step "cpu-bi-shortgpt-$gemm" "$(step_limit 150)" "${CPU_ENV[@]}" SHORTGPT_CPU_GEMM="$gemm" sh -c "\"$NODE\" dist/bench/runTask.js score \"$WORK/model\" --tokens \"$WORK/ids.json\" --backend onnx --threads 2 --precision bf16 > \"$OUT_DIR/cpu-bi-shortgpt-$gemm.json\""
    done
    for dtype in bf16 fp32; do
      run_step "cpu-bi-torch-$dtype" "$(step_limit 150)" sh -c "\"$PYTHON\" bench/peer_torch.py --model \"$WORK/model\" --tokens \"$WORK/ids.json\" --dtype $dtype --task score --threads 2 --batch 8 > \"$OUT_DIR/cpu-bi-torch-$dtype.json\""
    done
  fi
  rm -rf "$WORK"
fi

# --- (b) the transformers + torch peer, one process per shape so each frees its model ---
for spec in ${SHORTGPT_PEER_SPECS:-tinyllama:512 llama2-7b:512 llama3-8b:512 llama2-7b:2048}; do
  shape="${spec%%:*}"; seq="${spec##*:}"
  run_step "peer-$shape-$seq" "$(step_limit "$PEER_TIMEOUT")" env PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu/peer_cuda.py \
    --shape "$shape" --windows 8 --seq-len "$seq" --tasks score,ppl --device cuda --dtype bf16 --repeats 3 \
    --out "$OUT_DIR/peer-$shape-$seq.json" --print summary
done

# --- (b2) the peer on the MMLU requests shortgpt scored (deviceCheck.js --mmlu-limit writes them) ---
if [ -f "$OUT_DIR/mmlu-requests.json" ]; then
  run_step peer-mmlu "$(step_limit "$PEER_TIMEOUT")" env PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu/peer_extra.py mmlu --shape llama2-7b \
    --requests "$OUT_DIR/mmlu-requests.json" --batch 64 --out "$OUT_DIR/peer-extra-mmlu.json"
  mv "$OUT_DIR/mmlu-requests.json" "$OUT_DIR/logs/" 2>/dev/null
fi

# --- (b3) prune end to end (SHORTGPT_PRUNE_E2E=1): both sides prune the same random TinyLlama-shaped
# checkpoint (bf16, saved by transformers, with stories260K's tokenizer) by BI over 16,384 tokens ---
if [ "${SHORTGPT_PRUNE_E2E:-0}" = "1" ]; then
  WORK="${TMPDIR:-/tmp}/shortgpt-prune-e2e"
  rm -rf "$WORK" && mkdir -p "$WORK"
  if run_step make-checkpoint "$(step_limit 60)" env PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu/peer_extra.py make --shape tinyllama --save "$WORK/model" --out "$OUT_DIR/logs/make-checkpoint.json"; then
    cp shared/stories-hf/tokenizer.json shared/stories-hf/tokenizer_config.json "$WORK/model/"
    t0=$(date +%s.%N)
    if run_step prune-shortgpt "$(step_limit 120)" env SHORTGPT_CACHE_DIR="${SHORTGPT_CACHE_DIR:-/tmp/shortgpt-cache}" LD_LIBRARY_PATH="$SHORTGPT_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      "$NODE" dist/src/cli/main.js prune "$WORK/model" --data shared/data/tinystories/tinystories_val.txt --remove 5 --max-tokens 16384 --seq-len 2048 \
      --backend cuda --out "$WORK/ours" --json "$OUT_DIR/logs/prune-shortgpt.json"; then
      t1=$(date +%s.%N)
      "$PYTHON" -c 'import json, sys; t = float(sys.argv[2]) - float(sys.argv[1]); json.dump({"name": "tinyllama prune end to end", "unit": "s", "better": "lower", "value": t}, open(sys.argv[3], "w")); print(f"shortgpt prune: {t:.2f} s")' "$t0" "$t1" "$OUT_DIR/extra-prune.json"
    fi
    run_step prune-peer "$(step_limit 120)" env PYTHONUNBUFFERED=1 "$PYTHON" bench/gpu/peer_extra.py prune --model "$WORK/model" \
      --text shared/data/tinystories/tinystories_val.txt --tokens 16384 --seq-len 2048 --remove 5 --save "$WORK/peer" --out "$OUT_DIR/peer-extra-prune.json"
  fi
  rm -rf "$WORK"
fi

# --- (c) combine: gpu-results.json and the markdown table ---
run_step combine 30 "$NODE" dist/bench/gpu/combineResults.js --dir "$OUT_DIR"
# The device tool brings back at most 8 files: keep the two JSON results and pack the rest.
( cd "$OUT_DIR" && tar czf details.tar.gz logs peer-*.json extra-*.json 2>/dev/null && rm -rf logs peer-*.json extra-*.json )
log "done; results in $OUT_DIR: $(ls "$OUT_DIR" | tr '\n' ' ')"
exit 0

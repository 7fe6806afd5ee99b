#!/usr/bin/env bash
# On the GPU machine, after every call folder of `benchmarks/gpu/prepare.py` has arrived: install the
# carried wheels, then run the suite into $OUT (or the folder given). Finishes within about 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
python3 benchmarks/gpu/install.py --calls .gpu/calls --target /tmp/site
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" || true
# fail here, with the import that broke, rather than inside the suite
python3 -c "import deepspeed, nvidia.dali, webdataset, zstandard; print('deepspeed', deepspeed.__version__, 'dali', nvidia.dali.__version__)"
python3 benchmarks/gpu/suite.py --out "$out" --shards-root .gpu/shards --budget-s 420 2>&1 | tee "$out/suite.log"

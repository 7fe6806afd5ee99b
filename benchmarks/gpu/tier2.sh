#!/usr/bin/env bash
# Tier 2 of the GPU suite, the last of the calls `benchmarks/gpu/prepare.py --tier 2` prints, on the machine
# tier 1 ran on: joins the DALI wheel parts and checks every one before installing anything, then measures
# NVDEC loading and the GPU loader against tier 1's training steps (benchmarks/gpu/suite.py) into $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python3 -c "import deepspeed" 2>/dev/null || { echo "tier2: tier 1's install is not on this machine (run tier1.sh first, on the same warm machine)" >&2; exit 2; }
python3 benchmarks/gpu/install.py --calls .gpu/tier2/calls --target /tmp/site
python3 -c "import nvidia.dali as d; print('dali', d.__version__)"
python3 benchmarks/gpu/suite.py --out "$out" --shards-root .gpu/shards --tier1 /tmp/salt-tier1/suite.json \
    --budget-s 240 2>&1 | tee "$out/tier2.log"

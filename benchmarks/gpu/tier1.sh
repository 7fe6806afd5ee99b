#!/usr/bin/env bash
# Tier 1 of the GPU suite, in one device call that carries .gpu/tier1 (benchmarks/gpu/prepare.py --tier 1):
# checks and installs the carried wheels, then the users' commands end to end and the ViT-L steps
# (benchmarks/gpu/rehearsal.py) into $OUT. About 4.5 minutes after the machine's start.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-${OUT:-gpu-results}}"
mkdir -p "$out"
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
python3 benchmarks/gpu/install.py --calls .gpu/tier1/calls --target /tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" || true
# fail here, with the import that broke, rather than inside the rehearsal
python3 -c "import deepspeed, webdataset, zstandard, av, pebble, torch; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__)"
status=0
python3 benchmarks/gpu/rehearsal.py --out "$out" 2>&1 | tee "$out/tier1.log" || status=$?
mkdir -p /tmp/salt-tier1 && cp "$out/suite.json" /tmp/salt-tier1/ 2>/dev/null || true  # tier 2's ratio reads it
exit $status

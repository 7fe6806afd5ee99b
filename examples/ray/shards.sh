#!/usr/bin/env bash
# Shard preparation on a running Ray cluster (started with `ray start --head` and `ray start --address`
# on the workers, or by KubeRay). Run on any node of the cluster; INPUT and OUT must be paths every
# node sees (a parallel file system). Parts are Ray tasks: one per 32 inputs unless --ray-tasks is
# given; a task reserves --ray-cpus-per-task CPUs and runs that many transcode processes.
#
#   bash examples/ray/shards.sh /data/videos shards/kinetics [more dataprep.shards flags]
set -euo pipefail
input=${1:?usage: shards.sh INPUT OUT [flags]}
out=${2:?usage: shards.sh INPUT OUT [flags]}
shift 2
exec python -m dataprep.shards --input "$input" --out "$out" --ray "${RAY_ADDRESS:-auto}" \
  --ray-cpus-per-task "${CPUS_PER_TASK:-4}" "$@"

#!/usr/bin/env bash
# One node's launcher inside a Slurm allocation (started by train.sbatch through srun, once per node).
# Resolves the rendezvous from Slurm's variables:
#   MASTER_ADDR  first host of SLURM_JOB_NODELIST (scontrol show hostnames)
#   MASTER_PORT  29500 + SLURM_JOB_ID % 1000 unless set
#   node rank    SLURM_NODEID, of SLURM_NNODES nodes, GPUS_PER_NODE (default SLURM_GPUS_ON_NODE or 8)
# LAUNCHER=deepspeed (default: a hostfile of the allocation, --no_ssh --node_rank) or torchrun.
set -euo pipefail
: "${SLURM_JOB_NODELIST:?run inside a Slurm allocation}" "${SLURM_NODEID:?}" "${SLURM_NNODES:?}" "${SLURM_JOB_ID:?}"
gpus=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
if [ "${#hosts[@]}" -ne "$SLURM_NNODES" ]; then
  echo "error: SLURM_JOB_NODELIST has ${#hosts[@]} hosts, SLURM_NNODES says $SLURM_NNODES" >&2
  exit 2
fi
export MASTER_ADDR=${MASTER_ADDR:-${hosts[0]}}
export MASTER_PORT=${MASTER_PORT:-$((29500 + SLURM_JOB_ID % 1000))}
case "${LAUNCHER:-deepspeed}" in
  deepspeed)
    hostfile=${HOSTFILE:-${TMPDIR:-/tmp}/salt-hostfile-$SLURM_JOB_ID}
    for h in "${hosts[@]}"; do echo "$h slots=$gpus"; done > "$hostfile"
    exec deepspeed --hostfile "$hostfile" --no_ssh --node_rank "$SLURM_NODEID" --num_gpus "$gpus" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" salt/train.py "$@" ;;
  torchrun)
    exec torchrun --nnodes "$SLURM_NNODES" --node_rank "$SLURM_NODEID" --nproc_per_node "$gpus" \
      --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" salt/train.py "$@" ;;
  *)
    echo "error: LAUNCHER must be deepspeed or torchrun, got ${LAUNCHER}" >&2
    exit 2 ;;
esac

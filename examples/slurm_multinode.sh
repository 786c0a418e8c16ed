#!/bin/bash
# Multi-node training with Slurm: one task per node, torchrun starts one process per GPU.
#   sbatch examples/slurm_multinode.sh config.toml
# Every node needs the same axr install, config, base model and prepared store (shared storage).
#SBATCH --job-name=axr-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=axr-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch examples/slurm_multinode.sh CONFIG}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
MAIN_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}

# Build the prepared store once, before the ranks start (they find it by its fingerprint).
srun --nodes=1 --ntasks=1 -w "$MAIN_NODE" axr preprocess "$CONFIG"

# SLURM_NODEID gives each node its rank; the c10d rendezvous runs on the first node.
srun --kill-on-bad-exit=1 bash -c "torchrun \
  --nnodes=$SLURM_NNODES --node_rank=\$SLURM_NODEID --nproc_per_node=$GPUS_PER_NODE \
  --rdzv_id=$SLURM_JOB_ID --rdzv_backend=c10d --rdzv_endpoint=$MAIN_NODE:$MAIN_PORT \
  -m axr.cli train $CONFIG"

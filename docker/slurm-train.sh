#!/bin/bash
# segmodels train on 2 machines under Slurm: one task per node runs `mlflow run ... -e train` with node_rank =
# SLURM_NODEID; the first node of the allocation hosts the rendezvous. Every node pins and downloads its data from
# lakeFS itself; global rank 0 records the MLflow run, publishes the model and commits the checkpoint to lakeFS every
# epoch, so resubmitting this script after a failure resumes on every node.
# Submit from the project folder: sbatch docker/slurm-train.sh lakefs://segmodels/<commit id>/data
#SBATCH --job-name=segmodels-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --time=04:00:00
set -euo pipefail

data_ref=${1:?usage: sbatch docker/slurm-train.sh lakefs://<repo>/<commit id>/data}
rendezvous_host=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:?set the tracking server every node reaches}
export LAKECTL_SERVER_ENDPOINT_URL=${LAKECTL_SERVER_ENDPOINT_URL:?set the lakeFS every node reaches}

# single quotes: SLURM_NODEID is each task's own node index, expanded on that node
srun --kill-on-bad-exit=1 bash -c 'mlflow run . -e train --env-manager local \
  -P data_ref="$0" -P nproc="$SLURM_GPUS_ON_NODE" -P nnodes="$SLURM_NNODES" -P node_rank="$SLURM_NODEID" \
  -P rdzv_endpoint="$1:29400"' "$data_ref" "$rendezvous_host"

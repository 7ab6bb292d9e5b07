# Sourced, not run: the rendezvous of a multi-node `accelerate launch`, from SLURM's variables.
#
#   source training_scripts/slurm/rendezvous.sh && dora_rendezvous
#
# run once per node (inside `srun`, one task per node), sets and exports for that node:
#   NUM_MACHINES       the job's nodes: $SLURM_NNODES
#   MACHINE_RANK       this node's index: $SLURM_NODEID (else $SLURM_PROCID, the same with one task per node)
#   MAIN_PROCESS_IP    the job's first host (`scontrol show hostnames $SLURM_JOB_NODELIST`), where rank 0 listens
#   MAIN_PROCESS_PORT  $MAIN_PROCESS_PORT if set, else 20000 + $SLURM_JOB_ID % 20000, so that two jobs
#                      sharing a node do not pick the same port
#   NUM_PROCESSES      all processes of the run: NUM_MACHINES x GPUs per node ($GPUS_PER_NODE if set,
#                      else $SLURM_GPUS_ON_NODE, else 8)
# A missing variable is one line on stderr and status 1.

dora_rendezvous() {
    local name
    for name in SLURM_NNODES SLURM_JOB_NODELIST SLURM_JOB_ID; do
        if [[ -z "${!name:-}" ]]; then
            echo "dora_rendezvous: $name is not set: run inside a SLURM job (sbatch, then srun on every node)" >&2
            return 1
        fi
    done
    local rank=${SLURM_NODEID:-${SLURM_PROCID:-}}
    if [[ -z "$rank" ]]; then
        echo "dora_rendezvous: neither SLURM_NODEID nor SLURM_PROCID is set: start it with srun, one task per node" >&2
        return 1
    fi
    if (( rank >= SLURM_NNODES )); then
        echo "dora_rendezvous: node $rank of $SLURM_NNODES: start one task per node (srun --ntasks-per-node=1)" >&2
        return 1
    fi
    local hosts
    mapfile -t hosts < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
    if [[ -z "${hosts[0]:-}" ]]; then
        echo "dora_rendezvous: scontrol show hostnames '$SLURM_JOB_NODELIST' named no host" >&2
        return 1
    fi
    local gpus=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
    export NUM_MACHINES=$SLURM_NNODES
    export MACHINE_RANK=$rank
    export MAIN_PROCESS_IP=${hosts[0]}
    export MAIN_PROCESS_PORT=${MAIN_PROCESS_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
    export NUM_PROCESSES=$((SLURM_NNODES * gpus))
}

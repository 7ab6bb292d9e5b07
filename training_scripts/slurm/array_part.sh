# Sourced, not run: which part of a split `prepare-data` this SLURM array task prepares.
#
#   source training_scripts/slurm/array_part.sh && part=$(dora_array_part)    # e.g. 3/8
#
# prints K/N for `prepare-data --part K/N`: K is the task's id + 1 (ids count from 0), N the
# number of parts: $PARTS if set (to rerun some parts alone: PARTS=8 sbatch --array=2,5 ...), else
# the array's size, which must then be one range from 0 (--array=0-7), so that every part has its
# task. Anything else, or a missing variable, is one line on stderr and status 1.

dora_array_part() {
    if [[ -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
        echo "dora_array_part: SLURM_ARRAY_TASK_ID is not set: submit the script as an array (sbatch --array=0-7 ...)" >&2
        return 1
    fi
    local parts=${PARTS:-}
    if [[ -z "$parts" ]]; then
        if (( SLURM_ARRAY_TASK_MIN != 0 || SLURM_ARRAY_TASK_MAX != SLURM_ARRAY_TASK_COUNT - 1 )); then
            echo "dora_array_part: array ids $SLURM_ARRAY_TASK_MIN-$SLURM_ARRAY_TASK_MAX for $SLURM_ARRAY_TASK_COUNT tasks:" \
                "give one id per part from 0 (--array=0-$((SLURM_ARRAY_TASK_COUNT - 1))), or set PARTS to the number of parts" >&2
            return 1
        fi
        parts=$SLURM_ARRAY_TASK_COUNT
    fi
    if (( SLURM_ARRAY_TASK_ID >= parts )); then
        echo "dora_array_part: array id $SLURM_ARRAY_TASK_ID is past the last of $parts parts (ids 0-$((parts - 1)))" >&2
        return 1
    fi
    echo "$((SLURM_ARRAY_TASK_ID + 1))/$parts"
}

#!/usr/bin/env bash
# Submit a scripts.sweep as a SLURM array job (task i runs shard i of N) and a merge job that
# starts when every task has ended, however it ended (--dependency=afterany): a shard that
# died leaves its points listed as missing by the merge (exit 3) instead of no merge at all.
#
#   scripts/cluster/sweep_slurm.sh N OUT SCRIPT [SWEEP OPTIONS] [-- SCRIPT ARGS]
#   scripts/cluster/sweep_slurm.sh 8 /shared/sw estimate --preset quick \
#       --grid world.entanglement=0,0.3,0.6,0.9 --grid world.p_marker=0.8,1.0 --set seeds=5
#
# OUT must be on a file system every node sees. Before submitting, the grid is checked here
# (scripts.sweep --dry-run) so a typo fails now, not in the queue. Prints the two job ids.
# Logs: OUT/slurm/shard-<i>.out and OUT/slurm/merge.out. A rerun of the same command (or of
# one task: sbatch --array=I with the same --wrap) skips the points already finished.
#
# Environment:
#   SBATCH_ARGS        extra sbatch options for the shard tasks, e.g.
#                      "--partition=gpu --gres=gpu:1 --time=4:00:00 --cpus-per-task=8"
#   MERGE_SBATCH_ARGS  sbatch options for the merge job (default: --time=0:30:00)
#   MAX_PARALLEL       run at most this many tasks at once (sbatch --array=0-7%MAX_PARALLEL)
#   PYTHON             the Python with dlm installed (default: python)
#   SWEEP_CHECK=0      skip the --dry-run check (e.g. no Python on the login node)
set -euo pipefail

if (( $# < 3 )); then
    sed -n '2,23p' "$0" >&2
    exit 2
fi
shards=$1 out=$2
shift 2
if ! [[ $shards =~ ^[1-9][0-9]*$ ]]; then
    echo "sweep_slurm.sh: N must be a positive integer, got '$shards'" >&2
    exit 2
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
python=${PYTHON:-python}
mkdir -p "$out/slurm"
out=$(cd "$out" && pwd)

# options go before the user's arguments, which may end in "-- SCRIPT ARGS"
sweep=(-m scripts.sweep --out "$out" --shards "$shards")
if [[ ${SWEEP_CHECK:-1} != 0 ]]; then
    (cd "$repo" && "$python" "${sweep[@]}" --shard "0/$shards" --dry-run "$@" >/dev/null)
fi
run=$(printf '%q ' "$python" "${sweep[@]}")
args=$(printf '%q ' "$@")
array="0-$((shards - 1))${MAX_PARALLEL:+%$MAX_PARALLEL}"

# SBATCH_ARGS / MERGE_SBATCH_ARGS are lists of options: split on spaces on purpose
# shellcheck disable=SC2086
job=$(sbatch --parsable --job-name=dlm-sweep --array="$array" --chdir="$repo" \
    --output="$out/slurm/shard-%a.out" ${SBATCH_ARGS:-} \
    --wrap="$run$args")
job=${job%%;*}                        # --parsable prints ID or ID;CLUSTER
# shellcheck disable=SC2086
merge=$(sbatch --parsable --job-name=dlm-sweep-merge --dependency="afterany:$job" \
    --chdir="$repo" --output="$out/slurm/merge.out" ${MERGE_SBATCH_ARGS:---time=0:30:00} \
    --wrap="$run--merge-only $args")
merge=${merge%%;*}
echo "sweep: array job $job (--array=$array), merge job $merge (afterany:$job); logs in $out/slurm/"
echo "sweep: when the merge has run: $out/results.csv, $out/sweep.json (\"missing\" lists any point not finished)"

#!/bin/sh
# join.sh: join the per-task trajectory streams of traj-array.sbatch into one
# and check it. cllm streams concatenate with cat (docs/FORMATS.md).
#   examples/slurm/join.sh OUTDIR N > traj.zst
# or as a dependent job, after the array finished without failures:
#   sbatch --dependency=afterok:ARRAYJOBID --wrap 'examples/slurm/join.sh OUTDIR 8 > traj.zst'

# Stop at the first error and on unset variables.
set -eu
# The array's output directory and its number of tasks.
OUTDIR=${1:?usage: join.sh OUTDIR N > joined.zst}
N=${2:?number of array tasks}
# Where the cllm binaries are.
CLLM_BIN=${CLLM_BIN:-$(pwd)/build}
# Every task must have finished: a missing shard is an error, not a smaller data set.
i=0
files=""
while [ "$i" -lt "$N" ]; do
    f=$(printf '%s/traj-%05d-of-%05d.zst' "$OUTDIR" "$i" "$N")
    [ -f "$f" ] || { echo "join.sh: missing $f (task $i failed or is still running)" >&2; exit 1; }
    files="$files $f"
    i=$((i + 1))
done
# Each stream is checked on its own first, so a damaged one is named.
for f in $files; do "$CLLM_BIN/cllm-cat" --check -q "$f" || { echo "join.sh: $f does not check" >&2; exit 1; }; done
# The join itself: plain concatenation, in task order.
# shellcheck disable=SC2086
cat $files
# A last check of the joined stream (read again from the files, since stdout may be a pipe).
# shellcheck disable=SC2086
cat $files | "$CLLM_BIN/cllm-cat" --check -q - >&2
# Record counts on stderr, for the log.
# shellcheck disable=SC2086
cat $files | "$CLLM_BIN/cllm-cat" --count - >&2

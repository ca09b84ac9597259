#!/bin/sh
# slurm.sh: the SLURM examples parse (bash -n / sh -n) and carry the #SBATCH
# lines they need; with sbatch present, sbatch --test-only accepts them; join.sh
# joins shard streams made here and rejects a missing shard; the training
# scripts under a stand-in srun start afresh or resume as they should.
set -eu
B=$CLLM_BUILD
D=examples/slurm
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
bash -n "$D/traj-array.sbatch" || fail "traj-array.sbatch does not parse"
bash -n "$D/train-multinode.sbatch" || fail "train-multinode.sbatch does not parse"
bash -n "$D/train-gpu.sbatch" || fail "train-gpu.sbatch does not parse"
sh -n "$D/join.sh" || fail "join.sh does not parse"
need() { grep -q "^#SBATCH $2" "$D/$1" || fail "$1: no '#SBATCH $2' line"; }
for o in --array= --ntasks=1 --cpus-per-task= --time= --output=; do need traj-array.sbatch "$o"; done
for o in --nodes= --ntasks-per-node= --cpus-per-task= --time= --output=; do need train-multinode.sbatch "$o"; done
for o in --nodes= --ntasks-per-node= --gpus-per-task=1 --cpus-per-task= --time= --output=; do need train-gpu.sbatch "$o"; done
grep -q 'srun --mpi=pmix .*cllm-train' "$D/train-gpu.sbatch" || fail "train-gpu.sbatch: no srun line"
grep -q -- '--device cuda --allreduce nccl' "$D/train-gpu.sbatch" || fail "train-gpu.sbatch: not NCCL on CUDA"
grep -q -- '--shard "\$I/\$N"' "$D/traj-array.sbatch" || fail "traj-array.sbatch does not shard"
grep -q 'SLURM_ARRAY_TASK_COUNT' "$D/traj-array.sbatch" || fail "traj-array.sbatch ignores SLURM_ARRAY_TASK_COUNT"
grep -q 'srun --mpi=pmix .*cllm-train' "$D/train-multinode.sbatch" || fail "train-multinode.sbatch: no srun line"
grep -qi 'nccl' "$D/train-multinode.sbatch" || fail "train-multinode.sbatch: NCCL not noted"
# Every non-blank line after the shebang is a comment, or follows one within 3 lines.
for f in "$D/traj-array.sbatch" "$D/train-multinode.sbatch" "$D/train-gpu.sbatch" "$D/join.sh"; do
    awk 'NR > 1 && /^[ \t]*#/ { last = NR } NR > 1 && !/^[ \t]*(#|$)/ && NR - last > 3 && !/^ / && !/\\$/ && !/^(done|fi|\})/ { print FILENAME ": line " NR " has no comment near it"; bad = 1 } END { exit bad }' "$f" ||
        fail "$f: lines without comments"
done
if command -v sbatch > /dev/null 2>&1; then
    sbatch --test-only "$D/traj-array.sbatch" m p o || fail "sbatch --test-only traj-array.sbatch"
    sbatch --test-only "$D/train-multinode.sbatch" m t o || fail "sbatch --test-only train-multinode.sbatch"
    sbatch --test-only "$D/train-gpu.sbatch" m t o || fail "sbatch --test-only train-gpu.sbatch"
else
    echo "sbatch not found: syntax and #SBATCH lines checked only"
fi
# join.sh on streams made here (SLURM's environment faked for the array script).
"$B/tools/make-tiny" -o "$T/tiny" 2>/dev/null
head -5 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p.jsonl"
for i in 0 1; do
    SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=2 SLURM_CPUS_PER_TASK=1 CLLM_BIN="$B" \
        bash "$D/traj-array.sbatch" "$T/tiny" "$T/p.jsonl" "$T/out"
done
CLLM_BIN="$B" sh "$D/join.sh" "$T/out" 2 > "$T/joined.zst" 2> "$T/join.err" || { cat "$T/join.err"; fail "join.sh"; }
"$B/cllm-cat" --check -q "$T/joined.zst" || fail "joined stream does not check"
grep -q '^traj' "$T/join.err" || fail "join.sh printed no counts"
counts=$(grep "^traj" "$T/join.err" | tr "\t" " ")
rc=0; CLLM_BIN="$B" sh "$D/join.sh" "$T/out" 3 > /dev/null 2> "$T/join.err" || rc=$?
[ $rc = 1 ] && grep -q missing "$T/join.err" || fail "join.sh accepted a missing shard"
echo "slurm examples: parse, #SBATCH lines present, array tasks + join.sh: $counts records"
# Rerunning one failed task (sbatch --array=1: SLURM says task 1 of 1, min 1)
# with SHARDS=2 redoes shard 1 of 2, records equal to the first run's; without
# SHARDS the same task collected every prompt as shard 0 of 1. An id past the
# shard count (--array=1,3,5 is 3 tasks, min 1) is refused by the script.
mv "$T/out/traj-00001-of-00002.zst" "$T/first1.zst"
SHARDS=2 SLURM_ARRAY_TASK_ID=1 SLURM_ARRAY_TASK_COUNT=1 SLURM_ARRAY_TASK_MIN=1 SLURM_CPUS_PER_TASK=1 CLLM_BIN="$B" \
    bash "$D/traj-array.sbatch" "$T/tiny" "$T/p.jsonl" "$T/out" || fail "SHARDS=2, task 1: rerun failed"
[ "$(ls "$T/out")" = "$(printf 'traj-00000-of-00002.zst\ntraj-00001-of-00002.zst')" ] || fail "rerun of task 1 wrote: $(ls "$T/out")"
"$B/cllm-cat" --type traj -j "$T/first1.zst" | sed 's/"time_s":[^,}]*//' > "$T/a.j"
"$B/cllm-cat" --type traj -j "$T/out/traj-00001-of-00002.zst" | sed 's/"time_s":[^,}]*//' > "$T/b.j"
[ -s "$T/a.j" ] && cmp -s "$T/a.j" "$T/b.j" || fail "the rerun shard 1 of 2 differs from the first run's"
rc=0
SLURM_ARRAY_TASK_ID=5 SLURM_ARRAY_TASK_COUNT=3 SLURM_ARRAY_TASK_MIN=1 SLURM_CPUS_PER_TASK=1 CLLM_BIN="$B" \
    bash "$D/traj-array.sbatch" "$T/tiny" "$T/p.jsonl" "$T/gap" 2> "$T/gap.err" || rc=$?
[ $rc = 2 ] && grep -q "task 5 is no shard of 3" "$T/gap.err" || fail "--array=1,3,5: exit $rc: $(cat "$T/gap.err")"
echo "traj-array.sbatch: SHARDS=2 reruns task 1 as shard 1 of 2; an id past the count refused"
# The training scripts under a stand-in srun (its own options dropped, its
# command line logged, the command run as one process, or not at all with
# SRUN_DRY): a fresh run trains. A job stopped while writing its first
# checkpoint leaves OUT.ckpt without one: the requeued script must start
# afresh (it passed --resume OUT.ckpt, refused at every requeue: "no
# checkpoint"). With a checkpoint there it resumes, also when OUT is a
# directory named with a trailing slash (cllm-train's OUT.ckpt is then DIR.ckpt).
mkdir "$T/bin"
cat > "$T/bin/srun" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do case $1 in --*) shift ;; *) break ;; esac; done
printf '%s\n' "$*" >> "$SRUN_LOG"
[ -n "${SRUN_DRY:-}" ] || exec "$@"
EOF
chmod +x "$T/bin/srun"
run_sbatch() { # SCRIPT OUT [dry]
    : > "$T/srun.log"
    PATH="$T/bin:$PATH" SRUN_LOG="$T/srun.log" SRUN_DRY=${3:-} SLURM_CPUS_PER_TASK=1 CLLM_BIN="$B" \
        bash "$D/$1.sbatch" "$T/tiny" "$T/joined.zst" "$2"
}
mkdir "$T/m.gguf.ckpt"
: > "$T/m.gguf.ckpt/.ckpt-tmp-AbC123"   # the first save's temporary file, never renamed
run_sbatch train-multinode "$T/m.gguf" > "$T/sb.out" 2>&1 || { cat "$T/sb.out"; fail "train-multinode.sbatch after a stop in its first checkpoint"; }
[ -s "$T/m.gguf" ] && ! grep -q -- --resume "$T/srun.log" || fail "train-multinode.sbatch: no model, or resumed from no checkpoint: $(cat "$T/srun.log")"
for s in train-multinode train-gpu; do
    rm -rf "$T/hf.ckpt"; mkdir "$T/hf.ckpt"
    : > "$T/hf.ckpt/ckpt-00000100.cllmckpt"
    run_sbatch $s "$T/hf/" dry || fail "$s.sbatch (dry)"
    grep -q -- "--resume $T/hf.ckpt " "$T/srun.log" || fail "$s.sbatch, OUT=DIR/ with DIR.ckpt: not resumed: $(cat "$T/srun.log")"
done
echo "train scripts (stand-in srun): a fresh start after a stop in the first checkpoint; resume from DIR.ckpt for OUT=DIR/"

#!/bin/sh
# mpi.sh: data-parallel cllm-train over MPI, and sharded collection in parallel
# (docs/SCALING.md). Skips when mpirun is absent or cllm-train has no MPI.
#   1. SFT, 2 ranks (--batch 1 --grad-accum 2 each, global batch 4) == one
#      process with --grad-accum 4: every tensor within 1e-5 (max|a-b|/max|b|,
#      tests/tools/model-diff), one metric record per step (cllm-cat --count);
#      with the shuffle buffer on and micro-batches of 2 as well;
#   2. CLLM objective (global consistency + AR) on cllm-traj output, 2 ranks
#      == 1 process: 7 prompts x 3 chunks = 21 records, global batch 4, so
#      the last step has 1 example and rank 1 contributes nothing to it;
#   3. resume: 2 ranks, checkpoint at step 3, resume on 2 ranks == the
#      straight 2-rank run byte for byte; resuming on 1 rank is refused;
#      a pipe as input is refused with 2 ranks;
#   3a. --resume DIR with the newest checkpoint hidden from rank 1 (a readdir
#      shim): rank 0 picks and rank 1 loads its pick; == the straight run;
#   3b. srun's environment for 2 tasks without an MPI process manager
#      (SLURM_STEP_NUM_TASKS=2, no PMI variables): refused, not one rank each;
#   4. cllm-traj --shard i/3 as 3 processes started together, joined with
#      cat: passes cllm-cat --check and holds the records of the unsharded run;
#   5. SIGTERM to both ranks (as SLURM sends it) while rank 0 writes a
#      checkpoint (an LD_PRELOAD fsync that sleeps, built here with cc): both
#      stop after the next step, exit 143, with its checkpoint (was: rank 0 in
#      the barrier, rank 1 in the next step's all-reduce, a hang); the same
#      with --shard-optimizer (all ranks gather the moments first);
#   6. --shard-optimizer (ZeRO-1): test_dist's collectives on 3 ranks (an
#      empty slice, pieces that split slices); SFT with weight decay (the
#      no-decay mask cut into slices) and CLLM on 2 ranks without clipping ==
#      the plain 2-rank runs byte for byte, checkpoints included; with
#      clipping acting within 1e-6 (the norm's double sum runs in another
#      order); 3 ranks (uneven slices) within 1e-5; resume sharded -> plain
#      and plain -> sharded == the straight runs byte for byte; one process
#      with the option == without it; ranks that disagree on it are refused;
#      a PMPI shim sees the sharded run's reduce-scatters, all-gathers and
#      checkpoint gathers (none in the plain run: the equalities alone pass
#      with the option ignored).
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
if ! command -v mpirun > /dev/null 2>&1; then echo "skip: mpirun not found"; exit 0; fi
MPI="mpirun --allow-run-as-root --oversubscribe -np"
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
count() { "$B/cllm-cat" --count "$1" | awk -v t="$2" '$1 == t { print $2 }'; }

"$B/tools/make-tiny" -o "$T/tiny" 2>/dev/null
head -8 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p8.jsonl"
# lr 1e-4 (5x the default): the 1-process and 2-rank gradients differ in fp32
# summation order only, and Adam's first steps turn that rounding, on elements
# whose gradient is ~eps (1e-8), into weight differences proportional to lr:
# 1.4e-6 here, 1.4e-5 at lr 1e-3; regrouping micro-batches within one process
# (--batch 2 --grad-accum 2 vs --batch 1 --grad-accum 4) moves the weights as
# much (docs/SCALING.md).
SFT="-m $T/tiny --objective sft --field question --template gsm8k -t 1 -q --lr 1e-4 --warmup 0 --max-steps 5"
losses() { "$B/cllm-cat" -j "$1" | grep '"name":"loss"' | sed 's/.*"value":\([^,]*\),"step":\([0-9]*\).*/\2 \1/'; }
same_losses() { # a.zst b.zst: equal to 1e-6 relative, step by step
    losses "$1" > "$T/la"; losses "$2" > "$T/lb"
    [ "$(wc -l < "$T/la")" = "$(wc -l < "$T/lb")" ] || return 1
    paste "$T/la" "$T/lb" | awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-6 * ($4 < 0 ? -$4 : $4)) bad = 1 } END { exit bad }'
}

rc=0
$MPI 2 "$B/cllm-train" $SFT --batch 1 --grad-accum 2 --shuffle-buffer 1 -o "$T/two.gguf" --metrics "$T/two.zst" \
    "$T/p8.jsonl" > "$T/mpi.out" 2>&1 || rc=$?
if grep -q "this build has no MPI" "$T/mpi.out"; then echo "skip: cllm-train built without MPI (make MPI=1)"; exit 0; fi
[ $rc = 0 ] || { cat "$T/mpi.out"; fail "mpirun -np 2 cllm-train: exit $rc"; }

# 1. SFT: 2 ranks == 1 process with the same global batch.
"$B/cllm-train" $SFT --batch 1 --grad-accum 4 --shuffle-buffer 1 -o "$T/one.gguf" "$T/p8.jsonl" > "$T/one.zst"
"$B/tools/model-diff" -q "$T/two.gguf" "$T/one.gguf" > "$T/d" || { cat "$T/d"; fail "SFT: 2 ranks differ from 1 process"; }
echo "SFT, input order, global batch 4 (2 ranks x 1 x 2 vs 1 x 1 x 4): $(cat "$T/d")"
same_losses "$T/two.zst" "$T/one.zst" || fail "SFT: 2-rank losses differ from 1 process"
# The comparison can tell: a global batch of 2 (half the data) is far off.
"$B/cllm-train" $SFT --batch 1 --grad-accum 2 --shuffle-buffer 1 -o "$T/half.gguf" "$T/p8.jsonl" > /dev/null
"$B/tools/model-diff" -q "$T/two.gguf" "$T/half.gguf" > "$T/d" && fail "a global batch of 2 passes for 4"
echo "  control, 1 process with a global batch of 2: $(cat "$T/d")"
"$B/cllm-cat" --check -q "$T/two.zst" || fail "2-rank metric stream does not check"
[ "$(count "$T/two.zst" metric)" = "$(count "$T/one.zst" metric)" ] && [ "$(count "$T/two.zst" metric)" = 25 ] ||
    fail "2-rank metric stream: $(count "$T/two.zst" metric) metric records, want 25 (5 per step)"
[ "$("$B/cllm-cat" -j "$T/two.zst" | grep -c '"name":"loss"')" = 5 ] || fail "not one loss record per step"
echo "metric stream: $(count "$T/two.zst" metric) metric records for 5 steps on 2 ranks (one per metric and step)"
# The shuffle buffer on, micro-batches of 2 (padded): 2 x 2 x 1 vs 1 x 4 x 1.
$MPI 2 "$B/cllm-train" $SFT --batch 2 --shuffle-buffer 5 --seed 3 -o "$T/two-s.gguf" --metrics /dev/null "$T/p8.jsonl"
"$B/cllm-train" $SFT --batch 4 --shuffle-buffer 5 --seed 3 -o "$T/one-s.gguf" "$T/p8.jsonl" > /dev/null
"$B/tools/model-diff" -q "$T/two-s.gguf" "$T/one-s.gguf" > "$T/d" || { cat "$T/d"; fail "SFT shuffled: 2 ranks differ"; }
echo "SFT, shuffle buffer 5, micro-batches of 2 vs 4: $(cat "$T/d")"

# 2. CLLM objective on trajectories of the tiny model (one epoch).
head -7 "$T/p8.jsonl" > "$T/p7.jsonl"
"$B/cllm-traj" -m "$T/tiny" -n 8 --max-new-tokens 24 --field question --template gsm8k -q "$T/p7.jsonl" > "$T/traj.zst"
[ "$("$B/cllm-cat" --count "$T/traj.zst" | awk '$1 == "traj" { print $2 }')" = 21 ] || fail "expected 21 traj records"
CL="-m $T/tiny -t 1 -q --lr 1e-4 --warmup 0 --seed 5 --shuffle-buffer 6"
$MPI 2 "$B/cllm-train" $CL --batch 2 -o "$T/c2.gguf" --metrics "$T/c2.zst" "$T/traj.zst"
"$B/cllm-train" $CL --batch 2 --grad-accum 2 -o "$T/c1.gguf" "$T/traj.zst" > "$T/c1.zst"
"$B/tools/model-diff" -q "$T/c2.gguf" "$T/c1.gguf" > "$T/d" || { cat "$T/d"; fail "CLLM: 2 ranks differ from 1 process"; }
same_losses "$T/c2.zst" "$T/c1.zst" || fail "CLLM: 2-rank losses differ from 1 process"
n=$("$B/cllm-cat" -j "$T/c2.zst" | grep -c '"name":"consistency"')
[ "$n" = 6 ] && [ "$("$B/cllm-cat" -j "$T/c1.zst" | grep -c '"name":"consistency"')" = 6 ] || fail "CLLM: $n steps on 2 ranks, want 6"
echo "CLLM global, 21 records in $n steps (the last of 1 example), 2 ranks x 2 vs 1 x 2 x 2: $(cat "$T/d")"

# 3. Resume on 2 ranks.
R="$SFT --max-steps 6 --batch 1 --shuffle-buffer 3 --seed 7 $T/p8.jsonl"
$MPI 2 "$B/cllm-train" $R -o "$T/straight.gguf" --metrics /dev/null
$MPI 2 "$B/cllm-train" $R -o "$T/first.gguf" --metrics /dev/null --max-steps 6 --checkpoint-every 3 --keep 0
[ -f "$T/first.gguf.ckpt/ckpt-00000003.cllmckpt" ] || fail "no step-3 checkpoint"
$MPI 2 "$B/cllm-train" $R -o "$T/resumed.gguf" --metrics /dev/null --resume "$T/first.gguf.ckpt/ckpt-00000003.cllmckpt"
cmp "$T/straight.gguf" "$T/resumed.gguf" || fail "2-rank resume differs from the straight 2-rank run"
rc=0
"$B/cllm-train" $R -o "$T/bad.gguf" --resume "$T/first.gguf.ckpt/ckpt-00000003.cllmckpt" > /dev/null 2> "$T/bad.err" || rc=$?
[ $rc = 1 ] && grep -q "on 2 ranks (this one has 1)" "$T/bad.err" || fail "resume on 1 rank accepted (exit $rc)"
echo "resume: 2 ranks 3 + 3 == 6 straight (byte for byte); on 1 rank: $(cat "$T/bad.err")"
# 3a. --resume DIR where rank 1 does not see the newest checkpoint yet (as a
# node whose NFS client caches the directory's listing): rank 0 picks, the
# others load its pick. (Each picking for itself, rank 1 took step 3 and
# rank 0 step 6, and the run stopped: "ranks disagree on the starting
# weights".) A readdir shim, built here with cc, hides step 6 from rank 1.
if command -v "${CC:-cc}" > /dev/null 2>&1; then
    [ -f "$T/first.gguf.ckpt/ckpt-00000006.cllmckpt" ] || fail "no step-6 checkpoint"
    cat > "$T/hide.c" <<'EOF'
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
/* On rank 1 (OMPI_COMM_WORLD_RANK), readdir skips the entry named $HIDE_NAME. */
static int hidden(const char *name) {
    const char *h = getenv("HIDE_NAME"), *r = getenv("OMPI_COMM_WORLD_RANK");
    return h && r && !strcmp(r, "1") && !strcmp(name, h);
}
struct dirent *readdir(DIR *d) {
    struct dirent *(*real)(DIR *) = (struct dirent *(*)(DIR *))dlsym(RTLD_NEXT, "readdir");
    struct dirent *e;
    while ((e = real(d)) && hidden(e->d_name)) {}
    return e;
}
struct dirent64 *readdir64(DIR *d) {
    struct dirent64 *(*real)(DIR *) = (struct dirent64 *(*)(DIR *))dlsym(RTLD_NEXT, "readdir64");
    struct dirent64 *e;
    while ((e = real(d)) && hidden(e->d_name)) {}
    return e;
}
EOF
    "${CC:-cc}" -shared -fPIC -o "$T/hide.so" "$T/hide.c" -ldl
    rc=0
    $MPI 2 -x HIDE_NAME=ckpt-00000006.cllmckpt -x LD_PRELOAD="$T/hide.so" "$B/cllm-train" $R -o "$T/picked.gguf" \
        --metrics /dev/null --resume "$T/first.gguf.ckpt" > "$T/picked.err" 2>&1 || rc=$?
    [ $rc = 0 ] || { cat "$T/picked.err"; fail "--resume DIR, rank 1 not seeing the newest checkpoint: exit $rc"; }
    cmp "$T/straight.gguf" "$T/picked.gguf" || fail "--resume DIR from rank 0's pick (step 6) differs from the straight run"
    echo "--resume DIR with the newest checkpoint hidden from rank 1: rank 0's pick loaded on both (== straight)"
else
    echo "skip 3a: no C compiler for the readdir shim"
fi
rc=0
$MPI 2 "$B/cllm-train" $SFT -o "$T/bad.gguf" --metrics /dev/null < "$T/p8.jsonl" > "$T/bad.err" 2>&1 || rc=$?
[ $rc != 0 ] && grep -q "must be a file named on the command line" "$T/bad.err" || fail "2 ranks reading stdin accepted"

# 3b. srun -n 2 without --mpi=pmix (a site whose MpiDefault is none) starts
# two tasks with SLURM_STEP_NUM_TASKS=2 and no PMI variables: each used to
# train alone, as one rank, into the same output.
rc=0
SLURM_STEP_NUM_TASKS=2 SLURM_PROCID=1 "$B/cllm-train" $SFT -o "$T/srun.gguf" "$T/p8.jsonl" > /dev/null 2> "$T/srun.err" || rc=$?
[ $rc = 1 ] && grep -q "started by srun as one of 2 tasks, but with no MPI process manager" "$T/srun.err" &&
    [ ! -e "$T/srun.gguf" ] || fail "srun's 2 tasks without PMI: exit $rc, $(cat "$T/srun.err")"
SLURM_STEP_NUM_TASKS=1 SLURM_PROCID=0 "$B/cllm-train" $SFT -o "$T/srun1.gguf" "$T/p8.jsonl" > /dev/null ||
    fail "srun -n 1 refused"
echo "srun's 2 tasks without an MPI process manager: $(cat "$T/srun.err")"

# 4. Sharded collection: 3 processes at once, joined with cat.
TR="-m $T/tiny -n 8 --max-new-tokens 16 --field question --template gsm8k -q $T/p8.jsonl"
"$B/cllm-traj" $TR > "$T/all.zst"
for i in 0 1 2; do "$B/cllm-traj" $TR --shard $i/3 > "$T/s$i.zst" & done
wait
cat "$T/s0.zst" "$T/s1.zst" "$T/s2.zst" > "$T/joined.zst"
"$B/cllm-cat" --check -q "$T/joined.zst" || fail "joined shards do not pass cllm-cat --check"
"$B/cllm-cat" --type traj -j "$T/joined.zst" | sort > "$T/j.jsonl"
"$B/cllm-cat" --type traj -j "$T/all.zst" | sort | cmp - "$T/j.jsonl" || fail "joined shards differ from the unsharded run"
echo "cllm-traj --shard 0..2/3 in parallel, joined: $(wc -l < "$T/j.jsonl") records == the unsharded run, check passes"
# 5. A signal that lands on rank 0 after the step's shared signal flag was
# summed, here while it writes a checkpoint and rank 1 goes on to the next
# step: the ranks must still stop after the same step. The shim makes rank
# 0's first fsync (its first checkpoint's) wait 3 s; SIGTERM then goes to
# both ranks.
if command -v "${CC:-cc}" > /dev/null 2>&1; then
    cat > "$T/slowsync.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
/* Each rank's pid in $SLOWSYNC_DIR/pid.RANK; the first fsync leaves
 * $SLOWSYNC_DIR/slow and sleeps 3 s. */
__attribute__((constructor)) static void note_pid(void) {
    const char *d = getenv("SLOWSYNC_DIR"), *r = getenv("OMPI_COMM_WORLD_RANK");
    char p[4096];
    if (!d || !r) return;
    snprintf(p, sizeof p, "%s/pid.%s", d, r);
    FILE *f = fopen(p, "w");
    if (f) { fprintf(f, "%d\n", (int)getpid()); fclose(f); }
}
int fsync(int fd) {
    static int calls;
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    const char *d = getenv("SLOWSYNC_DIR");
    if (d && calls++ == 0) {
        char p[4096];
        snprintf(p, sizeof p, "%s/slow", d);
        FILE *f = fopen(p, "w");
        if (f) fclose(f);
        sleep(3);
    }
    return real(fd);
}
EOF
    "${CC:-cc}" -shared -fPIC -o "$T/slowsync.so" "$T/slowsync.c" -ldl
    k=0
    for ZF in "" --shard-optimizer; do   # sharded: every rank sends its moments before rank 0 writes
        k=$((k + 1))
        mkdir "$T/ss$k"
        SLOWSYNC_DIR="$T/ss$k" timeout 60 $MPI 2 -x SLOWSYNC_DIR -x LD_PRELOAD="$T/slowsync.so" "$B/cllm-train" $SFT \
            --max-steps 200 $ZF --batch 1 --shuffle-buffer 1 --checkpoint-every 2 -o "$T/sig$k.gguf" --metrics "$T/sig$k.zst" \
            "$T/p8.jsonl" > "$T/sig$k.out" 2>&1 &
        job=$!
        i=0
        while [ ! -f "$T/ss$k/slow" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
        [ -f "$T/ss$k/slow" ] && [ -f "$T/ss$k/pid.0" ] && [ -f "$T/ss$k/pid.1" ] || { kill $job; fail "the fsync shim did not run"; }
        sleep 0.5   # rank 1 is past the step's end by now, rank 0 still in its checkpoint
        kill -TERM "$(cat "$T/ss$k/pid.0")" "$(cat "$T/ss$k/pid.1")"
        rc=0
        wait $job || rc=$?
        [ $rc != 124 ] || fail "SIGTERM to both ranks during rank 0's checkpoint: the job hung (killed after 60 s)"
        [ $rc = 143 ] || { cat "$T/sig$k.out"; fail "SIGTERM to both ranks during a checkpoint: exit $rc, want 143"; }
        [ -f "$T/sig$k.gguf.ckpt/ckpt-00000003.cllmckpt" ] || fail "SIGTERM during the step-2 checkpoint: no step-3 checkpoint"
        [ ! -e "$T/sig$k.gguf" ] || fail "an interrupted run wrote its model"
        echo "SIGTERM to both ranks while rank 0 writes a checkpoint: both stop after the next step (exit 143, its checkpoint)${ZF:+ with $ZF: its moments gathered first}"
    done
else
    echo "skip 5: no C compiler for the fsync shim"
fi
# 6. ZeRO-1. Without clipping (--clip 0) the step is elementwise after the
# gradient sum, and with 2 ranks the reduce-scatter's sums are the
# all-reduce's (a + b == b + a): bit for bit. Clipping multiplies by
# max/(norm + 1e-6), and the sharded norm adds the slices' sums of squares
# (double) in another order than one pass over the vector: equal to ~1e-15,
# which can move the fp32 factor by one ulp, so there a tolerance.
$MPI 3 "$B/tests/test_dist" > "$T/dist.out" 2>&1 || { cat "$T/dist.out"; fail "mpirun -np 3 test_dist"; }
grep -q "^3 rank(s)" "$T/dist.out" || { cat "$T/dist.out"; fail "test_dist did not run on 3 ranks"; }
Z="$SFT --batch 1 --shuffle-buffer 3 --seed 7 --weight-decay 0.1 --clip 0 --checkpoint-every 5 --keep 0"
# The equalities below hold as well for a run that ignored the option: a
# PMPI shim counts each rank's reduce-scatters, all-gathers and gathers (the
# sharded step and checkpoint; the plain run makes none of them).
cat > "$T/pmpi.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static long rs, ag, ga;
int MPI_Reduce_scatter(const void *s, void *r, const int c[], MPI_Datatype t, MPI_Op o, MPI_Comm m) {
    rs++;
    return PMPI_Reduce_scatter(s, r, c, t, o, m);
}
int MPI_Allgatherv(const void *s, int sc, MPI_Datatype st, void *r, const int rc[], const int d[], MPI_Datatype rt,
                   MPI_Comm m) {
    ag++;
    return PMPI_Allgatherv(s, sc, st, r, rc, d, rt, m);
}
int MPI_Gatherv(const void *s, int sc, MPI_Datatype st, void *r, const int rc[], const int d[], MPI_Datatype rt,
                int root, MPI_Comm m) {
    ga++;
    return PMPI_Gatherv(s, sc, st, r, rc, d, rt, root, m);
}
__attribute__((destructor)) static void report(void) {
    const char *dir = getenv("PMPI_DIR");
    char path[4096];
    if (!dir) return;
    snprintf(path, sizeof path, "%s/%ld", dir, (long)getpid());
    FILE *f = fopen(path, "w");
    if (f) { fprintf(f, "%ld %ld %ld\n", rs, ag, ga); fclose(f); }
}
EOF
"${MPICC:-mpicc}" -shared -fPIC -o "$T/pmpi.so" "$T/pmpi.c" || fail "cannot build the PMPI shim with ${MPICC:-mpicc}"
mkdir "$T/pmpi-p" "$T/pmpi-s"
PMPI_DIR="$T/pmpi-p" $MPI 2 -x PMPI_DIR -x LD_PRELOAD="$T/pmpi.so" "$B/cllm-train" $Z -o "$T/zp.gguf" --metrics "$T/zp.zst" "$T/p8.jsonl"
PMPI_DIR="$T/pmpi-s" $MPI 2 -x PMPI_DIR -x LD_PRELOAD="$T/pmpi.so" "$B/cllm-train" $Z --shard-optimizer -o "$T/zs.gguf" \
    --metrics "$T/zs.zst" "$T/p8.jsonl"
[ "$(cat "$T"/pmpi-p/* | sort -u)" = "0 0 0" ] && [ "$(ls "$T/pmpi-p" | wc -l)" = 2 ] ||
    fail "the plain run: reduce-scatters, all-gathers, gathers per rank: $(cat "$T"/pmpi-p/*)"
[ "$(cat "$T"/pmpi-s/* | sort -u)" = "5 5 2" ] && [ "$(ls "$T/pmpi-s" | wc -l)" = 2 ] ||
    fail "--shard-optimizer on 2 ranks, 5 steps, 1 checkpoint: reduce-scatters, all-gathers, gathers per rank: $(cat "$T"/pmpi-s/*), want 5 5 2"
cmp "$T/zp.gguf" "$T/zs.gguf" || fail "ZeRO-1 SFT on 2 ranks differs from the plain 2-rank run"
cmp "$T/zp.gguf.ckpt/ckpt-00000005.cllmckpt" "$T/zs.gguf.ckpt/ckpt-00000005.cllmckpt" ||
    fail "ZeRO-1 checkpoint differs from the plain run's"
same_losses "$T/zs.zst" "$T/zp.zst" || fail "ZeRO-1 losses differ"
norms() { "$B/cllm-cat" -j "$1" | grep '"name":"grad_norm"' | sed 's/.*"value":\([^,]*\),"step":\([0-9]*\).*/\2 \1/'; }
norms "$T/zp.zst" > "$T/na"; norms "$T/zs.zst" > "$T/nb"
[ "$(wc -l < "$T/na")" = 5 ] && paste "$T/na" "$T/nb" |
    awk '{ d = $2 - $4; if (d < 0) d = -d; if ($1 != $3 || d > 1e-12 * $2) bad = 1 } END { exit bad }' ||
    fail "ZeRO-1 grad_norm differs: $(paste "$T/na" "$T/nb")"
echo "ZeRO-1, SFT + weight decay, 2 ranks, no clipping: == plain 2 ranks byte for byte (model, checkpoint), grad_norm to 1e-12"
"$B/cllm-train" $Z --batch 2 -o "$T/z1.gguf" "$T/p8.jsonl" > /dev/null
"$B/cllm-train" $Z --batch 2 --shard-optimizer -o "$T/z1s.gguf" "$T/p8.jsonl" > /dev/null
cmp "$T/z1.gguf" "$T/z1s.gguf" || fail "--shard-optimizer changes a 1-process run"
$MPI 2 "$B/cllm-train" $CL --batch 2 --clip 0 -o "$T/zc.gguf" --metrics /dev/null "$T/traj.zst"
$MPI 2 "$B/cllm-train" $CL --batch 2 --clip 0 --shard-optimizer -o "$T/zcs.gguf" --metrics /dev/null "$T/traj.zst"
cmp "$T/zc.gguf" "$T/zcs.gguf" || fail "ZeRO-1 CLLM on 2 ranks differs from the plain 2-rank run"
echo "ZeRO-1, CLLM, 2 ranks, no clipping: == plain byte for byte; 1 process: the option changes nothing"
# Clipping acting (the default limit 1 under norms of 1.2-1.5 here).
$MPI 2 "$B/cllm-train" $SFT --batch 1 --shuffle-buffer 1 -o "$T/zk.gguf" --metrics "$T/zk.zst" "$T/p8.jsonl"
$MPI 2 "$B/cllm-train" $SFT --batch 1 --shuffle-buffer 1 --shard-optimizer -o "$T/zks.gguf" --metrics /dev/null "$T/p8.jsonl"
norms "$T/zk.zst" | awk '$2 <= 1 { bad = 1 } END { exit bad }' || fail "clipping does not act in the clipping test"
"$B/tools/model-diff" -q --tol 1e-6 "$T/zk.gguf" "$T/zks.gguf" > "$T/d" || { cat "$T/d"; fail "ZeRO-1 with clipping: beyond 1e-6"; }
echo "ZeRO-1 with clipping acting, 2 ranks vs plain: $(cat "$T/d") (bar 1e-6)"
$MPI 3 "$B/cllm-train" $SFT --batch 1 --shuffle-buffer 1 --shard-optimizer -o "$T/z3s.gguf" --metrics /dev/null "$T/p8.jsonl"
$MPI 3 "$B/cllm-train" $SFT --batch 1 --shuffle-buffer 1 -o "$T/z3.gguf" --metrics /dev/null "$T/p8.jsonl"
"$B/tools/model-diff" -q "$T/z3.gguf" "$T/z3s.gguf" > "$T/d" || { cat "$T/d"; fail "ZeRO-1 on 3 ranks differs"; }
echo "ZeRO-1, 3 ranks (uneven slices; 3 summands in another order) vs plain: $(cat "$T/d")"
# Resume across the option: the checkpoint holds whole moments either way.
ZR="$SFT --max-steps 6 --batch 1 --shuffle-buffer 3 --seed 7 --weight-decay 0.1 --clip 0 --metrics /dev/null $T/p8.jsonl"
$MPI 2 "$B/cllm-train" $ZR -o "$T/zr-plain.gguf"
$MPI 2 "$B/cllm-train" $ZR --shard-optimizer -o "$T/zr-shard.gguf"
cmp "$T/zr-plain.gguf" "$T/zr-shard.gguf" || fail "ZeRO-1 6 steps differ from plain"
$MPI 2 "$B/cllm-train" $ZR --shard-optimizer -o "$T/zr-a.gguf" --checkpoint-every 3 --keep 0
$MPI 2 "$B/cllm-train" $ZR -o "$T/zr-a2.gguf" --resume "$T/zr-a.gguf.ckpt/ckpt-00000003.cllmckpt"
cmp "$T/zr-plain.gguf" "$T/zr-a2.gguf" || fail "sharded checkpoint resumed without sharding differs from the straight run"
$MPI 2 "$B/cllm-train" $ZR -o "$T/zr-b.gguf" --checkpoint-every 3 --keep 0
$MPI 2 "$B/cllm-train" $ZR --shard-optimizer -o "$T/zr-b2.gguf" --resume "$T/zr-b.gguf.ckpt/ckpt-00000003.cllmckpt"
cmp "$T/zr-shard.gguf" "$T/zr-b2.gguf" || fail "plain checkpoint resumed with sharding differs from the straight run"
# With clipping on, sharded 3 + 3 == sharded 6 (the same arithmetic either way).
ZK="$SFT --max-steps 6 --batch 1 --shuffle-buffer 3 --seed 7 --metrics /dev/null --shard-optimizer $T/p8.jsonl"
$MPI 2 "$B/cllm-train" $ZK -o "$T/zk6.gguf" --checkpoint-every 3 --keep 0
$MPI 2 "$B/cllm-train" $ZK -o "$T/zk3.gguf" --resume "$T/zk6.gguf.ckpt/ckpt-00000003.cllmckpt"
cmp "$T/zk6.gguf" "$T/zk3.gguf" || fail "sharded resume with clipping differs from the straight sharded run"
echo "ZeRO-1 resume: sharded 3 + plain 3 == plain 6, plain 3 + sharded 3 == sharded 6, sharded 3 + 3 == 6 (byte for byte)"
rc=0
$MPI 1 "$B/cllm-train" $SFT -o "$T/mix.gguf" --metrics /dev/null "$T/p8.jsonl" : \
    -np 1 "$B/cllm-train" $SFT --shard-optimizer -o "$T/mix.gguf" --metrics /dev/null "$T/p8.jsonl" > "$T/mix.err" 2>&1 || rc=$?
[ $rc != 0 ] && grep -q "ranks disagree on the device, --allreduce and --shard-optimizer" "$T/mix.err" ||
    { cat "$T/mix.err"; fail "ranks that disagree on --shard-optimizer: exit $rc"; }
echo "ranks that disagree on --shard-optimizer: refused"

# The local rank (a rank's GPU under NCCL) and the device-side checks of test_nccl (skipped without a GPU).
CLLM_TEST_ONE_NODE=1 $MPI 3 "$B/tests/test_nccl" > "$T/nccl.out" 2>&1 || { cat "$T/nccl.out"; fail "mpirun -np 3 test_nccl"; }
[ "$(grep -c '^rank [0-2] of 3, local rank [0-2] of 3' "$T/nccl.out")" = 3 ] || { cat "$T/nccl.out"; fail "local ranks"; }
echo "test_nccl on 3 ranks: local ranks 0..2 of 3"
echo "mpi tests passed"

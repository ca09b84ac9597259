#!/bin/sh
# train_kill.sh: crash safety of cllm-train. A run that checkpoints every step
# is killed with SIGKILL at 10 random moments after its first step (anywhere:
# in a step, in the middle of writing a checkpoint, between rename and fsync);
# after every kill the newest checkpoint in the directory must load, and
# resuming from it must still end with the same weights as a run never
# interrupted (byte for byte).
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$B/tools/make-tiny" -o "$T/tiny" 2>/dev/null
head -8 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p8.jsonl"
R="-m $T/tiny --objective sft --field question --template gsm8k --batch 4 --shuffle-buffer 3 -t 1
   --lr 3e-3 --max-steps 40 --seed 3 $T/p8.jsonl"
"$B/cllm-train" $R -q -o "$T/straight.gguf" > /dev/null

ck="$T/run.gguf.ckpt"
# A seeded sequence of kill delays (ms) between 50 and 700, the same every run.
delays=$(awk 'BEGIN { srand(20261125); for (i = 0; i < 10; i++) printf "%d ", 50 + int(rand() * 650) }')
kills=0
steps=""
has_ckpt() { ls "$ck" 2>/dev/null | grep -q '\.cllmckpt$'; }
had=0
for ms in $delays; do
    resume=""
    has_ckpt && resume="--resume $ck"
    # --progress: a line on stderr after each step (and its checkpoint)
    "$B/cllm-train" $R -o "$T/run.gguf" --checkpoint-every 1 --keep 2 --progress $resume > /dev/null 2>"$T/err" &
    pid=$!
    # The delay counts from the run's first step done, not from its start: the
    # start (exec, libraries, the model, a resume) took 0.2 s on an idle
    # machine and 0.6-0.8 s under load, longer than most delays, so that no
    # kill came after a first checkpoint and the test failed below (3 runs in
    # 10 with two busy loops beside it). The wait is bounded (30 s): a run that
    # failed before its first step fails the resume below.
    i=0
    while ! grep -q ': step [0-9]' "$T/err" && [ $i -lt 3000 ]; do sleep 0.01; i=$((i + 1)); done
    sleep "$(awk -v m="$ms" 'BEGIN { printf "%.3f", m / 1000 }')"
    if kill -9 $pid 2>/dev/null; then kills=$((kills + 1)); fi
    wait $pid 2>/dev/null || true
    # Whatever moment the kill hit after the first checkpoint, the directory
    # holds one that loads (cllm-train --resume DIR picks the newest valid one;
    # a dry resume of 0 further steps is not an option, so the next iteration's
    # resume is the check). A kill during the first save (the directory made,
    # nothing renamed into it yet) leaves none: the next run starts afresh.
    if has_ckpt; then
        had=1
        steps="$steps $(ls "$ck" | grep '\.cllmckpt$' | tail -1 | sed 's/ckpt-0*\([0-9]*\)\.cllmckpt/\1/')"
    elif [ $had = 1 ]; then
        fail "kill after ${ms} ms left no checkpoint in $ck, which had one: $(ls -a "$ck")"
    fi
    [ -e "$T/run.gguf" ] && break   # the run finished before the kill
done
# Finish from the newest checkpoint and compare with the uninterrupted run.
[ $had = 1 ] || fail "no run reached its first checkpoint before its kill (a machine far slower than expected)"
rm -f "$T/run.gguf"
"$B/cllm-train" $R -q -o "$T/run.gguf" --checkpoint-every 1 --keep 2 --resume "$ck" > /dev/null 2>"$T/err" \
    || { cat "$T/err" >&2; fail "resume after the kills failed"; }
cmp "$T/straight.gguf" "$T/run.gguf" || fail "weights after $kills kills and resumes differ from the straight run"
echo "train_kill: $kills SIGKILLs at $(echo $delays | tr ' ' ',') ms; newest checkpoint after each:$steps"
echo "every resume loaded, final weights equal the straight run"

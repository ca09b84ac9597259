#!/bin/sh
# signals.sh: pipes and signals. A reader that goes away ends a producer
# quietly (SIGPIPE, exit 141, nothing on stderr); SIGINT (SIGTERM) finishes
# the record in hand, closes the stream with an end record marked
# "interrupted": "SIGINT" and exits 130 (143): the stream passes --check, which
# says it is short; with -o FILE no file is left under the final name.
set -eu
B=$CLLM_BUILD
M=$CLLM_MODEL
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. SIGPIPE: cllm-gen --text and cllm-cat into head -c 1.
{ r=0; "$B/cllm-gen" -m "$M" --lines --text --max-new-tokens 64 -t 2 2>"$T/gen.err" <<'P' || r=$?; echo $r > "$T/gen.rc"; } | head -c 1 > /dev/null
Write a long story about the sea.
Write another long story.
P
rc=$(cat "$T/gen.rc")
[ "$rc" = 141 ] || [ "$rc" = 0 ] || fail "cllm-gen | head -c 1: exit $rc"
[ ! -s "$T/gen.err" ] || fail "cllm-gen | head -c 1 printed: $(cat "$T/gen.err")"
"$B/cllm-cat" -J --field question "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p.zst"
{ r=0; "$B/cllm-cat" -j "$T/p.zst" 2>"$T/cat.err" || r=$?; echo $r > "$T/cat.rc"; } | head -c 1 > /dev/null
rc=$(cat "$T/cat.rc")
[ "$rc" = 141 ] || fail "cllm-cat -j | head -c 1: exit $rc"
[ ! -s "$T/cat.err" ] || fail "cllm-cat | head -c 1 printed: $(cat "$T/cat.err")"
echo "SIGPIPE: cllm-gen exit $(cat "$T/gen.rc"), cllm-cat exit 141, nothing on stderr"

# 2. SIGINT in the middle of cllm-gen writing gen records to stdout.
head -40 "$CLLM_DATA/gsm8k_test.jsonl" > "$T/q.jsonl"
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 16 -t 2 "$T/q.jsonl" > "$T/int.zst" 2>"$T/int.err" &
pid=$!
i=0
# wait until at least one record is out (the file may not exist yet: the
# background job makes it), then interrupt
while [ "$(stat -c %s "$T/int.zst" 2>/dev/null || echo 0)" -lt 400 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -INT $pid
rc=0
wait $pid || rc=$?
[ $rc = 130 ] || fail "SIGINT: exit $rc, want 130"
n=$("$B/cllm-cat" --type gen -j "$T/int.zst" | wc -l)
[ "$n" -ge 1 ] && [ "$n" -lt 40 ] || fail "SIGINT: $n whole gen records readable"
# The stream is whole (its end record counts the n records) and says why it is short.
"$B/cllm-cat" --check "$T/int.zst" 2>"$T/check.err" || fail "an interrupted stream fails --check: $(cat "$T/check.err")"
grep -q "ok, $((n + 2)) records; 1 section interrupted (SIGINT)" "$T/check.err" || fail "SIGINT: --check says: $(cat "$T/check.err")"
"$B/cllm-cat" --type end -j "$T/int.zst" | grep -q "\"records\":$n,\"interrupted\":\"SIGINT\"" || fail "SIGINT: end record: $("$B/cllm-cat" --type end -j "$T/int.zst")"
echo "SIGINT: exit 130, $n whole records, then: $(cat "$T/check.err")"

# 2b. cllm-cat passes the mark on: a stream joined from a short one is short.
"$B/cllm-cat" "$T/int.zst" "$T/int.zst" > "$T/join.zst"
"$B/cllm-cat" --type end -j "$T/join.zst" | grep -q "\"records\":$((2 * n)),\"interrupted\":\"SIGINT\"" || fail "join lost the mark: $("$B/cllm-cat" --type end -j "$T/join.zst")"
"$B/cllm-cat" -j "$T/int.zst" | "$B/cllm-cat" -J > "$T/rt.zst"
"$B/cllm-cat" --type end -j "$T/rt.zst" | grep -q '"interrupted":"SIGINT"' || fail "JSONL round trip lost the mark"
echo "cllm-cat keeps the mark when joining and through JSONL"

# 2c. SIGTERM to cllm-traj writing to a pipe: exit 143, whole records, end record says SIGTERM.
head -8 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/tq.jsonl"
{ r=0; "$B/cllm-traj" -m "$M" --template gsm8k --max-new-tokens 48 -n 16 -t 2 "$T/tq.jsonl" 2>"$T/traj.err" || r=$?; echo $r > "$T/traj.rc"; } | {
    # read the first bytes, then stop the producer and keep reading to the end
    head -c 300 > "$T/traj.zst"; pkill -TERM -f "cllm-traj -m $M --template gsm8k --max-new-tokens 48" ; cat >> "$T/traj.zst"; }
rc=$(cat "$T/traj.rc")
[ "$rc" = 143 ] || fail "SIGTERM: cllm-traj exit $rc, want 143 ($(cat "$T/traj.err"))"
"$B/cllm-cat" --check "$T/traj.zst" 2>"$T/tcheck.err" || fail "SIGTERM: --check: $(cat "$T/tcheck.err")"
grep -q "interrupted (SIGTERM)" "$T/tcheck.err" || fail "SIGTERM: --check says: $(cat "$T/tcheck.err")"
echo "SIGTERM: cllm-traj exit 143, $(cat "$T/tcheck.err")"

# 3. SIGINT with -o FILE: no partial file under the final name.
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 16 -t 2 -o "$T/out.zst" "$T/q.jsonl" 2>/dev/null &
pid=$!
sleep 2
kill -INT $pid
wait $pid || true
[ ! -e "$T/out.zst" ] || fail "SIGINT left a partial $T/out.zst"
ls "$T" | grep -q 'out.zst.tmp' && fail "SIGINT left a temporary file"
echo "SIGINT with -o: no file left"

# 4. Every other producer of a stream: a reader that goes away ends it quietly
#    (exit 141, or 0 when it had finished first), and SIGINT leaves a whole
#    stream marked interrupted. The tiny random model keeps this fast.
"$B/tools/make-tiny" -o "$T/tiny" 2>/dev/null
TM="$T/tiny"
head -6 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p6.jsonl"
"$B/cllm-gen" -m "$TM" --template gsm8k --max-new-tokens 8 -t 1 "$T/p6.jsonl" > "$T/g.zst"
pipe_quiet() { # name command... : run it into head -c 1
    name=$1; shift
    { r=0; "$@" 2>"$T/$name.err" || r=$?; echo $r > "$T/$name.rc"; } | head -c 1 > /dev/null
    rc=$(cat "$T/$name.rc")
    [ "$rc" = 141 ] || [ "$rc" = 0 ] || fail "$name | head -c 1: exit $rc ($(cat "$T/$name.err"))"
    [ ! -s "$T/$name.err" ] || fail "$name | head -c 1 printed: $(cat "$T/$name.err")"
    printf '%s %s, ' "$name" "$rc"
}
pipe_quiet traj "$B/cllm-traj" -m "$TM" --template gsm8k -n 8 --max-new-tokens 64 -t 1 -q "$T/p6.jsonl"
pipe_quiet eval "$B/cllm-eval" -q "$T/g.zst"
pipe_quiet bench "$B/cllm-bench" -m "$TM" --template gsm8k --prompts 6 --max-new-tokens 32 --repeat 3 -t 1 -q "$T/p6.jsonl"
pipe_quiet train "$B/cllm-train" -m "$TM" --objective sft --field question --template gsm8k --batch 2 --max-steps 50 -t 1 -q -o "$T/sft.gguf" "$T/p6.jsonl"
echo "all quiet on SIGPIPE"

# SIGINT while each writes to a file through stdout, once it has written its
# header (cllm-gen and cllm-traj: sections 2 and 2c). The header comes after
# the handlers are in (cllm_cli_init, first thing in main); the wait is bounded
# by 30 s, not the 1 s it was: a program's start alone (exec, libraries) took
# 0.2 s on an idle machine and up to 0.7 s under load, and a signal before the
# handler ends it with no stream at all.
int_whole() { # name command... : interrupt it once it has written something
    name=$1; shift
    "$@" > "$T/$name.zst" 2>"$T/$name.err" &
    pid=$!
    i=0
    while [ "$(stat -c %s "$T/$name.zst" 2>/dev/null || echo 0)" -lt 100 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
    kill -INT $pid 2>/dev/null || true
    rc=0; wait $pid || rc=$?
    # each run is sized to last far longer than the wait: finishing first would test nothing
    [ $rc != 0 ] || fail "$name: finished before SIGINT; make its run longer"
    [ $rc = 130 ] || fail "$name: SIGINT: exit $rc, want 130 ($(cat "$T/$name.err"))"
    "$B/cllm-cat" --check "$T/$name.zst" 2>"$T/$name.chk" || fail "$name: SIGINT: $(cat "$T/$name.chk")"
    grep -q "interrupted (SIGINT)" "$T/$name.chk" || fail "$name: --check says $(cat "$T/$name.chk")"
    printf '%s 130 and marked, ' "$name"
}
int_whole bench "$B/cllm-bench" -m "$TM" --template gsm8k --prompts 6 --max-new-tokens 64 --repeat 500 -t 1 -q "$T/p6.jsonl"
int_whole train "$B/cllm-train" -m "$TM" --objective sft --field question --template gsm8k --batch 2 --max-steps 100000 -t 1 -q -o "$T/sft2.gguf" "$T/p6.jsonl"
echo "all whole after SIGINT"

# cllm-eval reduces its whole input: interrupted while it waits for more, it
# writes the metrics of the records read so far, marked interrupted. The same
# when the wait is for the baseline or the references (that was no stream at
# all for the baseline, "read error" and exit 1 for the references).
# The signal comes once the feeder has written all it has ($T/fed) and
# cllm-eval sleeps reading the FIFO (its /proc wchan names a pipe function):
# the pipe is then empty, all of it read. The feeder keeps the FIFO open until
# cllm-eval has exited ($T/done, at most 30 s): the signal alone must end the
# wait. (For the references it did not: a read cut short after some bytes
# came returned them, and the next read blocked until the writer closed the
# pipe.) (A fixed 1 s, with the FIFO closed after 5 s, was a race with
# cllm-eval's start: 0.2 s on an idle machine, up to 0.7 s under load.) Where
# /proc has no wchan the 30 s bound is the wait.
reads_pipe() { case $(cat "/proc/$1/wchan" 2>/dev/null) in *pipe*) return 0 ;; esac; return 1; }
# bounded at twice the signaller's 30 s: with no wchan the signal comes at 30 s, before the writer closes
hold() { : > "$T/fed"; i=0; while [ ! -e "$T/done" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done; }
# SIGINT to PID once the feeder has written all ($T/fed) and PID sleeps
# reading the pipe; then its exit status in rc, the seconds it took in
# waited, and the feeder let go ($T/done).
int_reading() {
    i=0
    while ! { [ -e "$T/fed" ] && reads_pipe $1; } && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
    kill -INT $1
    t0=$(date +%s)
    rc=0; wait $1 || rc=$?
    waited=$(( $(date +%s) - t0 ))
    : > "$T/done"
}
for what in input baseline ref; do
    rm -f "$T/fifo" "$T/fed" "$T/done"
    mkfifo "$T/fifo"
    case $what in
    input) { cat "$T/g.zst"; hold; } > "$T/fifo" &
        set -- "$T/fifo" ;;
    baseline) { head -c 100 "$T/g.zst"; hold; } > "$T/fifo" &
        set -- --baseline "$T/fifo" "$T/g.zst" ;;
    ref) { head -3 "$CLLM_DATA/gsm8k_test.jsonl"; hold; } > "$T/fifo" &
        set -- --task gsm8k --ref "$T/fifo" "$T/g.zst" ;;
    esac
    feeder=$!
    "$B/cllm-eval" "$@" > "$T/ev.zst" 2> "$T/ev.err" &
    int_reading $!
    echo "  $what: stopped ${waited}s after SIGINT"
    kill $feeder 2>/dev/null || true
    [ $waited -lt 10 ] || fail "cllm-eval: SIGINT reading the $what: it stopped only ${waited}s later, when the pipe's writer closed"
    [ $rc = 130 ] || fail "cllm-eval: SIGINT reading the $what: exit $rc, want 130 ($(cat "$T/ev.err"))"
    grep -q "(interrupted: 6 gen records read)" "$T/ev.err" || fail "cllm-eval: SIGINT reading the $what: table: $(cat "$T/ev.err")"
    "$B/cllm-cat" --check "$T/ev.zst" 2> "$T/ev.chk" || fail "cllm-eval: SIGINT reading the $what: $(cat "$T/ev.chk")"
    grep -q "interrupted (SIGINT)" "$T/ev.chk" || fail "cllm-eval: SIGINT reading the $what: --check says $(cat "$T/ev.chk")"
    "$B/cllm-cat" -j "$T/ev.zst" | grep -q '"name":"tokens_per_step"' || fail "cllm-eval: SIGINT reading the $what: no metrics"
done
echo "cllm-eval: 130, metrics of the 6 records read, marked interrupted, whether it waits for its input, the baseline or the references"
# cllm-gen and cllm-traj waiting for more JSONL prompts on a pipe: SIGINT is
# exit 130 and a stream of the answers so far, marked interrupted (the
# interrupted read was "read error: Interrupted system call", exit 1). Waiting
# for the input's first bytes (a writer that has written nothing yet), also
# cllm-bench: 130 at once and no stream (they waited for the writer to close
# the pipe).
for case in gen traj gen0 traj0 bench0; do
    rm -f "$T/fifo" "$T/fed" "$T/done"
    mkfifo "$T/fifo"
    case $case in
    *0) { hold; } > "$T/fifo" & ;;
    *) { head -2 "$CLLM_DATA/gsm8k_test.jsonl"; hold; } > "$T/fifo" & ;;
    esac
    feeder=$!
    case $case in
    gen*) "$B/cllm-gen" -m "$TM" --template gsm8k --max-new-tokens 4 -t 1 "$T/fifo" > "$T/wp.zst" 2> "$T/wp.err" & ;;
    traj*) "$B/cllm-traj" -m "$TM" --template gsm8k -n 4 --max-new-tokens 8 -t 1 "$T/fifo" > "$T/wp.zst" 2> "$T/wp.err" & ;;
    bench0) "$B/cllm-bench" -m "$TM" --template gsm8k --max-new-tokens 4 -t 1 "$T/fifo" > "$T/wp.zst" 2> "$T/wp.err" & ;;
    esac
    int_reading $!
    kill $feeder 2>/dev/null || true
    [ $waited -lt 10 ] || fail "$case: SIGINT waiting for prompts: it stopped only ${waited}s later, when the pipe's writer closed"
    [ $rc = 130 ] || fail "$case: SIGINT waiting for prompts: exit $rc, want 130 ($(cat "$T/wp.err"))"
    case $case in
    *0) [ ! -s "$T/wp.zst" ] || fail "$case: SIGINT before any prompt: a stream was written" ;;
    *) "$B/cllm-cat" --check "$T/wp.zst" 2> "$T/wp.chk" && grep -q "interrupted (SIGINT)" "$T/wp.chk" ||
        fail "$case: SIGINT waiting for JSONL prompts: --check says $(cat "$T/wp.chk")" ;;
    esac
done
echo "cllm-gen, cllm-traj: 130 and a stream marked interrupted when SIGINT comes as they wait for JSONL prompts; with bench, 130 at once before the first bytes"

# 6. A consumer of a short stream says so: cllm-eval on the gen stream cut by
#    SIGINT above, and cllm-traj, cllm-gen and cllm-train (SFT) on a prompt
#    stream whose end record is marked interrupted: one warning each, exit 0.
warn_short() { # name command...: exit 0 and exactly one warning naming the signal
    name=$1; shift
    rc=0; "$@" > /dev/null 2> "$T/$name.warn" || rc=$?
    [ $rc = 0 ] || fail "$name on a short stream: exit $rc ($(cat "$T/$name.warn"))"
    [ "$(grep -c "warning: .*stopped by SIG" "$T/$name.warn")" = 1 ] || fail "$name on a short stream: stderr: $(cat "$T/$name.warn")"
}
warn_short eval "$B/cllm-eval" -q "$T/int.zst"
"$B/cllm-cat" -j "$T/p.zst" | head -n 7 > "$T/ps.jsonl"   # the header and 6 prompts
echo '{"type":"end","records":6,"interrupted":"SIGTERM"}' >> "$T/ps.jsonl"
"$B/cllm-cat" -J "$T/ps.jsonl" > "$T/ps.zst"
warn_short traj "$B/cllm-traj" -m "$TM" -n 8 --max-new-tokens 8 -t 1 -q -f "$T/ps.zst"
warn_short gen "$B/cllm-gen" -m "$TM" --max-new-tokens 8 -t 1 -f "$T/ps.zst"
warn_short train "$B/cllm-train" -m "$TM" --objective sft --answer-field answer --epochs 2 --batch 2 -t 1 -q -o "$T/sft3.gguf" "$T/ps.zst"
"$B/cllm-eval" -q "$T/g.zst" > /dev/null 2> "$T/whole.warn" && [ ! -s "$T/whole.warn" ] || fail "cllm-eval warned on a whole stream: $(cat "$T/whole.warn")"
echo "short inputs: one warning each from cllm-eval, cllm-traj, cllm-gen, cllm-train (2 epochs); none for a whole stream"

# 7. SIGINT while cllm-gen decodes a prompt: no new prompt is taken, but the
#    prompt in hand is finished and written (cllm-gen(1)). Prompt 0 ends in
#    EOS after a few hundred tokens; prompt 1 runs for seconds (12000 tokens),
#    and the signal comes as soon as prompt 0's record is out (tiny-qwen2:
#    its answers do not soon repeat one token, so they reach the EOS).
printf '{"tokens":[24,92,49,137,133]}\n{"tokens":[5,6,7,8]}\n{"tokens":[9,10]}\n' > "$T/hand.jsonl"
"$B/cllm-gen" -m tests/golden/tiny-qwen2 --max-new-tokens 12000 -t 1 "$T/hand.jsonl" > "$T/hand.zst" 2> "$T/hand.err" &
pid=$!
i=0
while [ "$("$B/cllm-cat" --type gen -j "$T/hand.zst" 2>/dev/null | wc -l)" -lt 1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -INT $pid
rc=0
wait $pid || rc=$?
[ $rc = 130 ] || fail "SIGINT in a prompt: cllm-gen exit $rc, want 130 ($(cat "$T/hand.err"))"
"$B/cllm-cat" --check "$T/hand.zst" 2> "$T/hand.chk" || fail "SIGINT in a prompt: $(cat "$T/hand.chk")"
"$B/cllm-cat" --type gen -j "$T/hand.zst" > "$T/hand.jsonl.out"
[ "$(wc -l < "$T/hand.jsonl.out")" = 2 ] && grep -q '"id":1,' "$T/hand.jsonl.out" \
    || fail "SIGINT in a prompt: the prompt in hand was not finished: $(cut -c1-60 "$T/hand.jsonl.out")"
echo "SIGINT while decoding: exit 130, the prompt in hand finished, no new one taken"

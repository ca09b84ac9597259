#!/bin/sh
# bench-decode-batch.sh: decoding speed at --batch 1 against --batch B in one
# script (the baseline runs on the same machine, minutes apart), and the
# check that both wrote the same records.
#
#   tests/tools/bench-decode-batch.sh [BUILD] [PROMPTS] [B] [MAX_NEW] [THREADS] [DEVICE] [WHAT]
# WHAT: traj (cllm-traj, the default), ar or jacobi (cllm-gen --method); window:
# cllm-traj at --batch B with --full-window (every window row fed: the
# baseline) against the default (only the rows that can change).
# Defaults: build, 16 GSM8K training prompts ($CLLM_DATA, default ../shared/data),
# B = 8, 64 new tokens, n = 16, 2 threads, device cpu. Prints, per batch size,
# wall time, tokens made and tokens/s (trajectory tokens for traj), then the
# ratio. A benchmark, not a test: it fails only if a run fails or the outputs
# differ (time_s aside).
set -eu
BUILD=${1:-build}
NP=${2:-16}
BB=${3:-8}
NEW=${4:-64}
TH=${5:-2}
DEV=${6:-cpu}
WHAT=${7:-traj}
M=${CLLM_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
D=${CLLM_DATA:-../shared/data}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
head -"$NP" "$D/gsm8k_train.jsonl" > "$T/p.jsonl"
now() { date +%s.%N; }
case $WHAT in
traj|window) TYPE=traj ;;
ar|jacobi) TYPE=gen ;;
*) echo "bench-decode-batch: WHAT is traj, window, ar or jacobi" >&2; exit 2 ;;
esac
run() { # batch [label]: label 1 with WHAT=window is the --full-window run
    t0=$(now)
    if [ "$TYPE" = traj ]; then
        b=$1 full=
        [ "$WHAT" = window ] && { b=$BB; [ "$1" = 1 ] && full=--full-window; }
        "$BUILD/cllm-traj" -m "$M" --template gsm8k -n 16 --max-new-tokens "$NEW" -t "$TH" --device "$DEV" \
            --batch "$b" $full --progress -f -o "$T/b$1.zst" "$T/p.jsonl" 2> "$T/e$1"
    else
        "$BUILD/cllm-gen" -m "$M" --template gsm8k --method "$WHAT" -n 16 --max-new-tokens "$NEW" -t "$TH" \
            --device "$DEV" --batch "$1" -f -o "$T/b$1.zst" "$T/p.jsonl" 2> "$T/e$1"
    fi
    t1=$(now)
    if [ "$TYPE" = traj ]; then
        tok=$(tr '\r' '\n' < "$T/e$1" | grep -o '[0-9]* tokens,' | tail -1 | cut -d' ' -f1)
    else
        tok=$("$BUILD/cllm-cat" --type gen -j "$T/b$1.zst" | grep -o '"output":\[[0-9,]*\]' | tr -cd ',]' | wc -c)
    fi
    echo "$1 $t0 $t1 $tok" >> "$T/times"
    what="batch $1"
    [ "$WHAT" = window ] && { [ "$1" = 1 ] && what="full windows" || what="changing rows"; }
    awk -v w="$what" -v t0="$t0" -v t1="$t1" -v n="$tok" \
        'BEGIN { printf "%-14s %8.1f s  %6d tokens  %7.2f tokens/s\n", w, t1 - t0, n, n / (t1 - t0) }'
}
echo "$WHAT: $NP prompts, n = 16, $NEW new tokens, $TH threads, device $DEV, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
run 1
run "$BB"
"$BUILD/cllm-cat" --type $TYPE -j "$T/b1.zst" | sed 's/"time_s":[^,]*,//' > "$T/b1.jsonl"
"$BUILD/cllm-cat" --type $TYPE -j "$T/b$BB.zst" | sed 's/"time_s":[^,]*,//' | cmp -s - "$T/b1.jsonl" ||
    { echo "FAIL: the records differ (run 2 vs run 1)" >&2; exit 1; }
awk -v w="$WHAT" 'NR == 1 { r1 = $4 / ($3 - $2) }
    NR == 2 { if (w == "window") printf "speed-up %.2fx (only the changing rows vs full windows, batch %d); the records are identical\n", ($4 / ($3 - $2)) / r1, $1;
              else printf "speed-up %.2fx (batch %d vs 1); the records are identical\n", ($4 / ($3 - $2)) / r1, $1 }' "$T/times"

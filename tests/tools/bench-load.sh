#!/bin/sh
# bench-load.sh: how long loading a model takes on one start-up thread and on
# the default (every CPU of the affinity mask, up to 16; libcore/startup.h),
# each load in a fresh process (a cold parameter block: its page faults are
# part of the load), alternating the two, K rounds; prints the medians and
# their ratio. Not a test: a benchmark, run by hand.
#   tests/tools/bench-load.sh [MODEL [K [BUILD]]]
# MODEL: a GGUF file or HF directory (default $CLLM_MODEL, else the default
# model under models/). OPENBLAS_NUM_THREADS=1 keeps OpenBLAS' idle threads
# from spinning beside the loader (they would on a CPU build; the GPU build
# has no OpenBLAS).
set -eu
model=${1:-${CLLM_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}}
k=${2:-9}
bin=${3:-${CLLM_BUILD:-build}}/tools/cllm-model-info
export OPENBLAS_NUM_THREADS=1
one="" all=""
i=0
while [ "$i" -lt "$k" ]; do
    one="$one $("$bin" "$model" --threads 1 --time | awk '$1 == "load_s" { print $2 }')"
    out=$("$bin" "$model" --time)
    all="$all $(echo "$out" | awk '$1 == "load_s" { print $2 }')"
    n=$(echo "$out" | awk '$1 == "startup_threads" { print $2 }')
    i=$((i + 1))
done
median() { echo "$1" | tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
m1=$(median "$one")
mn=$(median "$all")
echo "bench-load: $model, $k loads each, a fresh process each"
echo "  1 start-up thread:  median $m1 s  ($one )"
echo "  $n start-up threads: median $mn s  ($all )"
awk -v a="$m1" -v b="$mn" -v n="$n" 'BEGIN { printf "  %s threads / 1: %.2fx faster\n", n, a / b }'

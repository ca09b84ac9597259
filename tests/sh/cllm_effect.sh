#!/bin/sh
# cllm_effect.sh: the CLLM effect end to end on a tiny model (issue 6):
# make-tiny -> cllm-train --objective sft (memorise 8 short GSM8K answers) ->
# cllm-traj (several seeds, --aug) -> cllm-train (global consistency + AR) ->
# cllm-gen AR/Jacobi -> cllm-eval. Bars: tokens/step of the CLLM >= 1.5x its
# base's (same prompts, block size, init and seed), Jacobi == AR for the CLLM
# on every prompt, CLLM greedy == base greedy on >= 75 % of the prompts.
# The recipe and every configuration tried: docs/TRAINING.md, "The CLLM effect
# on a tiny model". About 100 s of CPU time (90 s wall on 2 cores, -t 2);
# CLLM_EFFECT_LONG=1 runs a longer variant (16 trajectory seeds, 1200 steps).
# Knobs for experiments: CLLM_STEPS, CLLM_LR, CLLM_ARW, CLLM_SEEDS, SFT_STEPS,
# TINY_SEED, CLLM_THREADS, CLLM_TRAJ_ARGS (default --aug), CLLM_TRAIN_ARGS
# (extra cllm-train options).
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
TH=${CLLM_THREADS:-2}
if [ "${CLLM_EFFECT_LONG:-0}" = 1 ]; then seeds=16 steps=1200; else seeds=8 steps=600; fi
seeds=${CLLM_SEEDS:-$seeds}
steps=${CLLM_STEPS:-$steps}
P="--field question --template gsm8k"
N=16          # Jacobi block
MAXT=${CLLM_MAXT:-64}  # tokens per answer for trajectories and evaluation (4 blocks)
G="$P --max-new-tokens $MAXT -t $TH --seed 1000"   # eval seed: not a trajectory seed

# 8 short GSM8K items (question + answer under 330 bytes of JSON: 65-119 tokens
# of answer with the tiny model's 512-token tokenizer).
head -200 "$CLLM_DATA/gsm8k_train.jsonl" | awk 'length($0) < 330' | head -8 > "$T/p.jsonl"
[ "$(wc -l < "$T/p.jsonl")" = 8 ] || { echo "FAIL: fewer than 8 short GSM8K items" >&2; exit 1; }

metric() { # metric NAME FILE [BASELINE]: an overall cllm-eval metric
    name=$1 f=$2; shift 2
    "$B/cllm-eval" --summary -q ${1:+--baseline "$1"} --task gsm8k "$f" | "$B/cllm-cat" -j |
        grep "\"name\":\"$name\"" | head -1 | sed 's/.*"value":\([^,}]*\).*/\1/'
}

# The base: a random 2-layer, 128-wide model taught the 8 answers by SFT.
"$B/tools/make-tiny" -o "$T/tiny" --dim 128 --ff 256 --seed ${TINY_SEED:-1} 2>/dev/null
"$B/cllm-train" -m "$T/tiny" -o "$T/base" --objective sft $P --lr 3e-3 --warmup 0.05 \
    --max-steps ${SFT_STEPS:-120} --batch 8 -t $TH -q "$T/p.jsonl" > /dev/null
"$B/cllm-gen" -m "$T/base" $P --max-new-tokens 128 -t $TH "$T/p.jsonl" > "$T/full.zst"
acc=$(metric accuracy "$T/full.zst")
echo "base: GSM8K answers reproduced (AR, 128 tokens): $acc"
awk -v a="$acc" 'BEGIN { exit !(a == 1) }' || { echo "FAIL: the base did not memorise the answers" >&2; exit 1; }
"$B/cllm-gen" -m "$T/base" $G "$T/p.jsonl" > "$T/ar.zst"
"$B/cllm-gen" -m "$T/base" $G --method jacobi -n $N "$T/p.jsonl" > "$T/jac.zst"

# Trajectories: one cllm-traj run per seed (different random windows and
# augmented states for the same fixed points), concatenated.
s=0
while [ $s -lt $seeds ]; do
    "$B/cllm-traj" -m "$T/base" -n $N --max-new-tokens $MAXT $P ${CLLM_TRAJ_ARGS---aug} --seed $s -q -t $TH "$T/p.jsonl" >> "$T/traj.zst"
    s=$((s + 1))
done
recs=$("$B/cllm-cat" -j "$T/traj.zst" | grep -c '"type":"traj"')
echo "trajectories: $seeds seeds, $recs records"

# The CLLM: global consistency (summed over the window) + 10 x AR, lr 3e-3
# with a cosine schedule, batch 4.
"$B/cllm-train" -m "$T/base" -o "$T/cllm" --lr ${CLLM_LR:-3e-3} --warmup 0.05 --ar-weight ${CLLM_ARW:-10} \
    --max-steps $steps --batch 4 ${CLLM_TRAIN_ARGS:-} -t $TH -q "$T/traj.zst" > /dev/null
"$B/cllm-gen" -m "$T/cllm" $G "$T/p.jsonl" > "$T/car.zst"
"$B/cllm-gen" -m "$T/cllm" $G --method jacobi -n $N "$T/p.jsonl" > "$T/cjac.zst"

base=$(metric tokens_per_step "$T/jac.zst")
cllm=$(metric tokens_per_step "$T/cjac.zst")
bj=$(metric exact_match "$T/jac.zst" "$T/ar.zst")
cj=$(metric exact_match "$T/cjac.zst" "$T/car.zst")
agree=$(metric exact_match "$T/car.zst" "$T/ar.zst")
ratio=$(awk -v a="$base" -v b="$cllm" 'BEGIN { printf "%.3f", b / a }')
printf 'tokens/step (Jacobi, n=%d, %d tokens): base %.3f, CLLM %.3f, ratio %s (bar 1.5)\n' $N $MAXT "$base" "$cllm" "$ratio"
echo "Jacobi == AR: base $bj, CLLM $cj (bar 1)"
echo "CLLM greedy == base greedy: $agree of the prompts (bar 0.75)"
fail=0
awk -v r="$ratio" 'BEGIN { exit !(r >= 1.5) }' || { echo "FAIL: tokens/step ratio $ratio < 1.5" >&2; fail=1; }
awk -v a="$cj" 'BEGIN { exit !(a == 1) }' || { echo "FAIL: the CLLM's Jacobi output differs from its AR output" >&2; fail=1; }
awk -v a="$agree" 'BEGIN { exit !(a >= 0.75) }' || { echo "FAIL: the CLLM kept only $agree of the base's answers" >&2; fail=1; }
exit $fail

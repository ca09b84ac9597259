#!/bin/sh
# batch.sh: cllm-gen --batch B decodes B prompts per forward call and writes,
# in input order, exactly what --batch 1 writes (time_s aside): greedy AR and
# Jacobi with --trace on the tiny model (17 prompts of 1..300 token ids, some
# answers ending in EOS, a KV cache that grows while others are in flight)
# and on SmolLM2 (4 GSM8K prompts); --text keeps the order too; a full output
# queue (one long answer ahead of many short ones).
# (cllm-traj's --batch equality is in traj.sh.)
set -eu
B=$CLLM_BUILD
M=$CLLM_MODEL
TM=tests/golden/tiny-qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
recs() { "$B/cllm-cat" --type gen -j "$1" | sed 's/"time_s":[^,]*,//'; }

# 17 prompts of random ids, the same as traj.sh's
sed -n '/^cat > "\$T\/tiny.jsonl"/,/^EOF$/p' tests/sh/traj.sh | sed '1d;$d' > "$T/tiny.jsonl"
[ "$(wc -l < "$T/tiny.jsonl")" = 17 ] || fail "could not take the 17 prompts from traj.sh"
for method in ar jacobi; do
    gen() { "$B/cllm-gen" -m "$TM" --method $method -n 8 --max-new-tokens 300 --trace "$@" "$T/tiny.jsonl"; }
    gen --batch 1 > "$T/t1.zst"
    recs "$T/t1.zst" > "$T/t1.jsonl"
    [ "$(wc -l < "$T/t1.jsonl")" = 17 ] || fail "tiny $method: expected 17 records"
    grep -q '"eos":true' "$T/t1.jsonl" || fail "tiny $method: no answer ends in EOS"
    for b in 3 8 17; do
        gen --batch $b > "$T/tb.zst"
        recs "$T/tb.zst" | cmp - "$T/t1.jsonl" || fail "tiny $method: --batch $b differs from --batch 1"
    done
done
echo "tiny: cllm-gen --batch 3, 8, 17 == --batch 1 (AR and Jacobi, traces included)"
# A long answer first, then 12 that end in EOS within 3 tokens, at --batch 2:
# the second slot finishes prompt after prompt while the first one's output
# holds the queue; at 4*B+1 = 9 jobs waiting it must stop taking prompts
# (the queue is full), and all 13 records still come out in input order.
{ head -1 "$T/tiny.jsonl"; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do tail -1 "$T/tiny.jsonl"; done; } > "$T/q.jsonl"
"$B/cllm-gen" -m "$TM" --max-new-tokens 300 --batch 1 "$T/q.jsonl" > "$T/q1.zst"
recs "$T/q1.zst" > "$T/q1.jsonl"
[ "$(grep -c '"eos":true' "$T/q1.jsonl")" = 12 ] || fail "queue: expected 12 answers ending in EOS"
"$B/cllm-gen" -m "$TM" --max-new-tokens 300 --batch 2 "$T/q.jsonl" > "$T/q2.zst"
recs "$T/q2.zst" | cmp - "$T/q1.jsonl" || fail "queue: --batch 2 differs from --batch 1"

head -4 "$CLLM_DATA/gsm8k_test.jsonl" > "$T/p.jsonl"
for method in ar jacobi; do
    gen() { "$B/cllm-gen" -m "$M" --template gsm8k --method $method -n 16 --max-new-tokens 24 -t 2 "$@" "$T/p.jsonl"; }
    gen --batch 1 > "$T/s1.zst"
    gen --batch 4 > "$T/s4.zst"
    recs "$T/s1.zst" > "$T/s1.jsonl"
    recs "$T/s4.zst" | cmp - "$T/s1.jsonl" || fail "SmolLM2 $method: --batch 4 differs from --batch 1"
done
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 12 -t 2 --text --batch 1 "$T/p.jsonl" > "$T/x1.txt"
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 12 -t 2 --text --batch 3 "$T/p.jsonl" > "$T/x3.txt"
cmp "$T/x1.txt" "$T/x3.txt" || fail "--text --batch 3 differs from --batch 1"
[ "$(wc -l < "$T/x3.txt")" = 4 ] || fail "--text --batch 3: expected 4 lines"
echo "SmolLM2: cllm-gen --batch 4 == --batch 1 (AR and Jacobi), --text in order"
echo "batch tests passed"

#!/bin/sh
# gen.sh: cllm-gen end to end on SmolLM2: a chat answer as text, gen records
# that pass --check, Jacobi output equal to AR output through the CLI, traces,
# and prompts from every kind of input.
set -eu
B=$CLLM_BUILD
M=$CLLM_MODEL
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. A chat answer, streamed as text.
ans=$(echo "What is 2+2?" | "$B/cllm-gen" -m "$M" --chat --text --max-new-tokens 40 -t 2)
echo "answer: $ans"
echo "$ans" | grep -q 4 || fail "no 4 in the answer to 2+2"

# 2. GSM8K prompts, AR and Jacobi (n = 16, traced): both streams check, and the
# outputs are equal token for token.
head -3 "$CLLM_DATA/gsm8k_test.jsonl" > "$T/p.jsonl"
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 48 -t 2 "$T/p.jsonl" > "$T/ar.zst"
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 48 -t 2 --method jacobi -n 16 --trace "$T/p.jsonl" > "$T/jac.zst"
"$B/cllm-cat" --check -q "$T/ar.zst"
"$B/cllm-cat" --check -q "$T/jac.zst"
"$B/cllm-cat" --type gen -j "$T/ar.zst" | sed 's/.*"output":\(\[[^]]*\]\).*/\1/' > "$T/ar.out"
"$B/cllm-cat" --type gen -j "$T/jac.zst" | sed 's/.*"output":\(\[[^]]*\]\).*/\1/' > "$T/jac.out"
[ "$(wc -l < "$T/ar.out")" = 3 ] || fail "expected 3 gen records"
cmp "$T/ar.out" "$T/jac.out" || fail "Jacobi output differs from AR output"
"$B/cllm-cat" --type gen -j "$T/jac.zst" | grep -q '"method":"jacobi","n":16' || fail "method/n fields"
"$B/cllm-cat" --type gen -j "$T/jac.zst" | grep -q '"accepted":\[' || fail "--trace adds accepted"
"$B/cllm-cat" --type gen -j "$T/ar.zst" | grep -q '"steps":48,' || fail "AR takes one pass per token"

# 3. The same prompts as prompt records and as token ids give the same outputs.
"$B/cllm-cat" -J --field question "$T/p.jsonl" > "$T/p.zst"
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 48 -t 2 "$T/p.zst" | "$B/cllm-cat" --type gen -j \
    | sed 's/.*"output":\(\[[^]]*\]\).*/\1/' | cmp - "$T/ar.out" || fail "prompt records differ from JSONL"
"$B/cllm-cat" --type gen -j "$T/ar.zst" | sed 's/.*\("prompt":\[[^]]*\]\).*/{"tokens":[\1]}/; s/"tokens":\["prompt":/"tokens":/; s/\]\]}/]}/' > "$T/ids.jsonl"
"$B/cllm-gen" -m "$M" --max-new-tokens 48 -t 2 "$T/ids.jsonl" | "$B/cllm-cat" --type gen -j \
    | sed 's/.*"output":\(\[[^]]*\]\).*/\1/' | cmp - "$T/ar.out" || fail "token-id prompts differ"

# 4. Text lines, sharding.
printf 'one\n\ntwo\nthree\n' | "$B/cllm-gen" -m "$M" --lines --shard 1/2 --max-new-tokens 2 | "$B/cllm-cat" --type gen -j > "$T/l.jsonl"
[ "$(wc -l < "$T/l.jsonl")" = 1 ] && grep -q '"id":1,' "$T/l.jsonl" || fail "--lines --shard"
echo "gen tests passed"

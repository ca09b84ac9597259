#!/bin/sh
# eval.sh: cllm-gen --trace | cllm-eval on SmolLM2 (3 GSM8K test prompts, 32
# new tokens) with an AR baseline; the metric stream checks, tokens/step lies
# in [1, n]; --show, --html; usage errors; a cllm-bench smoke run.
set -eu
B=$CLLM_BUILD
M=$CLLM_MODEL
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# value of the overall metric $2 in the JSONL $1
overall() { grep "\"name\":\"$2\",.*\"scope\":\"all\"" "$1" | sed 's/.*"value":\([^,]*\),.*/\1/'; }

head -3 "$CLLM_DATA/gsm8k_test.jsonl" > "$T/p.jsonl"
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 32 -t 2 "$T/p.jsonl" > "$T/ar.zst"

# 1. The pipeline: traced Jacobi straight into cllm-eval, AR as the baseline,
# GSM8K answers from the gen records' answer field.
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 32 -t 2 --method jacobi -n 16 --trace "$T/p.jsonl" \
    | tee "$T/jac.zst" | "$B/cllm-eval" --task gsm8k --baseline "$T/ar.zst" > "$T/m.zst" 2> "$T/table.txt"
cat "$T/table.txt"
"$B/cllm-cat" --check -q "$T/m.zst" || fail "metric stream does not check"
"$B/cllm-cat" -j "$T/m.zst" > "$T/m.jsonl"
tps=$(overall "$T/m.jsonl" tokens_per_step)
echo "tokens/step: $tps"
awk -v x="$tps" 'BEGIN { exit !(x >= 1 && x <= 16) }' || fail "tokens/step $tps not in [1, 16]"
[ "$(overall "$T/m.jsonl" exact_match)" = 1.0 ] || fail "Jacobi output differs from AR output"
[ "$(overall "$T/m.jsonl" baseline_prompts)" = 3.0 ] || fail "baseline not matched"
[ "$(overall "$T/m.jsonl" answered)" = 3.0 ] || fail "references not read from the gen records"
[ -n "$(overall "$T/m.jsonl" stationary)" ] || fail "no stationary count from the traces"
[ -n "$(overall "$T/m.jsonl" speedup)" ] || fail "no speedup"
[ "$(grep -c '"name":"tokens_per_step".*"meta":{"id"' "$T/m.jsonl")" = 3 ] || fail "per-prompt records"
grep -q '^all ' "$T/table.txt" || fail "no overall row in the table"

# 2. References from --ref (the test JSONL's target field); AR evaluated alone.
"$B/cllm-eval" --task gsm8k --ref "$T/p.jsonl" --summary -q "$T/ar.zst" | "$B/cllm-cat" -j > "$T/a.jsonl"
[ "$(overall "$T/a.jsonl" tokens_per_step)" = 1.0 ] || fail "AR tokens/step is not 1"
[ "$(overall "$T/a.jsonl" passes_per_block)" = 1.0 ] || fail "AR passes/block is not 1"
! grep -q '"meta":{"id"' "$T/a.jsonl" || fail "--summary wrote per-prompt records"

# 3. --show draws one line per pass; with a model, token text; --color=always.
"$B/cllm-eval" --show 1 -m "$M" "$T/jac.zst" > "$T/show.txt"
head -5 "$T/show.txt"
passes=$("$B/cllm-cat" --type gen -j "$T/jac.zst" | sed -n 2p | sed 's/.*"steps":\([0-9]*\).*/\1/')
[ "$(grep -c '^ *[0-9]* +[0-9]' "$T/show.txt")" = $((passes - 1)) ] || fail "--show: not one line per pass"
"$B/cllm-eval" --show 1 --color=always "$T/jac.zst" | grep -q "$(printf '\033')\[" || fail "--color=always"
! "$B/cllm-eval" --show 1 "$T/jac.zst" | grep -q "$(printf '\033')" || fail "colour on a pipe"

# 4. --html: a self-contained report with three plots.
"$B/cllm-eval" --baseline "$T/ar.zst" --html "$T/r.html" -q "$T/jac.zst" > /dev/null
[ "$(grep -o '<svg' "$T/r.html" | wc -l)" = 3 ] || fail "--html: expected 3 plots"
! grep -qi '<script\|src=\|href=' "$T/r.html" || fail "--html: not self-contained"

# 5. Usage and input errors.
set +e
"$B/cllm-eval" --color=sometimes "$T/jac.zst" > /dev/null 2>&1; [ $? = 2 ] || fail "bad --color is not a usage error"
"$B/cllm-eval" --ref "$T/p.jsonl" "$T/jac.zst" > /dev/null 2>&1; [ $? = 2 ] || fail "--ref without --task"
"$B/cllm-eval" --task gsm8k < "$T/p.jsonl" > /dev/null 2> "$T/err"; [ $? = 1 ] || fail "JSONL as gen input"
"$B/cllm-eval" --show 99 "$T/jac.zst" > /dev/null 2> "$T/err"; [ $? = 1 ] || fail "--show of a missing id"
grep -q "^cllm-eval: --show 99" "$T/err" || fail "message: $(cat "$T/err")"
head -c 300 "$T/jac.zst" | "$B/cllm-eval" > /dev/null 2>&1; [ $? = 1 ] || fail "truncated input not reported"
set -e

# 6. cllm-bench smoke run: 2 prompts, 16 tokens, one repeat.
"$B/cllm-bench" -m "$M" --template gsm8k --prompts 2 --max-new-tokens 16 --repeat 1 -t 2 "$CLLM_DATA/gsm8k_test.jsonl" \
    > "$T/b.zst" 2> "$T/b.txt"
cat "$T/b.txt"
"$B/cllm-cat" --check -q "$T/b.zst" || fail "bench metric stream does not check"
grep -q 'jacobi n=16' "$T/b.txt" || fail "bench table"
"$B/cllm-cat" -j "$T/b.zst" | grep '"name":"tokens_per_step"' | grep -q '"method":"ar"' || fail "bench AR metrics"
grep -q '2/2' "$T/b.txt" || fail "bench: Jacobi output differs from AR"
echo "eval tests passed"

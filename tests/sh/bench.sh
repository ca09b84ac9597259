#!/bin/sh
# bench.sh: cllm-bench's numbers on the tiny model, checked against what
# cllm-bench(1) defines them to be, never against a recorded run, and never as
# speeds: tokens and passes are the sums of cllm-gen's gen records for the same
# prompts, seed and block (bench seeds its guesses "as cllm-gen seeds them");
# the ratios are the documented quotients of the recorded sums (tokens/step,
# tokens after the first over decode_s, decode_s over the passes after the
# prompt's, AR's decode_s over this one's); agree counts the prompts whose
# Jacobi output equals AR's; the decoding phase is part of the whole call; the
# meta fields; the table; --prompts; --vs with two copies of one model;
# --max-new-tokens 1 (no pass after the prompt's: no ms_per_pass); --init pad;
# bad inputs, --vs with another vocabulary. (eval.sh has a smoke run on
# SmolLM2, signals.sh the interrupted stream, tests/bad/bench.tsv the options.)
set -eu
B=$CLLM_BUILD
TM=tests/golden/tiny-qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# metric value: met JSONL NAME METHOD [MODEL]
met() {
    grep "\"name\":\"$2\"," "$1" | grep "\"method\":\"$3\"" | grep "\"model\":\"${4:-tiny-qwen2}\"" \
        | sed 's/.*"value":\([^,]*\),.*/\1/'
}
# awk condition on numbers: ok 'a == b' a b (relative tolerance for quotients)
near() { awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; s = b < 0 ? -b : b; exit !(d <= 1e-9 * s + 1e-12) }'; }
count() { grep -c "$@" || true; }

# 17 prompts of 1..307 token ids (traj.sh's): some answers end in EOS, the long
# ones need a KV cache of more than 512 positions.
sed -n '/^cat > "\$T\/tiny.jsonl"/,/^EOF$/p' tests/sh/traj.sh | sed '1d;$d' > "$T/p.jsonl"
np=$(wc -l < "$T/p.jsonl")
[ "$np" = 17 ] || fail "could not take the 17 prompts from traj.sh"

# cllm-gen's view of the same work: per-prompt output lengths and passes.
for method in ar jacobi; do
    "$B/cllm-gen" -m "$TM" --method $method -n 8 --seed 5 --max-new-tokens 300 "$T/p.jsonl" \
        | "$B/cllm-cat" --type gen -j > "$T/g_$method.jsonl"
    [ "$(wc -l < "$T/g_$method.jsonl")" = 17 ] || fail "cllm-gen $method: expected 17 records"
done
# tokens: sum of output lengths; steps: sum of steps; nz: outputs with a token
sums() {
    sed 's/.*"output":\[\([^]]*\)\].*"steps":\([0-9]*\),.*/\1 \2/' "$1" \
        | awk '{ if (NF == 1) { n = 0; s = $1 } else { n = split($1, a, ","); s = $2 }   # an empty output: one field
                 t += n; st += s; nz += (n > 0) } END { print t, st, nz }'
}
outputs() { sed 's/.*"output":\(\[[^]]*\]\).*/\1/' "$1"; }
set -- $(sums "$T/g_ar.jsonl"); ar_tok=$1 ar_steps=$2 ar_nz=$3
set -- $(sums "$T/g_jacobi.jsonl"); j_tok=$1 j_steps=$2 j_nz=$3
outputs "$T/g_ar.jsonl" > "$T/o_ar"; outputs "$T/g_jacobi.jsonl" > "$T/o_j"
differ=$(paste -d' ' "$T/o_ar" "$T/o_j" | awk '$1 != $2' | wc -l)
[ "$ar_tok" -gt 0 ] && [ "$j_steps" -lt "$ar_steps" ] || fail "gen sums: AR $ar_tok/$ar_steps, Jacobi $j_tok/$j_steps"

# 1. One model, 3 repeats: sums, quotients, meta.
"$B/cllm-bench" -m "$TM" -n 8 --seed 5 --max-new-tokens 300 --repeat 3 "$T/p.jsonl" > "$T/b.zst" 2> "$T/b.txt"
"$B/cllm-cat" --check -q "$T/b.zst" || fail "bench stream does not check"
"$B/cllm-cat" -j --type metric "$T/b.zst" > "$T/b.jsonl"
[ "$(wc -l < "$T/b.jsonl")" = 20 ] || fail "expected 10 metrics per method, got $(wc -l < "$T/b.jsonl") records"
for k in ar jacobi; do
    if [ $k = ar ]; then tok=$ar_tok steps=$ar_steps nz=$ar_nz n=1; else tok=$j_tok steps=$j_steps nz=$j_nz n=8; fi
    [ "$(count "\"method\":\"$k\",\"n\":$n,\"prompts\":17,\"repeat\":3}" "$T/b.jsonl")" = 10 ] || fail "$k: meta"
    near "$(met "$T/b.jsonl" tokens $k)" "$tok" || fail "$k: tokens $(met "$T/b.jsonl" tokens $k), gen records say $tok"
    near "$(met "$T/b.jsonl" steps $k)" "$steps" || fail "$k: steps $(met "$T/b.jsonl" steps $k), gen records say $steps"
    near "$(met "$T/b.jsonl" tokens_per_step $k)" "$(awk "BEGIN { printf \"%.17g\", $tok / $steps }")" || fail "$k: tokens_per_step"
    dec=$(met "$T/b.jsonl" decode_s $k) e2e=$(met "$T/b.jsonl" e2e_s $k)
    # the decoding phase (from the first token) lies inside the whole call,
    # which also holds the prompt's pass: strictly shorter, prompt by prompt
    # and so for the sums of medians too
    awk "BEGIN { exit !($dec > 0 && $dec < $e2e) }" || fail "$k: decode_s $dec, e2e_s $e2e"
    near "$(met "$T/b.jsonl" tokens_per_s $k)" "$(awk "BEGIN { printf \"%.17g\", ($tok - $nz) / $dec }")" \
        || fail "$k: tokens_per_s is not (tokens - first tokens) / decode_s"
    near "$(met "$T/b.jsonl" ms_per_pass $k)" "$(awk "BEGIN { printf \"%.17g\", 1000 * $dec / ($steps - $np) }")" \
        || fail "$k: ms_per_pass is not decode_s / passes after the prompt's"
    near "$(met "$T/b.jsonl" speedup $k)" "$(awk "BEGIN { printf \"%.17g\", $(met "$T/b.jsonl" decode_s ar) / $dec }")" \
        || fail "$k: speedup is not AR's decode_s / this decode_s"
    near "$(met "$T/b.jsonl" speedup_vs_base_ar $k)" "$(met "$T/b.jsonl" speedup $k)" || fail "$k: one model: vs base == speedup"
done
near "$(met "$T/b.jsonl" speedup ar)" 1 || fail "AR's speedup over itself"
near "$(met "$T/b.jsonl" differ_from_ar jacobi)" "$differ" || fail "differ_from_ar: gen records say $differ"
near "$(met "$T/b.jsonl" differ_from_ar ar)" 0 || fail "AR differs from itself"
# the table: the same sums, and agree = prompts - differ, out of prompts
grep -q "^cllm-bench: 17 prompts, <= 300 new tokens, n = 8, 3 repeats (median), 1 warm-up$" "$T/b.txt" || fail "table title"
grep -q "^tiny-qwen2 *ar  *$ar_tok  *$ar_steps .* -$" "$T/b.txt" || fail "table: AR line: $(cat "$T/b.txt")"
grep -q "^tiny-qwen2 *jacobi n=8  *$j_tok  *$j_steps .* $((np - differ))/$np$" "$T/b.txt" || fail "table: Jacobi line"
grep -q "^tiny-qwen2 .* ar .* 1.00x  *-$" "$T/b.txt" || fail "table: AR's speedup"
# the table's quotient columns are the metrics, rounded as printed (tok/step
# %.3f, tok/s %.2f, ms/pass %.1f, speedup %.2fx)
for k in ar jacobi; do
    want=$(awk -v a="$(met "$T/b.jsonl" tokens_per_step $k)" -v b="$(met "$T/b.jsonl" tokens_per_s $k)" \
               -v c="$(met "$T/b.jsonl" ms_per_pass $k)" -v d="$(met "$T/b.jsonl" speedup $k)" \
               'BEGIN { printf "%.3f %.2f %.1f %.2fx", a, b, c, d }')
    got=$(grep "^tiny-qwen2 *$k" "$T/b.txt" | sed 's/jacobi n=8/jacobi/' | awk '{ print $5, $6, $7, $8 }')
    [ "$got" = "$want" ] || fail "table: $k: tok/step, tok/s, ms/pass, speedup: $got, metrics say $want"
done
echo "one model: sums equal cllm-gen's, quotients, agree $((np - differ))/$np, meta, table"

# 2. --vs a copy of the same model, --prompts 4, --warmup 0, one repeat: each
# model's speedup is over its own AR, vs base over the first model's AR.
cp -r "$TM" "$T/tiny-b"
head -4 "$T/p.jsonl" > "$T/p4.jsonl"
head -4 "$T/g_ar.jsonl" > "$T/g4.jsonl"
set -- $(sums "$T/g4.jsonl"); ar4_tok=$1 ar4_steps=$2
# Jacobi's passes over 4 prompts as well as 17: two sums of the per-prompt
# passes, so that other guesses rarely match both by chance
head -4 "$T/g_jacobi.jsonl" > "$T/gj4.jsonl"
set -- $(sums "$T/gj4.jsonl"); j4_steps=$2
"$B/cllm-bench" -m "$TM" --vs "$T/tiny-b" -n 8 --seed 5 --max-new-tokens 300 --repeat 1 --warmup 0 --prompts 4 \
    -q "$T/p.jsonl" | "$B/cllm-cat" -j --type metric > "$T/v.jsonl"
[ "$(count '"prompts":4,"repeat":1}' "$T/v.jsonl")" = 40 ] || fail "--vs: 40 metrics with prompts 4, repeat 1"
for mod in tiny-qwen2 tiny-b; do
    near "$(met "$T/v.jsonl" tokens ar $mod)" "$ar4_tok" || fail "--vs $mod: --prompts 4 tokens"
    near "$(met "$T/v.jsonl" steps ar $mod)" "$ar4_steps" || fail "--vs $mod: --prompts 4 steps"
    near "$(met "$T/v.jsonl" speedup ar $mod)" 1 || fail "--vs $mod: AR speedup over its own AR"
    near "$(met "$T/v.jsonl" steps jacobi $mod)" "$j4_steps" || fail "--vs $mod: --prompts 4 Jacobi steps"
    for k in ar jacobi; do
        near "$(met "$T/v.jsonl" speedup_vs_base_ar $k $mod)" \
            "$(awk "BEGIN { printf \"%.17g\", $(met "$T/v.jsonl" decode_s ar) / $(met "$T/v.jsonl" decode_s $k $mod) }")" \
            || fail "--vs $mod $k: speedup_vs_base_ar is not the first model's AR decode_s / this one"
    done
done
echo "--vs: per-model speedups, vs base, --prompts"

# 3. --max-new-tokens 1: one pass per prompt, no decoding phase: tokens_per_s
# is 0 tokens over the time, ms_per_pass has no passes (0/0: not written).
# (--repeat and --warmup left at their defaults, 3 and 1)
"$B/cllm-bench" -m "$TM" --max-new-tokens 1 "$T/p4.jsonl" 2> "$T/one.txt" | "$B/cllm-cat" -j --type metric > "$T/one.jsonl"
grep -q "^cllm-bench: 4 prompts, <= 1 new tokens, n = 16, 3 repeats (median), 1 warm-up$" "$T/one.txt" || fail "defaults: $(head -1 "$T/one.txt")"
[ "$(count '"n":16,"prompts":4,"repeat":3}' "$T/one.jsonl")" = 9 ] || fail "defaults: Jacobi meta n 16, repeat 3"
near "$(met "$T/one.jsonl" steps ar)" 4 || fail "--max-new-tokens 1: 4 passes"
[ -z "$(met "$T/one.jsonl" ms_per_pass ar)" ] || fail "--max-new-tokens 1: ms_per_pass of no passes"
[ "$(wc -l < "$T/one.jsonl")" = 18 ] || fail "--max-new-tokens 1: 9 metrics per method"

# 4. --init pad with a model whose pad token is 2: bench's Jacobi passes are
# cllm-gen's with the same guesses (the pad, not token 0, not the prompt's).
mkdir "$T/pad2"
sed 's/"pad_token_id": null/"pad_token_id": 2/' "$TM/config.json" > "$T/pad2/config.json"
grep -q '"pad_token_id": 2' "$T/pad2/config.json" || fail "could not set the tiny model's pad token"
ln -s "$PWD/$TM/model.safetensors" "$T/pad2/model.safetensors"
"$B/cllm-gen" -m "$T/pad2" --method jacobi -n 8 --init pad --max-new-tokens 300 "$T/p.jsonl" \
    | "$B/cllm-cat" --type gen -j > "$T/g_pad.jsonl"
"$B/cllm-gen" -m "$TM" --method jacobi -n 8 --init pad --max-new-tokens 300 "$T/p.jsonl" \
    | "$B/cllm-cat" --type gen -j > "$T/g_pad0.jsonl"
set -- $(sums "$T/g_pad.jsonl"); pad_steps=$2
set -- $(sums "$T/g_pad0.jsonl"); [ "$2" != "$pad_steps" ] || fail "pad 0 and pad 2 give the same passes: no test"
[ "$pad_steps" != "$j_steps" ] || fail "--init pad and prompt give the same passes: no test"
"$B/cllm-bench" -m "$T/pad2" -n 8 --init pad --max-new-tokens 300 --repeat 1 -q "$T/p.jsonl" \
    | "$B/cllm-cat" -j --type metric > "$T/pad.jsonl"
near "$(met "$T/pad.jsonl" steps jacobi pad2)" "$pad_steps" || fail "--init pad: steps $(met "$T/pad.jsonl" steps jacobi pad2), gen says $pad_steps"

# 5. Bad input: a token id equal to the vocabulary size (256), no prompts.
echo '{"tokens":[1,256]}' > "$T/bad.jsonl"
rc=0; "$B/cllm-bench" -m "$TM" --max-new-tokens 4 -q "$T/bad.jsonl" > /dev/null 2> "$T/err" || rc=$?
[ $rc = 1 ] && grep -q "token id 256 is outside the vocabulary (256)" "$T/err" || fail "id 256: exit $rc: $(cat "$T/err")"
rc=0; "$B/cllm-bench" -m "$TM" --max-new-tokens 4 -q /dev/null > /dev/null 2> "$T/err" || rc=$?
[ $rc = 1 ] && grep -q "no prompts" "$T/err" || fail "no prompts: exit $rc: $(cat "$T/err")"
# --vs needs the same vocabulary (cllm-bench(1)): make-tiny's with 300 tokens
"$B/tools/make-tiny" -o "$T/v300" --vocab 300 2>/dev/null
rc=0; "$B/cllm-bench" -m "$TM" --vs "$T/v300" --max-new-tokens 4 -q "$T/p4.jsonl" > /dev/null 2> "$T/err" || rc=$?
[ $rc = 1 ] && grep -q "tiny-qwen2 and v300 have different vocabularies (256, 300)" "$T/err" || fail "--vs, other vocabulary: exit $rc: $(cat "$T/err")"
echo '{"tokens":[1,255]}' > "$T/edge.jsonl"
"$B/cllm-bench" -m "$TM" --max-new-tokens 4 --repeat 1 -q "$T/edge.jsonl" > /dev/null || fail "id 255 refused"
# An output that cannot be written fails before the measurements (it failed
# after them: the table printed, the run lost): one line, no table.
rc=0; "$B/cllm-bench" -m "$TM" --max-new-tokens 4 --repeat 1 -o "$T/none/m.zst" "$T/edge.jsonl" 2> "$T/err" || rc=$?
[ $rc = 1 ] && [ "$(wc -l < "$T/err")" = 1 ] && grep -q "none/m.zst: cannot create a temporary file" "$T/err" \
    || fail "-o in a missing directory: exit $rc: $(cat "$T/err")"
echo "bench tests passed"

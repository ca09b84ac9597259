#!/bin/sh
# gen.sh: cllm-gen end to end on SmolLM2: a chat answer as text, gen records
# that pass --check, Jacobi output equal to AR output through the CLI, traces,
# and prompts from every kind of input; on the tiny model, the gen record
# fields by their definitions, the refusals, --batch 4096 and --init pad.
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
# The streamed text is the record's text: every token's bytes, none skipped.
rec=$(echo "What is 2+2?" | "$B/cllm-gen" -m "$M" --chat --max-new-tokens 40 -t 2 | "$B/cllm-cat" --type gen -j |
      sed -n 's/.*"text":"\([^"\\]*\)".*/\1/p')
[ -n "$rec" ] && [ "$ans" = "$rec" ] || fail "--text printed '$ans', the record's text is '$rec'"

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

# 5. The tiny model (no tokenizer, vocabulary 256): gen record fields by their
# definitions in cllm-stream(5). steps counts the prompt's pass (which yields
# the first token, even over 128 prompt tokens: several forwards) as one, then
# a pass per AR token, EOS included; n is 1 for ar whatever -n says; a Jacobi
# record's accepted has one entry per iteration (pass after the prompt's) and
# per state, and its entries add up to the tokens after the first (EOS
# included); no state is longer than the block.
TM=tests/golden/tiny-qwen2
sed -n '/^cat > "\$T\/tiny.jsonl"/,/^EOF$/p' tests/sh/traj.sh | sed '1d;$d' > "$T/tiny.jsonl"
[ "$(wc -l < "$T/tiny.jsonl")" = 17 ] || fail "could not take the 17 prompts from traj.sh"
for method in ar jacobi; do
    "$B/cllm-gen" -m "$TM" --method $method -n 8 --max-new-tokens 40 --trace --batch 3 "$T/tiny.jsonl" \
        | "$B/cllm-cat" --type gen -j > "$T/tiny_$method.jsonl"
done
# one line per record: output length, n, steps, eos (1/0), entries of accepted,
# their sum, entries of states, the longest state
fields() {
    sed 's/.*"output":\[\([^]]*\)\].*"n":\([0-9]*\),"steps":\([0-9]*\),.*"eos":\([a-z]*\)\(.*\)/\1 \2 \3 \4 \5/' "$1" \
        | awk '{ if (NF == 4) { $0 = "- " $0 }   # an empty output
                 n = ($1 == "-") ? 0 : split($1, a, ","); acc = 0; sum = 0; ns = 0; long = 0
                 if (match($5, /"accepted":\[[^]]*\]/)) {
                     x = substr($5, RSTART + 12, RLENGTH - 13); acc = split(x, b, ","); for (i = 1; i <= acc; i++) sum += b[i] }
                 st = $5; sub(/.*"states":\[/, "", st)
                 while (match(st, /\[[^]]*\]/)) { ns++; l = split(substr(st, RSTART + 1, RLENGTH - 2), c, ","); if (l > long) long = l
                                                  st = substr(st, RSTART + RLENGTH) }
                 print n, $2, $3, ($4 == "true"), acc, sum, ns, long }'
}
fields "$T/tiny_ar.jsonl" > "$T/f_ar"
fields "$T/tiny_jacobi.jsonl" > "$T/f_j"
[ "$(wc -l < "$T/f_ar")" = 17 ] && [ "$(wc -l < "$T/f_j")" = 17 ] || fail "tiny: expected 17 records each"
grep -q ' 1 0 0 0 0$' "$T/f_ar" || fail "tiny AR: no answer ends in EOS: $(cat "$T/f_ar")"
awk '$2 != 1 || $3 != $1 + $4 || $1 + $4 > 40' "$T/f_ar" | grep . && fail "tiny AR: n, steps = tokens + EOS, or the cap"
awk '$2 != 8 || $3 != 1 + $5 || $5 != $7 || $6 + 1 != $1 + $4 || $8 > 8 || $1 + $4 > 40' "$T/f_j" | grep . \
    && fail "tiny Jacobi: n, steps = 1 + iterations, accepted and states, their sum, block length or the cap"
awk '$8 == 8' "$T/f_j" | grep -q . || fail "tiny Jacobi: no state of a whole block"
# one iteration after the prompt's pass still has its trace (2 tokens, no EOS)
echo '{"tokens":[5,6,7]}' | "$B/cllm-gen" -m "$TM" --method jacobi -n 4 --trace --max-new-tokens 2 \
    | "$B/cllm-cat" --type gen -j > "$T/one.jsonl"
fields "$T/one.jsonl" | grep -q '^2 4 2 0 1 1 1 ' || fail "one iteration: $(fields "$T/one.jsonl")"

# 6. Refusals: --text without a tokenizer; a token id equal to the vocabulary
# size (and the last id allowed); an error after a record with -o leaves no
# file under the final name.
rc=0; echo '{"tokens":[1]}' | "$B/cllm-gen" -m "$TM" --text --max-new-tokens 2 > /dev/null 2> "$T/err" || rc=$?
[ $rc = 1 ] && grep -q -- "--text needs a model with a tokenizer" "$T/err" || fail "--text, no tokenizer: exit $rc: $(cat "$T/err")"
printf '{"tokens":[1,2]}\n{"tokens":[1,256]}\n' > "$T/bad.jsonl"
rc=0; "$B/cllm-gen" -m "$TM" --max-new-tokens 2 -o "$T/bad.zst" "$T/bad.jsonl" 2> "$T/err" || rc=$?
[ $rc = 1 ] && grep -q "prompt 1: token id 256 is outside the vocabulary (256)" "$T/err" || fail "id 256: exit $rc: $(cat "$T/err")"
[ ! -e "$T/bad.zst" ] || fail "a failed run left its output file"
echo '{"tokens":[255]}' | "$B/cllm-gen" -m "$TM" --max-new-tokens 2 | "$B/cllm-cat" --type gen -j | grep -q '"prompt":\[255\]' \
    || fail "id 255 refused"
# --batch 4096 (the option's upper bound) is the engine's too
head -3 "$T/tiny.jsonl" | "$B/cllm-gen" -m "$TM" --max-new-tokens 40 --batch 4096 | "$B/cllm-cat" --type gen -j \
    | sed 's/"time_s":[^,]*,//' > "$T/b4096"
head -3 "$T/tiny.jsonl" | "$B/cllm-gen" -m "$TM" --max-new-tokens 40 | "$B/cllm-cat" --type gen -j \
    | sed 's/"time_s":[^,]*,//' | cmp - "$T/b4096" || fail "--batch 4096 differs from --batch 1"
# --init pad: "the model's pad token everywhere" (cllm-gen(1)) after the
# block's first token, the configuration's pad (2 here), not token 0
mkdir "$T/pad2"
sed 's/"pad_token_id": null/"pad_token_id": 2/' "$TM/config.json" > "$T/pad2/config.json"
grep -q '"pad_token_id": 2' "$T/pad2/config.json" || fail "could not set the tiny model's pad token"
ln -s "$PWD/$TM/model.safetensors" "$T/pad2/model.safetensors"
echo '{"tokens":[5,6,7]}' | "$B/cllm-gen" -m "$T/pad2" --method jacobi -n 4 --init pad --trace --max-new-tokens 6 \
    | "$B/cllm-cat" --type gen -j | grep -q '"states":\[\[[0-9]*,2,2,2\],' || fail "--init pad: first state not pad"
# Past the model's context (512 tokens for the tiny model) decoding goes on,
# with one warning (llama.cpp's n_ctx_train warning); up to it, none. AR and
# Jacobi agree past it as well.
printf '{"tokens":[5,6,7,8]}\n' > "$T/long.jsonl"
"$B/cllm-gen" -m "$TM" --max-new-tokens 508 "$T/long.jsonl" 2> "$T/ctx.err" | "$B/cllm-cat" --check 2> /dev/null \
    || fail "508 new tokens after 4: $(cat "$T/ctx.err")"
[ ! -s "$T/ctx.err" ] || fail "a warning within the context: $(cat "$T/ctx.err")"
for method in ar jacobi; do
    "$B/cllm-gen" -m "$TM" --method $method --max-new-tokens 600 "$T/long.jsonl" 2> "$T/ctx.err" \
        | "$B/cllm-cat" --type gen -j | sed 's/"time_s":[^,]*,//; s/"method":"[a-z]*","n":[0-9]*,"steps":[0-9]*,//' > "$T/ctx.$method"
    [ "$(grep -c "warning: decoding past the model's context length of 512 tokens" "$T/ctx.err")" = 1 ] \
        && [ "$(wc -l < "$T/ctx.err")" = 1 ] || fail "$method past the context: $(cat "$T/ctx.err")"
done
cmp -s "$T/ctx.ar" "$T/ctx.jacobi" || fail "AR and Jacobi differ past the context"
echo "tiny: record fields, refusals, --init pad, one warning past the context"
echo "gen tests passed"

#!/bin/sh
# signals.sh: pipes and signals. A reader that goes away ends a producer
# quietly (SIGPIPE, exit 141, nothing on stderr); SIGINT finishes the record in
# hand and exits 130, leaving every whole record readable and the stream
# without its end record, so a reader reports it as truncated and loses nothing
# silently.
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
# wait until at least one record is out, then interrupt
while [ "$(stat -c %s "$T/int.zst")" -lt 400 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -INT $pid
rc=0
wait $pid || rc=$?
[ $rc = 130 ] || fail "SIGINT: exit $rc, want 130"
n=$("$B/cllm-cat" --type gen -j "$T/int.zst" 2>/dev/null | wc -l)
[ "$n" -ge 1 ] && [ "$n" -lt 40 ] || fail "SIGINT: $n whole gen records readable"
if "$B/cllm-cat" --check -q "$T/int.zst" 2>"$T/check.err"; then fail "an interrupted stream passed --check"; fi
grep -q truncated "$T/check.err" || fail "SIGINT: --check does not say truncated: $(cat "$T/check.err")"
echo "SIGINT: exit 130, $n whole records readable, then: $(cat "$T/check.err")"

# 3. SIGINT with -o FILE: no partial file under the final name.
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 16 -t 2 -o "$T/out.zst" "$T/q.jsonl" 2>/dev/null &
pid=$!
sleep 2
kill -INT $pid
wait $pid || true
[ ! -e "$T/out.zst" ] || fail "SIGINT left a partial $T/out.zst"
ls "$T" | grep -q 'out.zst.tmp' && fail "SIGINT left a temporary file"
echo "SIGINT with -o: no file left"

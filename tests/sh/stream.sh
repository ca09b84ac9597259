#!/bin/sh
# stream.sh: cllm-cat end to end: JSONL <-> stream identity, joined streams,
# filters and counts, and a slow producer whose records must reach the reader
# before it ends.
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# 1. --from-jsonl | --jsonl is the identity on a file of typed records.
cat > "$T/in.jsonl" <<'J'
{"type":"header","format":"cllm","version":1,"producer":"test","model":"m","vocab":49152,"tokenizer":"abc","command":["a","b"]}
{"type":"prompt","id":0,"tokens":[1,2,3],"text":"Question: é ✓\n\"quoted\"","answer":"4","meta":{"k":[1.5,-2,null,true]}}
{"type":"gen","id":0,"prompt":[1,2,3],"output":[4,5],"text":"hi","method":"jacobi","n":16,"steps":2,"time_s":0.001,"eos":true,"accepted":[1,1],"states":[[4,9],[4,5]]}
{"type":"traj","id":7,"chunk":1,"prompt":[1],"prefix":[4],"states":[[9,9],[5,9]],"fixed":[5,6],"eos":false,"labels":[5,6]}
{"type":"metric","name":"loss","value":0.25,"step":10,"unit":"nats"}
{"type":"custom","anything":{"nested":[[1],[2,[3]]]},"big":9223372036854775807,"neg":-9223372036854775808}
{"type":"end","records":5}
J
"$B/cllm-cat" -J "$T/in.jsonl" > "$T/s.zst"
"$B/cllm-cat" --check -q "$T/s.zst"
"$B/cllm-cat" -j "$T/s.zst" > "$T/out.jsonl"
cmp "$T/in.jsonl" "$T/out.jsonl" || { diff "$T/in.jsonl" "$T/out.jsonl" >&2; fail "jsonl round trip changed the records"; }

# 2. Two streams joined with cat read as one; cllm-cat makes one section of them.
cat "$T/s.zst" "$T/s.zst" > "$T/two.zst"
"$B/cllm-cat" --check -q "$T/two.zst"
[ "$("$B/cllm-cat" -c "$T/two.zst" | grep '^traj' | cut -f2)" = 2 ] || fail "joined streams: wrong traj count"
"$B/cllm-cat" "$T/two.zst" "$T/s.zst" > "$T/joined.zst"
"$B/cllm-cat" --check -q "$T/joined.zst"
"$B/cllm-cat" -c "$T/joined.zst" > "$T/count"
grep -qx "header	1" "$T/count" && grep -qx "end	1" "$T/count" && grep -qx "prompt	3" "$T/count" || { cat "$T/count" >&2; fail "joined counts"; }
[ "$("$B/cllm-cat" -j "$T/joined.zst" | tail -1)" = '{"type":"end","records":15}' ] || fail "end record of joined stream"

# 3. Filters.
[ "$("$B/cllm-cat" --type traj --type metric -j "$T/joined.zst" | wc -l)" = 6 ] || fail "--type"
[ "$("$B/cllm-cat" -n 2 "$T/joined.zst" | "$B/cllm-cat" -j | wc -l)" = 4 ] || fail "--head keeps header, 2 records, end"

# 4. GSM8K JSONL becomes prompt records carrying every field, text from --field.
head -5 "$CLLM_DATA/gsm8k_test.jsonl" | "$B/cllm-cat" -J --field question | "$B/cllm-cat" --type prompt -j > "$T/p.jsonl"
[ "$(wc -l < "$T/p.jsonl")" = 5 ] || fail "gsm8k prompts"
grep -q '"id":4,' "$T/p.jsonl" && grep -q '"target":"18"' "$T/p.jsonl" && grep -q '"text":"Janet' "$T/p.jsonl" || fail "gsm8k fields"
"$B/cllm-cat" -J --field question "$CLLM_DATA/gsm8k_test.jsonl" | "$B/cllm-cat" --check -q

# 5. A slow writer (a record every 100 ms, 10 records): the reader at the end
# of the pipe sees the first record long before the writer finishes.
start=$(date +%s%N)
"$B/tools/stream-drip" 10 100 | "$B/cllm-cat" | "$B/cllm-cat" -j | while read -r line; do
    case $line in *'"sent_at"'*) echo "$(( ($(date +%s%N) - start) / 1000000 ))" > "$T/first_ms"; break ;; esac
done
first=$(cat "$T/first_ms")
echo "first record after ${first} ms (writer needs ~1000 ms)"
[ "$first" -lt 700 ] || fail "first record arrived after $first ms: records are held back"

# 6. A writer killed by a signal it does not handle (stream-drip has no
#    handler, like kill -9) leaves a stream without its end record.
"$B/tools/stream-drip" 50 20 > "$T/cut.zst" &
pid=$!
sleep 0.3
kill -TERM $pid; wait $pid || true
if "$B/cllm-cat" --check -q "$T/cut.zst" 2>/dev/null; then fail "an interrupted stream passed --check"; fi

# 7. A binary stream is not written to a terminal unless forced.
if command -v script >/dev/null; then
    script -qec "$B/cllm-cat -J $T/in.jsonl" /dev/null > "$T/tty.out" 2>&1 || true
    grep -q "refusing" "$T/tty.out" || fail "wrote a stream to a terminal"
fi
echo "stream tests passed"

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
# of the pipe sees the first record long before the writer finishes. The
# record holds the time it was sent, so the delay counts from there, not from
# the programs' start (on a loaded machine their start alone took ~1 s): held
# back to the writer's end, the first record would wait >= 900 ms.
"$B/tools/stream-drip" 10 100 | "$B/cllm-cat" | "$B/cllm-cat" -j | while read -r line; do
    case $line in *'"sent_at"'*)
        now=$(date +%s.%N)
        echo "$line" | sed 's/.*"value":\([^,]*\),.*/\1/' | awk -v now="$now" '{ printf "%d\n", (now - $1) * 1000 }' > "$T/first_ms"
        break ;;
    esac
done
first=$(cat "$T/first_ms")
echo "first record $first ms after it was sent (the writer needs ~1000 ms for all)"
[ "$first" -lt 600 ] || fail "first record arrived $first ms after it was sent: records are held back"

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
# 8. Each producer's header (cllm-stream(5)): producer "PROG VERSION", the
#    model's name, vocabulary and tokenizer hash (as cllm-model-info reports
#    them), the command line (argv[0] as its base name).
"$B/tools/make-tiny" -o "$T/tiny" 2>/dev/null
"$B/tools/cllm-model-info" "$T/tiny" > "$T/info"
field() { sed -n "s/^$1\t//p" "$T/info"; }
ver=$("$B/cllm-cat" --version | sed 's/.* //')
want_tail=$(printf '"model":"%s","vocab":%s,"tokenizer":"%s"' "$(field name)" "$(field vocab)" "$(field tokenizer)")
head -1 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/q.jsonl"
M="-m $T/tiny -t 1 --field question"
"$B/cllm-gen" $M --max-new-tokens 2 "$T/q.jsonl" > "$T/h-gen.zst"
"$B/cllm-traj" $M -n 2 --max-new-tokens 2 -q "$T/q.jsonl" > "$T/h-traj.zst"
"$B/cllm-bench" $M --max-new-tokens 2 --repeat 1 -q "$T/q.jsonl" > "$T/h-bench.zst" 2>/dev/null
"$B/cllm-train" $M --objective sft -q -o "$T/h.gguf" "$T/q.jsonl" > "$T/h-train.zst"
for p in gen traj bench train; do
    h=$("$B/cllm-cat" -j --type header "$T/h-$p.zst")
    want=$(printf '{"type":"header","format":"cllm","version":1,"producer":"cllm-%s %s",%s,"command":["cllm-%s","-m","%s/tiny",' \
        "$p" "$ver" "$want_tail" "$p" "$T")
    [ "${h#"$want"}" != "$h" ] || fail "cllm-$p's header: $h, want $want..."
done

echo "stream tests passed"

#!/bin/sh
# cat.sh: cllm-cat's options and edges as cllm-cat(1) states them: the first
# header kept as is (also under --type), tokenizer agreement, --head counting
# and stopping, -q, -l, -f, -o, the header of JSONL-made streams,
# --count after a failure, and cllm-cat's own SIGINT.
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat > "$T/in.jsonl" <<'J'
{"type":"header","format":"cllm","version":1,"producer":"test","model":"m","vocab":49152,"tokenizer":"abc","command":["a"]}
{"type":"prompt","id":0,"tokens":[1,2,3],"text":"q"}
{"type":"metric","name":"loss","value":0.25,"step":10}
{"type":"custom","x":1}
{"type":"end","records":3}
J
"$B/cllm-cat" -J "$T/in.jsonl" > "$T/s.zst"
hdr=$(head -1 "$T/in.jsonl")

# 1. The first header read is written unchanged, with or without --type.
[ "$("$B/cllm-cat" --type metric "$T/s.zst" | "$B/cllm-cat" -j | head -1)" = "$hdr" ] || fail "--type replaced the header"
"$B/cllm-cat" --type metric "$T/s.zst" | "$B/cllm-cat" -c > "$T/c"
[ "$(cat "$T/c")" = "$(printf 'header\t1\nmetric\t1\nend\t1')" ] || fail "--type stream: $(cat "$T/c")"

# 2. An empty or missing tokenizer agrees with anything, in any position.
for t in '' aaa; do
    printf '{"type":"header","format":"cllm","version":1,"producer":"x","tokenizer":"%s"}\n{"type":"custom","t":"%s"}\n' "$t" "$t" | "$B/cllm-cat" -J > "$T/t$t.zst"
done
"$B/cllm-cat" "$T/taaa.zst" "$T/t.zst" "$T/taaa.zst" > "$T/tj.zst" || fail "an empty tokenizer after aaa did not join"
"$B/cllm-cat" -j "$T/tj.zst" | head -1 | grep -q '"tokenizer":"aaa"' || fail "the joined stream lost the first header"

# 3. --head N counts data records over all inputs together, header and end not
#    included, and stops reading: what comes after is not opened or read.
"$B/cllm-cat" -n 4 "$T/s.zst" "$T/s.zst" | "$B/cllm-cat" -c > "$T/c"
[ "$(cat "$T/c")" = "$(printf 'header\t1\nprompt\t2\nmetric\t1\ncustom\t1\nend\t1')" ] || fail "-n 4 over two inputs: $(cat "$T/c")"
"$B/cllm-cat" -n 0 "$T/s.zst" | "$B/cllm-cat" -c > "$T/c"
[ "$(cat "$T/c")" = "$(printf 'header\t1\nend\t1')" ] || fail "-n 0: $(cat "$T/c")"
n=$(stat -c %s "$T/s.zst")
head -c $((n - 3)) "$T/s.zst" > "$T/cut.zst"
"$B/cllm-cat" -n 1 "$T/cut.zst" /nonexistent.zst > "$T/h.zst" || fail "-n 1 read past its first record"
"$B/cllm-cat" --check -q "$T/h.zst" || fail "-n 1 output is not whole"
#    The Nth record the last data record of its input: the stop comes right
#    after it, not at the next data record (which would read the end record,
#    open the next input, and wait on a pipe for a record never needed).
"$B/cllm-cat" -n 3 "$T/s.zst" /nonexistent.zst > "$T/h.zst" 2>/dev/null || fail "-n 3 opened the input after its third record"
"$B/cllm-cat" --check -q "$T/h.zst" || fail "-n 3 output is not whole"
"$B/cllm-cat" -c -n 3 "$T/s.zst" > "$T/c"
[ "$(cat "$T/c")" = "$(printf 'header\t1\nprompt\t1\nmetric\t1\ncustom\t1')" ] || fail "-n 3 read on to the end record: $(cat "$T/c")"

# 4. -q silences the ok lines of --check; without it there is one per input.
"$B/cllm-cat" --check -q "$T/s.zst" "$T/s.zst" 2> "$T/err"
[ ! -s "$T/err" ] || fail "--check -q printed: $(cat "$T/err")"
"$B/cllm-cat" --check "$T/s.zst" 2> "$T/err"
[ "$(cat "$T/err")" = "cllm-cat: $T/s.zst: ok, 5 records" ] || fail "--check says: $(cat "$T/err")"

# 5. A failed input: exit 1, nothing counted, no end record, no -o file.
rc=0; "$B/cllm-cat" -c "$T/s.zst" "$T/cut.zst" > "$T/c" 2>/dev/null || rc=$?
[ $rc = 1 ] && [ ! -s "$T/c" ] || fail "--count with a failed input: exit $rc, printed $(cat "$T/c")"
rc=0; "$B/cllm-cat" /nonexistent.zst "$T/s.zst" > "$T/f.zst" 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "a missing first input: exit $rc"
if "$B/cllm-cat" --check -q "$T/f.zst" 2>/dev/null; then fail "output after a failed input is whole"; fi
rc=0; "$B/cllm-cat" --check -q /nonexistent.zst "$T/s.zst" 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "--check with a missing first input: exit $rc"
"$B/cllm-cat" -o "$T/o.zst" "$T/s.zst" && "$B/cllm-cat" --check -q "$T/o.zst" || fail "-o FILE"
# -o's file gets the umask's permissions, as a plain create would (it was
# written as a temporary file and made 0644 whatever the umask)
for mask in 077 022 027; do
    rm -f "$T/perm.zst"
    (umask $mask && "$B/cllm-cat" -o "$T/perm.zst" "$T/s.zst") || fail "-o under umask $mask"
    want=$(printf '%o' $((0666 & ~0$mask)))
    [ "$(stat -c %a "$T/perm.zst")" = "$want" ] || fail "-o under umask $mask: mode $(stat -c %a "$T/perm.zst"), want $want"
done
# replacing a file keeps its mode (the temporary file's would have widened it)
chmod 640 "$T/perm.zst"
(umask 022 && "$B/cllm-cat" -o "$T/perm.zst" "$T/s.zst") || fail "-o over an existing file"
[ "$(stat -c %a "$T/perm.zst")" = 640 ] || fail "-o over a 0640 file made mode $(stat -c %a "$T/perm.zst")"
rc=0; "$B/cllm-cat" -o "$T/o2.zst" "$T/s.zst" "$T/cut.zst" 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "-o with a cut input: exit $rc"
[ -z "$(ls "$T" | grep o2.zst)" ] || fail "-o left a file after a failed input: $(ls "$T")"

# 6. A JSONL-made stream starts with cllm-cat's own header; an empty input
#    still makes a whole stream.
ver=$("$B/cllm-cat" -V | awk '{print $NF}')
"$B/cllm-cat" -J /dev/null > "$T/e.zst"
"$B/cllm-cat" --check -q "$T/e.zst" || fail "an empty JSONL input does not make a whole stream"
"$B/cllm-cat" -j "$T/e.zst" > "$T/e.jsonl"
[ "$(cat "$T/e.jsonl")" = "$(printf '{"type":"header","format":"cllm","version":1,"producer":"cllm-cat %s","model":"","vocab":0,"tokenizer":"","command":["cllm-cat","-J","/dev/null"]}\n{"type":"end","records":0}' "$ver")" ] \
    || fail "header of an empty JSONL input: $(cat "$T/e.jsonl")"

printf '{"text":"a"}\n{"text":"b"}\n' | "$B/cllm-cat" -J | "$B/cllm-cat" -c > "$T/c"
[ "$(cat "$T/c")" = "$(printf 'header\t1\nprompt\t2\nend\t1')" ] || fail "JSONL without a header: $(cat "$T/c")"

# 7. -l sets the compression level: 19 packs this text tighter than 1.
head -200 "$CLLM_DATA/gsm8k_test.jsonl" > "$T/g.jsonl"
for l in 1 19; do "$B/cllm-cat" -l $l -J --field question "$T/g.jsonl" > "$T/l$l.zst"; done
[ "$(stat -c %s "$T/l19.zst")" -lt "$(stat -c %s "$T/l1.zst")" ] || fail "-l 19 is no smaller than -l 1"

# 8. -f writes a stream to a terminal.
if command -v script >/dev/null; then
    script -qec "$B/cllm-cat -f -J /dev/null; echo rc=\$?" /dev/null > "$T/tty.out" 2>&1 || true
    grep -q "rc=0" "$T/tty.out" && ! grep -q "refusing" "$T/tty.out" || fail "-f did not write to a terminal: $(cat "$T/tty.out")"
fi

# 9. -J from a pipe passes each record on before it waits for the next line
#    (cllm-cat(1): it flushes before waiting for more input); stdio's getline
#    gave no hook, and the records waited for 64 KiB or the end of input.
#    The producer writes the second line only once the first record has come
#    out of the pipe ($T/got), or after 60 s: a record held back until the
#    next line comes out after $T/late, whatever the machine's speed. (A fixed
#    3 s pause failed when the two programs took longer to start.)
{ echo '{"text":"a"}'
  i=0; while [ ! -e "$T/got" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  : > "$T/late"; echo '{"text":"b"}'; } | "$B/cllm-cat" -J | "$B/cllm-cat" -j |
    while read -r line; do
        case $line in *'"prompt"'*) [ -e "$T/late" ] && echo held > "$T/held"; : > "$T/got"; break ;; esac
    done
[ ! -e "$T/held" ] || fail "-J held its first record until the producer wrote the next line"

# 10. SIGINT while cllm-cat waits for input: exit 130; the records read so far
#    are closed with an end record marked interrupted.
#    The signal comes once the last data record is out (cllm-cat flushes
#    before it waits for more input), so cllm-cat has read all 3 and waits;
#    the feeder keeps the FIFO open until it is killed. (A fixed 0.5 s, with
#    the FIFO closed after 3 s, failed on a loaded machine: the signal came
#    before cllm-cat had started, or after the end of its input.)
mkfifo "$T/fifo"
{ cat "$T/s.zst"; exec sleep 60; } > "$T/fifo" &
feeder=$!
"$B/cllm-cat" "$T/fifo" > "$T/int.zst" 2>"$T/int.err" &
pid=$!
i=0
while ! "$B/cllm-cat" -j "$T/int.zst" 2>/dev/null | grep -q '"type":"custom"' && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -INT $pid
rc=0; wait $pid || rc=$?
kill $feeder 2>/dev/null || true
[ $rc = 130 ] || fail "cllm-cat SIGINT: exit $rc, want 130 ($(cat "$T/int.err"))"
"$B/cllm-cat" --check "$T/int.zst" 2> "$T/int.chk" || fail "cllm-cat SIGINT: $(cat "$T/int.chk")"
grep -q "ok, 5 records; 1 section interrupted (SIGINT)" "$T/int.chk" || fail "cllm-cat SIGINT: --check says $(cat "$T/int.chk")"
echo "cat tests passed"

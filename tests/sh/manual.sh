#!/bin/sh
# manual.sh: each program's --help and its man page agree. Every long option
# --help lists is described in man/PROG.1, every option the man page gives an
# entry of its own (a .TP item) is in --help, --help and --version exit 0 with
# their text on standard output and nothing on standard error, and an
# unknown option is a usage error (2). A new option documented in one place
# only fails here.
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# the long options named in a text, one a line, sorted
longopts() { grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }

for p in gen traj train eval bench cat; do
    prog=cllm-$p man=man/cllm-$p.1
    [ -f "$man" ] || fail "$prog: no man page $man"
    "$B/$prog" --help > "$T/help" 2> "$T/err" || fail "$prog --help: exit $?"
    [ -s "$T/help" ] && [ ! -s "$T/err" ] || fail "$prog --help: text not on standard output alone"
    "$B/$prog" --version > "$T/ver" 2> "$T/err" || fail "$prog --version: exit $?"
    grep -q "$prog" "$T/ver" && [ ! -s "$T/err" ] || fail "$prog --version: $(cat "$T/ver" "$T/err")"
    rc=0; "$B/$prog" --no-such-option > /dev/null 2> "$T/err" || rc=$?
    [ "$rc" -eq 2 ] || fail "$prog --no-such-option: exit $rc, not 2"
    grep -q "^$prog: " "$T/err" || fail "$prog --no-such-option: message not prefixed: $(cat "$T/err")"

    longopts < "$T/help" > "$T/h"
    # roff: \- is a minus, \fB..\fR change fonts
    sed 's/\\-/-/g; s/\\f[BIRP]//g' "$man" | longopts > "$T/m"
    # the man page's option entries: the line after each .TP
    awk 'item { print; item = 0 } /^\.TP/ { item = 1 }' "$man" | sed 's/\\-/-/g; s/\\f[BIRP]//g' | longopts > "$T/items"
    missing=$(comm -23 "$T/h" "$T/m" | tr '\n' ' ')
    [ -z "$missing" ] || fail "$prog: in --help but not in $man: $missing"
    extra=$(comm -23 "$T/items" "$T/h" | tr '\n' ' ')
    [ -z "$extra" ] || fail "$prog: $man describes options --help does not list: $extra"
    echo "ok $prog: $(wc -l < "$T/h") long options in --help and $man"
done
for page in man/cllm.7 man/cllm-stream.5; do [ -f "$page" ] || fail "no $page"; done
echo "ok manual"

#!/bin/sh
# manual.sh: each program's --help and its man page agree. Every long option
# --help lists is described in man/PROG.1, every option the man page gives an
# entry of its own (a .TP item) is in --help, --help and --version exit 0 with
# their text on standard output and nothing on standard error, and an
# unknown option is a usage error (2). A new option documented in one place
# only fails here. Also: the long options of the program's getopt_long table
# (cmd/PROG.c, macros expanded) are those --help lists, its short options
# are those of --help and of the man page's entries, an exit status for
# signals (130) in the man page's EXIT STATUS is in --help's too, and the
# decompressed bytes of cllm-stream(5)'s example (and formats/STREAM.md's)
# are what cllm-cat writes.
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
    # the code's own option table against --help (needs a C preprocessor)
    if command -v "${CC:-cc}" > /dev/null 2>&1; then
        "${CC:-cc}" -E -P -DCLLM_VERSION='"0"' -Ilibcore -Iformats -Ikernels "cmd/$prog.c" 2>/dev/null |
            grep -o '{ *"[a-z][a-z0-9-]*", *[012] *,' | sed 's/{ *"\([^"]*\)".*/--\1/' | sort -u > "$T/src"
        [ -s "$T/src" ] || fail "$prog: no getopt_long table found in cmd/$prog.c"
        only=$(comm -23 "$T/src" "$T/h" | tr '\n' ' ')
        [ -z "$only" ] || fail "$prog: accepts options --help does not list: $only"
        only=$(comm -13 "$T/src" "$T/h" | tr '\n' ' ')
        [ -z "$only" ] || fail "$prog: --help lists options cmd/$prog.c does not accept: $only"
    fi
    # short options: getopt_long's string, --help's "-x," and the man page's entries
    s_src=$(grep -o 'getopt_long(argc, argv, "[^"]*"' "cmd/$prog.c" | sed 's/.*"\(.*\)"/\1/' | tr -d ':' | fold -w1 | sort | tr -d '\n')
    s_help=$(grep -o '^ *-[a-zA-Z],' "$T/help" | tr -d ' ,-' | sort | tr -d '\n')
    s_man=$(awk 'item { print; item = 0 } /^\.TP/ { item = 1 }' "$man" | sed 's/\\-/-/g; s/\\f[BIRP]//g' |
            grep -o '\(^\|[" ]\)-[a-zA-Z]\b' | tr -d ' "-' | sort -u | tr -d '\n')
    [ -n "$s_src" ] && [ "$s_src" = "$s_help" ] && [ "$s_src" = "$s_man" ] ||
        fail "$prog: short options differ: getopt_long '$s_src', --help '$s_help', $man '$s_man'"
    # exit statuses: the signals' status in both or in neither
    sed -n '/^\.SH EXIT STATUS/,/^\.SH/p' "$man" > "$T/exit"
    if grep -q 130 "$T/exit"; then
        grep -q 130 "$T/help" || fail "$prog: $man gives exit status 130, --help does not"
    fi
    echo "ok $prog: $(wc -l < "$T/h") long options in --help, $man and cmd/$prog.c; short options -$s_src"
done
# cllm-stream(5)'s example: the decompressed bytes of the dump are what
# cllm-cat -J makes of the JSON line (the compressed bytes depend on flushes
# and on the zstd version, the decompressed ones do not)
if command -v zstd > /dev/null 2>&1 && command -v od > /dev/null 2>&1; then
    printf '{"type":"metric","name":"loss","value":0.5}\n' | "$B/cllm-cat" -J | zstd -dcq | od -An -v -tx1 | tr -d ' \n' > "$T/ex.real"
    for doc in man/cllm-stream.5 formats/STREAM.md; do
        # the dump: from the line at 0 that starts with the header's map (88a4) to the line at a0
        sed -n '/^00000000: 88a4/,/^000000a0:/p' "$doc" | cut -c11-49 | tr -d ' \n' > "$T/ex.doc"
        [ -s "$T/ex.doc" ] || fail "$doc: no decompressed dump of the example found"
        cmp -s "$T/ex.real" "$T/ex.doc" || fail "$doc: the example's decompressed bytes differ from cllm-cat -J's: $(cat "$T/ex.real")"
    done
    echo "ok cllm-stream(5) example bytes"
fi
for page in man/cllm.7 man/cllm-stream.5; do [ -f "$page" ] || fail "no $page"; done
echo "ok manual"

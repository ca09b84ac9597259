#!/bin/sh
# run.sh: the hostile-input corpus. Every tests/bad/*.tsv line is
#   EXIT<TAB>MESSAGE-FRAGMENT<TAB>shell command
# The command runs with $B (the build directory), $T (a scratch directory),
# $M (the default model) and $D (the data folder). It must exit with EXIT,
# print MESSAGE-FRAGMENT on stderr (case-insensitive), and never show a
# sanitizer report, a crash signal or a hang (30 s).
set -u
cd "$(dirname "$0")/../.."
B=${CLLM_BUILD:?set CLLM_BUILD}
T=$(mktemp -d)
M=${CLLM_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
D=${CLLM_DATA:-../shared/data}
export B T M D
trap 'rm -rf "$T"' EXIT
tab=$(printf '\t')
pass=0 fail=0
for f in tests/bad/*.tsv; do
    [ -f "$f" ] || continue
    lineno=0
    while IFS="$tab" read -r want frag cmd || [ -n "${want:-}" ]; do
        lineno=$((lineno + 1))
        case $want in ''|'#'*) continue ;; esac
        timeout 30 sh -c "$cmd" >"$T/out" 2>"$T/err" </dev/null
        got=$?
        why=""
        [ "$got" = "$want" ] || why="exit $got, expected $want"
        grep -qiF -- "$frag" "$T/err" || why="${why:+$why; }stderr lacks '$frag'"
        if grep -qE "Sanitizer|runtime error:|Segmentation|Aborted" "$T/err"; then why="${why:+$why; }sanitizer or crash report"; fi
        if [ -n "$why" ]; then
            fail=$((fail + 1))
            echo "FAIL $f:$lineno: $cmd"
            echo "     $why"
            sed 's/^/     stderr: /' "$T/err" | head -5
        else
            pass=$((pass + 1))
        fi
    done < "$f"
done
echo "bad inputs: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

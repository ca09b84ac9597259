#!/bin/sh
# run.sh BUILD [GROUP...]: run the test suite against the binaries in BUILD.
# Groups: unit (tests/unit/test_*.c programs), sh (tests/sh/*.sh), bad
# (tests/bad/run.sh, the hostile-input corpus). Default: all of them.
# Each test runs from the repository root; its output is kept in
# BUILD/test-logs/NAME.log and shown when it fails.
set -u
cd "$(dirname "$0")/.."
build=${1:?usage: tests/run.sh BUILD [unit|sh|bad]...}
shift
groups=${*:-unit sh bad}
export CLLM_BUILD="$PWD/$build"
export CLLM_MODEL="${CLLM_MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
export CLLM_DATA="${CLLM_DATA:-$(cd .. && pwd)/shared/data}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
logs="$build/test-logs"
mkdir -p "$logs"
pass=0 fail=0 failed=""

run_one() { # name command...
    name=$1; shift
    start=$(date +%s)
    if "$@" >"$logs/$name.log" 2>&1; then
        pass=$((pass + 1)); echo "PASS $name ($(( $(date +%s) - start ))s)"
    else
        rc=$?
        fail=$((fail + 1)); failed="$failed $name"
        echo "FAIL $name (exit $rc)"; tail -n 30 "$logs/$name.log" | sed 's/^/    /'
    fi
}

for g in $groups; do
    case $g in
    unit) for t in "$build"/tests/test_*; do [ -x "$t" ] && run_one "$(basename "$t")" "$t"; done ;;
    sh)   for t in tests/sh/*.sh; do [ -f "$t" ] && run_one "$(basename "$t" .sh)" sh "$t"; done ;;
    bad)  [ -f tests/bad/run.sh ] && run_one bad-inputs sh tests/bad/run.sh ;;
    *)    echo "run.sh: unknown group $g" >&2; exit 2 ;;
    esac
done
echo "$pass passed, $fail failed${failed:+:$failed}"
[ "$fail" -eq 0 ]

#!/bin/sh
# fuzz_replay.sh: replay every committed fuzz corpus (tests/fuzz/corpus/TARGET/)
# through BUILD/tools/fuzz-replay-TARGET, the fuzz targets linked without
# libFuzzer. A crash, an abort (a broken property) or a sanitizer report fails.
set -u
cd "$(dirname "$0")/../.."
B=${CLLM_BUILD:?set CLLM_BUILD}
export CLLM_MODEL="${CLLM_MODEL:-$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
fail=0
for dir in tests/fuzz/corpus/*/; do
    t=$(basename "$dir")
    bin="$B/tools/fuzz-replay-$t"
    if [ ! -x "$bin" ]; then echo "missing $bin"; fail=1; continue; fi
    if "$bin" "$dir" 2>"$B/fuzz-replay-$t.err"; then
        echo "ok $t: $(tail -n 1 "$B/fuzz-replay-$t.err")"
    else
        echo "FAIL $t (exit $?)"; tail -n 20 "$B/fuzz-replay-$t.err"; fail=1
    fi
done
exit $fail

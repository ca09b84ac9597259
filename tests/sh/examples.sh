#!/bin/sh
# examples.sh: every example's toy-size run (make test) works end to end.
set -eu
make --no-print-directory -C examples/gsm8k test BIN="$CLLM_BUILD" MODEL="$CLLM_MODEL" DATA="$CLLM_DATA"
echo "examples ran"

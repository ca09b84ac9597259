#!/bin/sh
# gpu-check.sh: the CUDA backend's check on a GPU machine (docs/CUDA.md).
#
#   scripts/gpu-check.sh stage [BUILD]   here (no GPU needed): build test_cuda
#        statically (make STATIC=1 BUILD=BUILD, default build-static) and
#        fill .stage/ (git-ignored): .stage/a = first half of the model,
#        .stage/b = second half + the stripped, gzipped test_cuda. Each half
#        fits the device tool's 64 MiB carry limit with the working tree.
#   scripts/gpu-check.sh put             device call 1 (carry .stage/a):
#        keeps the first half in /root/stage (the machine stays warm ~30 s).
#   scripts/gpu-check.sh run [BUILD]     device call 2 (carry .stage/b), at once:
#        joins the model (sha256 checked), unpacks test_cuda, then
#          1. nvidia-smi;
#          2. test_cuda --bench: CUDA vs CPU logits (tiny random models,
#             SmolLM2), GPU AR vs CPU AR, Jacobi == AR on the GPU, timings;
#          3. compute-sanitizer memcheck of test_cuda on the tiny models;
#          4. summary.txt: verdicts and BENCH lines.
#        Without staged files it uses BUILD/tests/test_cuda and $CLLM_MODEL or
#        models/. Results in $OUT (else /tmp/gpu-check-out): nvidia-smi.txt,
#        test_cuda.log, memcheck.log, summary.txt. Each step is time-limited;
#        the whole run stays under 5 minutes. Exit 0 when every step passed.
set -u
cd "$(dirname "$0")/.."
mode=${1:-run}
[ $# -gt 0 ] && shift
model_src=models/SmolLM2-135M-Instruct.Q4_1.gguf

case $mode in
stage)
    build=${1:-build-static}
    make --no-print-directory STATIC=1 BUILD="$build" "$build/tests/test_cuda" >&2 || exit 1
    [ -f "$model_src" ] || { echo "gpu-check: $model_src missing (make setup)" >&2; exit 1; }
    rm -rf .stage/a .stage/b
    mkdir -p .stage/a .stage/b
    split -b 50M "$model_src" .stage/model.part-
    mv .stage/model.part-aa .stage/a/ && mv .stage/model.part-ab .stage/b/ || exit 1
    [ -z "$(ls .stage/model.part-* 2>/dev/null)" ] || { echo "gpu-check: model split in more than 2 parts" >&2; exit 1; }
    strip -o .stage/test_cuda "$build/tests/test_cuda" && gzip -9 -c .stage/test_cuda >.stage/b/test_cuda.gz || exit 1
    rm -f .stage/test_cuda
    du -sh .stage/a .stage/b >&2
    exit 0 ;;
put)
    mkdir -p /root/stage && cp .stage/a/model.part-aa /root/stage/ && ls -la /root/stage
    exit $? ;;
run) ;;
*) echo "usage: scripts/gpu-check.sh stage [BUILD] | put | run [BUILD]" >&2; exit 2 ;;
esac

build=${1:-build-static}
out=${OUT:-/tmp/gpu-check-out}
mkdir -p "$out"
sum=$out/summary.txt
: >"$sum"
status=0
note() { echo "$*" | tee -a "$sum"; }
t=$build/tests/test_cuda

if [ -f .stage/b/test_cuda.gz ]; then
    mkdir -p /root/stage/tests && gunzip -c .stage/b/test_cuda.gz >/root/stage/tests/test_cuda &&
        chmod +x /root/stage/tests/test_cuda && t=/root/stage/tests/test_cuda
fi
if [ -f .stage/b/model.part-ab ] && [ -f /root/stage/model.part-aa ]; then
    cat /root/stage/model.part-aa .stage/b/model.part-ab >/root/stage/model.gguf
    want=$(cut -d' ' -f1 scripts/model.sha256)
    [ "$(sha256sum /root/stage/model.gguf | cut -d' ' -f1)" = "$want" ] || note "staged model: sha256 mismatch"
fi
if [ -z "${CLLM_MODEL:-}" ]; then
    for m in /root/stage/model.gguf "$model_src"; do
        [ -f "$m" ] && { CLLM_MODEL=$m; break; }
    done
fi
export CLLM_MODEL="${CLLM_MODEL:-$model_src}"
note "gpu-check: $(date -u +%FT%TZ) test=$t model=$CLLM_MODEL"

timeout 20 nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || note "nvidia-smi: failed"
grep -E 'NVIDIA-SMI|MiB' "$out/nvidia-smi.txt" | head -n 3 | tee -a "$sum"

if [ ! -x "$t" ]; then
    note "FAIL: $t missing (scripts/gpu-check.sh stage, then put and run)"
    exit 1
fi
# cuBLAS is linked dynamically: find it if the loader does not.
if ldd "$t" | grep -q 'not found'; then
    pyn=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null)
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda-*/lib* /usr/local/cuda-*/targets/*/lib \
             ${pyn:+$pyn/cublas/lib} ${pyn:+$pyn/cu13/lib}; do
        [ -e "$d/libcublas.so.13" ] && { LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; export LD_LIBRARY_PATH; break; }
    done
    ldd "$t" | grep 'not found' | tee -a "$sum"
fi

# 2. parity, Jacobi == AR, benchmark (the CPU reference uses the machine's cores)
timeout 200 "$t" --bench >"$out/test_cuda.log" 2>&1
rc=$?
grep -E '^(ok|skip|device|tiny|smollm2|NEAR-TIE|BENCH)' "$out/test_cuda.log" | tee -a "$sum"
if [ $rc -ne 0 ]; then note "FAIL test_cuda (exit $rc)"; tail -n 20 "$out/test_cuda.log" | tee -a "$sum"; status=1
elif grep -q '^skip: ' "$out/test_cuda.log"; then note "FAIL test_cuda: no device"; status=1
elif grep -q '^skip smollm2' "$out/test_cuda.log"; then note "INCOMPLETE test_cuda: tiny models passed, SmolLM2 not loaded"; status=1
else note "PASS test_cuda"; fi

# 3. memcheck on the tiny models (the SmolLM2 part skips: no model)
if command -v compute-sanitizer >/dev/null 2>&1; then
    CLLM_MODEL=/nonexistent timeout 120 compute-sanitizer --tool memcheck --leak-check full \
        --error-exitcode 9 "$t" >"$out/memcheck.log" 2>&1
    rc=$?
    tail -n 3 "$out/memcheck.log" | tee -a "$sum"
    if [ $rc -eq 0 ]; then note "PASS memcheck"; else note "FAIL memcheck (exit $rc)"; status=1; fi
else
    note "SKIP memcheck: no compute-sanitizer on PATH"
fi
exit $status

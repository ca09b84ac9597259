#!/bin/sh
# check.sh [BUILD]: the CUDA tests under the CPU emulation (make cuemu-check),
# from the repository root; logs in BUILD/test-logs/, shown when a run fails.
#   selftest             the emulator's own test (tests/cuemu/selftest.cu)
#   test_cuda            the tiny models (the SmolLM2 part is skipped: CLLM_MODEL
#                        points nowhere; at emulation speed it would take hours)
#   test_cuda_variant    the same without CUDA graphs, with 16-row products
#                        (CLLM_CUDA_GEMM_ROWS), without the few-row path
#                        (CLLM_CUDA_MM16=0: every product through
#                        cuBLAS, attention tiled) and every block, warp and
#                        lane run in reverse order (CUEMU_ORDER=rev, so a
#                        tile's first K slice takes its last ticket); the
#                        16-row call must still equal 16 one-row calls
#   test_cuda_cp_now     test_cuda with cp.async copies landing at issue
#                        (CUEMU_CP_ASYNC=now) instead of at the wait that covers
#                        them (the default catches a read before the wait, this
#                        one a stage refilled before every thread has read it),
#                        and the fixed-order kernel's 128-row tiles for every
#                        call (CLLM_CUDA_MT_ROWS=128; by shape the tiny models'
#                        calls take 64), K in slices of 64 (every product split)
#                        and calls in pieces of 16 rows (CLLM_CUDA_MT_KSLICE,
#                        CLLM_CUDA_MT_WS_ROWS)
#   test_cuda_train      the training parity test
#   test_cuda_train_rev  its fork tests again with every block, warp and lane
#                        in reverse order (CUEMU_ORDER=rev; CLLM_TEST_CUDA_TRAIN_ONLY
#                        =forks): in a chunk of loss rows where some rows save
#                        teacher slots that others read, a launch that ignored
#                        the host's split would read them before the write
#   test_train_attention the training attention kernels' forks, kernel by kernel
#   e2e                  tests/cuemu/e2e.sh: cllm-gen / cllm-traj --device cuda
#   dp                   tests/cuemu/dp.sh: cllm-train --device cuda on 1 and 2
#                        ranks with the emulated NCCL (libnccl-emu.so) and with
#                        --allreduce mpi
#   gpu-check-dry        scripts/gpu-check-dry.sh: scripts/gpu-check.sh's every
#                        step run here with stand-ins for the GPU (its paths,
#                        options, parsing of the programs' output, comparisons,
#                        exit status), so that a change to a program cannot
#                        break the script unseen before a rare GPU session
# A run also fails when the emulator printed a note (work waited for on one
# stream while an unordered stream held earlier work: a missing ordering).
set -u
cd "$(dirname "$0")/../.."
B=${1:-build-cuemu}
logs=$B/test-logs
mkdir -p "$logs"
export CLLM_MODEL=/nonexistent
pass=0 fail=0 failed=""

run() { # name command...
    name=$1
    shift
    start=$(date +%s)
    if "$@" > "$logs/$name.log" 2>&1 && ! grep -q '^cuemu: note' "$logs/$name.log"; then
        pass=$((pass + 1))
        echo "PASS $name ($(($(date +%s) - start))s)"
    else
        fail=$((fail + 1))
        failed="$failed $name"
        echo "FAIL $name"
        tail -n 30 "$logs/$name.log" | sed 's/^/    /'
    fi
}

# the emulator itself: what must work, and what it must refuse (mode: message)
selftest() {
    "$B/cuemu-selftest" ok || return 1
    for m in "exited-lane:has exited" "sync-vs-shuffle:waits at __syncthreads" \
             "partial-warp:has no such thread" "copy-out-of-bounds:not inside one cudaMalloc" \
             "pdl-no-wait:never called cudaGridDependencySynchronize" \
             "pdl-trigger-first:cudaTriggerProgrammaticLaunchCompletion before" \
             "pdl-write-early:wrote device memory" \
             "pdl-read-early:which the kernel before it (inc_kernel) wrote" \
             "cp-async-in-flight:cp.async copies in flight"; do
        if "$B/cuemu-selftest" "${m%%:*}" 2> "$logs/selftest.err"; then
            echo "selftest ${m%%:*}: not refused"; return 1
        fi
        grep -q "${m#*:}" "$logs/selftest.err" || { echo "selftest ${m%%:*}:"; cat "$logs/selftest.err"; return 1; }
        echo "selftest ${m%%:*}: refused: $(head -1 "$logs/selftest.err")"
    done
}
run selftest selftest
run test_cuda "$B/tests/test_cuda"
run test_cuda_variant env CLLM_CUDA_GRAPHS=0 CLLM_CUDA_GEMM_ROWS=16 CLLM_CUDA_MM16=0 CLLM_CUDA_MT_KSLICE=32 \
    CUEMU_ORDER=rev "$B/tests/test_cuda"
run test_cuda_cp_now env CUEMU_CP_ASYNC=now CLLM_CUDA_MT_ROWS=128 CLLM_CUDA_MT_KSLICE=64 CLLM_CUDA_MT_WS_ROWS=16 \
    "$B/tests/test_cuda"
run test_cuda_train "$B/tests/test_cuda_train"
run test_cuda_train_rev env CUEMU_ORDER=rev CLLM_TEST_CUDA_TRAIN_ONLY=forks "$B/tests/test_cuda_train"
run test_train_attention "$B/tests/test_train_attention"
run e2e sh tests/cuemu/e2e.sh "$B"
if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then run dp sh tests/cuemu/dp.sh "$B"
else echo "skip dp: no models/SmolLM2-135M-Instruct.Q4_1.gguf for make-tiny's tokenizer"; fi
if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then run gpu-check-dry env CUEMU_BUILD="$B" sh scripts/gpu-check-dry.sh
else echo "skip gpu-check-dry: no models/SmolLM2-135M-Instruct.Q4_1.gguf for make-tiny's tokenizer"; fi
echo "cuemu: $pass passed, $fail failed${failed:+:$failed}"
[ "$fail" -eq 0 ]

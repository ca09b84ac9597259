#!/bin/sh
# gpu-check-dry.sh: scripts/gpu-check.sh's own logic run here, without a GPU, before a
# GPU session spends its minutes on it (docs/CUDA.md "Running the check on a GPU").
#
#   make -j1 cuemu build-cuemu/tools/cllm-model-info      # once
#   scripts/gpu-check-dry.sh ["STEPS"]                      # default "all p"; ~4 min on 2 cores
#
# It runs `gpu-check.sh run BUILD` with every step's commands, paths, parsing and
# comparisons as on the GPU, but: BUILD is a folder of wrappers that run build-cuemu's
# programs with --device cpu in place of --device cuda (no device, no --allreduce nccl);
# the test programs (test_cuda, test_cuda_train, test_nccl, test_train_attention) are
# stubs that print lines of their real output's shape; nvidia-smi, compute-sanitizer
# and ncu are stubs (the sanitizers run the program without checking it), python3 runs
# scripts/hf_baseline.py as a stub; timeout gives each command 20x its limit (the CPU
# runs are slower than the GPU's), the budget is an hour; CLLM_MODEL is a random model
# with SmolLM2's 49152 ids (tests/golden/gsm8k20_ids.txt fits it; make-tiny, from
# SmolLM2's GGUF) and the data the first 16 GSM8K training questions.
# What it shows: every step ran to its end, no shell error, no FAIL/DIFF/SKIP line
# in summary.txt; exit 0 then. It cannot show kernels, speed or the GPU's numbers.
#   GPU_CHECK_DRY_FAIL=1b     the tiny-model test fails until CLLM_CUDA_FUSE=0 is set
#                             (the switch loop of step 1b; exit 1, the other steps pass)
#   GPU_CHECK_BUDGET=N        a budget of N s (e.g. 0: every timed step says SKIP)
#   GPU_CHECK_DRY_KEEP=1      keep the folder (printed) with the out/ files
set -u
cd "$(dirname "$0")/.." || exit 1
ce=${CUEMU_BUILD:-build-cuemu}
for p in cllm-traj cllm-gen cllm-cat cllm-bench cllm-train tools/make-tiny tools/cllm-model-info; do
    [ -x "$ce/$p" ] || { echo "gpu-check-dry: $ce/$p missing: make -j1 cuemu $ce/tools/cllm-model-info" >&2; exit 2; }
done
src=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$src" ] || { echo "gpu-check-dry: $src missing (make setup)" >&2; exit 2; }
train=${CLLM_DATA:-../shared/data}/gsm8k_train.jsonl
[ -f "$train" ] || { echo "gpu-check-dry: no $train (CLLM_DATA)" >&2; exit 2; }
D=$(mktemp -d /tmp/gpu-check-dry.XXXXXX)
[ "${GPU_CHECK_DRY_KEEP:-0}" = 1 ] || trap 'rm -rf "$D"' EXIT
ce=$(cd "$ce" && pwd)
mkdir -p "$D/build/tests" "$D/build/tools" "$D/path" "$D/data" "$D/out"

# the programs: build-cuemu's, on the CPU
for p in cllm-traj cllm-gen cllm-cat cllm-bench cllm-train; do
    cat >"$D/build/$p" <<EOF
#!/bin/sh
# --device cuda -> cpu; --device auto or none -> cpu; --allreduce nccl dropped
dev=0; n=\$#
while [ \$n -gt 0 ]; do
    a=\$1; shift; n=\$((n - 1))
    case \$a in
    --device) shift; n=\$((n - 1)); set -- "\$@" --device cpu; dev=1 ;;
    --allreduce) shift; n=\$((n - 1)) ;;
    *) set -- "\$@" "\$a" ;;
    esac
done
case $p in cllm-cat) ;; *) [ \$dev = 1 ] || set -- --device cpu "\$@" ;; esac
exec "$ce/$p" "\$@"
EOF
done
for p in make-tiny cllm-model-info; do
    printf '#!/bin/sh\nexec "%s/tools/%s" "$@"\n' "$ce" "$p" >"$D/build/tools/$p"
done
# the tests: their output's shape
cat >"$D/build/tests/test_cuda" <<'EOF'
#!/bin/sh
echo "device: cuemu-dry (stub)"
if [ "${GPU_CHECK_DRY_FAIL:-}" = 1b ] && [ "${CLLM_CUDA_FUSE:-}" != 0 ]; then
    echo "CHECK failed: dry run, fails until CLLM_CUDA_FUSE=0"; exit 1
fi
echo "tiny qwen2: worst row relerr 0.001"; echo "ok tiny-qwen2"
if [ "${CLLM_MODEL:-}" = /nonexistent ]; then echo "skip smollm2: /nonexistent: No such file or directory"; exit 0; fi
echo "smollm2: worst row relerr 0.02"; echo "ok smollm2"
[ "${1:-}" = --bench ] && echo "BENCH stub: 1 tokens/s"
exit 0
EOF
cat >"$D/build/tests/test_cuda_train" <<'EOF'
#!/bin/sh
echo "device: cuemu-dry (stub)"
case "${1:-}" in
--bench) echo "bench: 1 training tokens/s, 1.0 ms a step, MFU 0.0 % (stub)"; echo "BENCH stub" ;;
*) echo "ok tiny-train-llama (stub)" ;;
esac
EOF
printf '#!/bin/sh\necho "device: cuemu-dry (stub)"; echo "ok all-reduce, 1 rank (stub)"\n' >"$D/build/tests/test_nccl"
printf '#!/bin/sh\necho "forks: ok (stub)"\n' >"$D/build/tests/test_train_attention"
# the machine's tools
printf '#!/bin/sh\necho "| NVIDIA-SMI 000.00 (stub) |"; echo "| 0 cuemu-dry 0MiB / 81559MiB |"\n' >"$D/path/nvidia-smi"
cat >"$D/path/compute-sanitizer" <<'EOF'
#!/bin/sh
# options, then the program: run it unchecked
while [ $# -gt 0 ]; do
    case $1 in
    --tool|--leak-check|--error-exitcode) shift 2 ;;
    -*) shift ;;
    *) break ;;
    esac
done
echo "========= COMPUTE-SANITIZER (stub)"
"$@"; rc=$?
echo "========= ERROR SUMMARY: 0 errors (stub)"
exit $rc
EOF
cat >"$D/path/ncu" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do
    case $1 in
    --launch-skip|--launch-count|-k|--section) shift 2 ;;
    -*) shift ;;
    *) break ;;
    esac
done
"$@"; rc=$?
echo "  matmul_forward_kernel1 (1, 1, 1)x(1, 1, 1) (stub)"; echo "    Duration  us  1"
exit $rc
EOF
py=$(command -v python3 || echo /usr/bin/python3)
cat >"$D/path/python3" <<EOF
#!/bin/sh
case "\${1:-}" in
scripts/hf_baseline.py)
    [ -f "\$2/config.json" ] || { echo "hf_baseline stub: no \$2/config.json" >&2; exit 1; }
    echo "BENCH hf-eager-generate: 100 tokens in 10.00 s = 10.0 tokens/s (stub)" ;;
*) exec "$py" "\$@" ;;
esac
EOF
rt=$(command -v timeout)
printf '#!/bin/sh\nn=$1; shift\nexec "%s" $((n * 20)) "$@"\n' "$rt" >"$D/path/timeout"
chmod +x "$D/build"/* "$D/build/tests"/* "$D/build/tools"/* "$D/path"/*

head -n 16 "$train" >"$D/data/gsm8k_train.jsonl"
"$ce/tools/make-tiny" -o "$D/tiny" --from "$src" --vocab 49152 --dim 64 --ff 128 --layers 2 --heads 4 --kv-heads 2 \
    --seed 1 2>/dev/null && "$ce/tools/cllm-model-info" "$D/tiny" --convert "$D/tiny.gguf" >/dev/null ||
    { echo "gpu-check-dry: the model could not be made" >&2; exit 2; }

echo "gpu-check-dry: $D, steps ${1:-all p}" >&2
T0=$(date +%s)
OUT=$D/out CLLM_MODEL=$D/tiny.gguf CLLM_DATA=$D/data GPU_CHECK_STEPS=${1:-all p} \
    GPU_CHECK_BUDGET=${GPU_CHECK_BUDGET:-3600} PATH=$D/path:$PATH \
    scripts/gpu-check.sh run "$D/build" >"$D/stdout" 2>"$D/stderr"
rc=$?
echo "gpu-check-dry: gpu-check.sh exit $rc after $(( $(date +%s) - T0 )) s" >&2
bad=0
# (ldd on the stub test_cuda: "not a dynamic executable")
if grep -v 'not a dynamic executable' "$D/stderr" | grep -q .; then
    echo "gpu-check-dry: gpu-check.sh wrote to stderr:" >&2; head -n 20 "$D/stderr" >&2; bad=1
fi
if grep -aE '^(FAIL|DIFF|INCOMPLETE|SKIP|NOTE)' "$D/out/summary.txt"; then
    echo "gpu-check-dry: the lines above in summary.txt" >&2; bad=1
fi
if LC_ALL=C grep -q '[^[:print:][:space:]]' "$D/out/summary.txt"; then
    echo "gpu-check-dry: summary.txt holds bytes that are not text" >&2; bad=1
fi
[ -s "$D/out/logs.tar.gz" ] && tar -tzf "$D/out/logs.tar.gz" >/dev/null || { echo "gpu-check-dry: no logs.tar.gz in \$OUT" >&2; bad=1; }
echo "gpu-check-dry: summary.txt has $(wc -l <"$D/out/summary.txt") lines; logs.tar.gz: $(tar -tzf "$D/out/logs.tar.gz" 2>/dev/null | grep -v '/$' | tr '\n' ' ')" >&2
[ "${GPU_CHECK_DRY_KEEP:-0}" = 1 ] && echo "gpu-check-dry: kept $D" >&2
[ $rc = 0 ] && [ $bad = 0 ] && { echo "gpu-check-dry: ok" >&2; exit 0; }
echo "gpu-check-dry: NOT ok (exit $rc)" >&2
exit 1

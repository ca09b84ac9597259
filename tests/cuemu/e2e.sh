#!/bin/sh
# e2e.sh BUILD: the binaries of an emulated CUDA build (make cuemu) end to end,
# --device cuda against --device cpu, on the committed tiny Qwen2 model
# (tests/golden/tiny-qwen2, token-id prompts) and, when the SmolLM2 file is
# there for its tokenizer, a make-tiny LLaMA model with text prompts (the last
# one long enough to make the KV cache grow):
#   cllm-gen AR: --device auto picks the device without a word and equals
#     --device cuda; the GPU's tokens against the CPU's are printed, not
#     checked: these random models have top-2 logit margins of ~1e-3 of the
#     row's scale, so bf16 against fp32 parts at near-ties and the answers
#     then run apart (test_cuda checks the logits themselves, with margins);
#   cllm-gen Jacobi n = 8 on the GPU == AR on the GPU, token for token;
#   cllm-gen --batch 4 == --batch 1 on the GPU;
#   cllm-traj --batch 4 == --batch 1 on the GPU (records equal; by default
#     the windows' products go through cuBLAS, whose stand-in here sums each
#     row alone), and the share of records equal to the CPU's is printed; the
#     same with --batch-invariant (every product through the fixed-order
#     kernel: equal by construction, on a GPU too);
#   CLLM_CUDA_STATS / CLLM_CUDA_PROFILE print their report and change no answer.
set -eu
B=${1:-build-cuemu}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
outputs() { "$B/cllm-cat" --jsonl "$1" | grep '"type":"gen"' | sed 's/.*"output":\[\([^]]*\)\].*/\1/'; }
trajs() { "$B/cllm-cat" --type traj -j "$1" | sed 's/"time_s":[^,}]*//'; }

# positions where two gen streams agree, as "same total"
agree() {
    outputs "$1" > "$T/a.txt"
    outputs "$2" > "$T/b.txt"
    paste -d'|' "$T/a.txt" "$T/b.txt" | awk -F'|' '{
        n = split($1, x, ","); m = split($2, y, ","); if (m > n) n = m
        for (i = 1; i <= n; i++) { t++; if (x[i] == y[i]) s++ } }
        END { print s + 0, t + 0 }'
}

check_model() { # name model prompts gen-options...
    name=$1 m=$2 p=$3
    shift 3
    "$B/cllm-gen" -m "$m" --device cpu --max-new-tokens 24 "$@" "$p" > "$T/cpu.zst"
    "$B/cllm-gen" -m "$m" --max-new-tokens 24 "$@" "$p" > "$T/auto.zst" 2> "$T/auto.err"
    [ ! -s "$T/auto.err" ] || fail "$name: --device auto printed: $(cat "$T/auto.err")"
    "$B/cllm-gen" -m "$m" --device cuda --max-new-tokens 24 "$@" "$p" > "$T/ar.zst"
    set -- $(agree "$T/ar.zst" "$T/cpu.zst")
    echo "$name: cllm-gen AR, GPU vs CPU: $1 of $2 tokens equal"
    outputs "$T/auto.zst" > "$T/x.txt"
    outputs "$T/ar.zst" | cmp -s - "$T/x.txt" || fail "$name: --device auto differs from --device cuda"
}

check_gpu() { # name model prompts gen-options...
    name=$1 m=$2 p=$3
    shift 3
    "$B/cllm-gen" -m "$m" --device cuda --max-new-tokens 24 "$@" "$p" > "$T/ar.zst"
    "$B/cllm-gen" -m "$m" --device cuda --max-new-tokens 24 --method jacobi -n 8 "$@" "$p" > "$T/ja.zst"
    "$B/cllm-gen" -m "$m" --device cuda --max-new-tokens 24 --batch 4 "$@" "$p" > "$T/b4.zst"
    outputs "$T/ar.zst" > "$T/ar.txt"
    outputs "$T/ja.zst" | cmp -s - "$T/ar.txt" || fail "$name: Jacobi differs from AR on the GPU"
    outputs "$T/b4.zst" | cmp -s - "$T/ar.txt" || fail "$name: cllm-gen --batch 4 differs from --batch 1 on the GPU"
    echo "$name: cllm-gen on the GPU: Jacobi n=8 == AR, --batch 4 == --batch 1"
    "$B/cllm-traj" -m "$m" -n 8 --max-new-tokens 24 -q --device cuda --batch 1 "$@" "$p" > "$T/t1.zst"
    "$B/cllm-traj" -m "$m" -n 8 --max-new-tokens 24 -q --device cuda --batch 4 "$@" "$p" > "$T/t4.zst"
    "$B/cllm-traj" -m "$m" -n 8 --max-new-tokens 24 -q --device cpu --batch 4 "$@" "$p" > "$T/tc.zst"
    trajs "$T/t1.zst" > "$T/t1.jsonl"
    trajs "$T/t4.zst" | cmp -s - "$T/t1.jsonl" || fail "$name: cllm-traj --batch 4 differs from --batch 1 on the GPU"
    trajs "$T/tc.zst" > "$T/tc.jsonl"
    same=$(paste -d'\n' "$T/t1.jsonl" "$T/tc.jsonl" | awk 'NR % 2 { a = $0; next } { t++; s += a == $0 } END { print s + 0 "/" t + 0 }')
    echo "$name: cllm-traj on the GPU: --batch 4 == --batch 1; $same records equal to the CPU's"
    # --batch-invariant: every product through matmul.cu's fixed-order kernel, --batch 4 ==
    # --batch 1 by construction (the default's window calls rely on cuBLAS' choice)
    for b in 1 4; do
        "$B/cllm-traj" -m "$m" -n 8 --max-new-tokens 24 -q --device cuda --batch $b --batch-invariant "$@" \
            "$p" > "$T/tf$b.zst"
        trajs "$T/tf$b.zst" > "$T/tf$b.jsonl"
    done
    cmp -s "$T/tf1.jsonl" "$T/tf4.jsonl" || fail "$name: --batch-invariant: cllm-traj --batch 4 differs from --batch 1"
    echo "$name: cllm-traj on the GPU with --batch-invariant: --batch 4 == --batch 1"
}

# tiny Qwen2 (q/k/v biases, untied head), prompts of 1..116 token ids
i=0
while [ $i -lt 6 ]; do
    n=$((1 + i * 23)) j=0 line=
    while [ $j -lt $n ]; do
        line="$line${line:+,}$(( (i * 37 + j * 11 + j * j) % 250 + 3 ))"
        j=$((j + 1))
    done
    echo "{\"tokens\":[$line]}"
    i=$((i + 1))
done > "$T/ids.jsonl"
check_model tiny-qwen2 tests/golden/tiny-qwen2 "$T/ids.jsonl"
check_gpu tiny-qwen2 tests/golden/tiny-qwen2 "$T/ids.jsonl"

# CLLM_CUDA_STATS / CLLM_CUDA_PROFILE (docs/CUDA.md "Where the time goes"): a
# summary line per forward state, per-op device times, and the same answers
for v in STATS PROFILE; do
    env "CLLM_CUDA_$v=1" "$B/cllm-gen" -m tests/golden/tiny-qwen2 --device cuda --max-new-tokens 8 \
        "$T/ids.jsonl" > "$T/d.zst" 2> "$T/d.err"
    grep -q '^cllm: CUDA forward: [0-9]* calls, [0-9]* rows' "$T/d.err" || fail "CLLM_CUDA_$v: no summary line"
    grep -q '^cllm: CUDA start-up: context [0-9.]* s .* model upload [0-9.]* s$' "$T/d.err" ||
        fail "CLLM_CUDA_$v: no start-up line"
    "$B/cllm-gen" -m tests/golden/tiny-qwen2 --device cuda --max-new-tokens 8 "$T/ids.jsonl" > "$T/n.zst"
    outputs "$T/n.zst" > "$T/n.txt"
    outputs "$T/d.zst" | cmp -s - "$T/n.txt" || fail "CLLM_CUDA_$v changes the answers"
done
grep -q '^cllm:   attention .* us per op' "$T/d.err" || fail "CLLM_CUDA_PROFILE: no per-op lines"
echo "tiny-qwen2: CLLM_CUDA_STATS and CLLM_CUDA_PROFILE report, answers unchanged"

# make-tiny LLaMA (tied head, GQA 2:1), GSM8K-style text prompts
if [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
    "$B/tools/make-tiny" -o "$T/tiny" --seed 3 2>/dev/null
    printf '%s\n' "Natalia sold clips to 48 of her friends." "How many apples are left?" \
        "A train leaves at 3 pm and travels 60 miles." "Add 17 and 25." "What is the capital of France?" \
        > "$T/text.txt"
    # last, ~840 tokens: past the first KV cache's 512 positions, so the cache
    # grows (cllm_cuda_kv_grow) while other sequences are cached
    i=0 long=
    while [ $i -lt 60 ]; do long="$long seven plus eight is fifteen,"; i=$((i + 1)); done
    echo "$long" >> "$T/text.txt"
    check_model make-tiny "$T/tiny" "$T/text.txt" --lines
    check_gpu make-tiny "$T/tiny" "$T/text.txt" --lines
else
    echo "skip make-tiny: no models/SmolLM2-135M-Instruct.Q4_1.gguf for its tokenizer"
fi
echo "e2e: ok"

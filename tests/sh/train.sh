#!/bin/sh
# train.sh: cllm-train end to end on a tiny random model (tests/tools/make-tiny:
# SmolLM2's tokenizer cut to 512 ids, 2 layers, width 64):
#   1. SFT straight from GSM8K JSONL runs and the loss falls;
#   2. 2N steps straight == N steps, kill -9, resume from the step-N
#      checkpoint, N more (output weights byte for byte, and the losses);
#   3. SIGTERM finishes the step, writes a checkpoint, exits 143, closes the
#      metric stream with an end record marked "interrupted": "SIGTERM";
#   4. damaged checkpoints (truncated, flipped, foreign) and other options are
#      refused with a clear message;
#   5. CLLM training (global, local, --use-labels) on cllm-traj output runs,
#      writes GGUF and HF outputs that load, the student as a fork of x||y*
#      equals the student in a pass of its own (--separate-passes), and a
#      traj stream made with another tokenizer is refused;
#   6. an output over the base's own directory keeps its tokenizer, and an
#      output that cannot be written (or a HF one of a partial-RoPE model,
#      which HF cannot say) is refused before training.
set -eu
B=$CLLM_BUILD
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
losses() { "$B/cllm-cat" -j "$1" | grep '"name":"loss"' | sed 's/.*"value":\([^,]*\),"step":\([0-9]*\).*/\2 \1/'; }

"$B/tools/make-tiny" -o "$T/tiny" 2>/dev/null
head -8 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p8.jsonl"
SFT="-m $T/tiny --objective sft --field question --template gsm8k --batch 4 --shuffle-buffer 8 -t 1 -q"

# 1. SFT: the loss falls.
"$B/cllm-train" $SFT --lr 3e-3 --warmup 0.1 --max-steps 30 -o "$T/sft" "$T/p8.jsonl" > "$T/sft.zst"
"$B/cllm-cat" --check -q "$T/sft.zst" || fail "SFT metric stream does not check"
first=$(losses "$T/sft.zst" | head -1 | cut -d' ' -f2)
last=$(losses "$T/sft.zst" | tail -1 | cut -d' ' -f2)
echo "SFT loss: step 1 $first, step 30 $last"
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.75 * a) }' || fail "SFT loss did not fall ($first -> $last)"
[ -f "$T/sft/model.safetensors" ] && [ -f "$T/sft/tokenizer.json" ] || fail "HF output directory incomplete"

# -q and --progress: the last one given counts (as cllm-traj's); $SFT ends in -q.
"$B/cllm-train" $SFT --lr 3e-3 --max-steps 3 --progress -o "$T/pq.gguf" "$T/p8.jsonl" > /dev/null 2> "$T/pq.err"
[ "$(grep -c ': step [0-9]*/3 loss' "$T/pq.err")" = 3 ] || fail "-q --progress: not a line per step: $(cat "$T/pq.err")"
"$B/cllm-train" $SFT --lr 3e-3 --max-steps 3 --progress -q -o "$T/pq.gguf" "$T/p8.jsonl" > /dev/null 2> "$T/pq.err"
[ ! -s "$T/pq.err" ] || fail "--progress -q: progress shown: $(cat "$T/pq.err")"
echo "-q and --progress: the last one counts"

# 2. Resume equals the straight run.
R="$SFT --lr 3e-3 --max-steps 12 --seed 7 --shuffle-buffer 3 $T/p8.jsonl"
"$B/cllm-train" $R -o "$T/straight.gguf" > "$T/straight.zst"
"$B/cllm-train" $R -o "$T/killed.gguf" --checkpoint-every 6 --keep 5 > "$T/killed.zst" &
pid=$!
i=0
while [ ! -f "$T/killed.gguf.ckpt/ckpt-00000006.cllmckpt" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[ -f "$T/killed.gguf.ckpt/ckpt-00000006.cllmckpt" ] || fail "no step-6 checkpoint"
ls "$T/killed.gguf.ckpt" | grep -v '^ckpt-0000000[0-9]\.cllmckpt$' && fail "stray files in the checkpoint directory"
"$B/cllm-train" $R -o "$T/resumed.gguf" --resume "$T/killed.gguf.ckpt/ckpt-00000006.cllmckpt" > "$T/resumed.zst"
cmp "$T/straight.gguf" "$T/resumed.gguf" || fail "resumed weights differ from the straight run"
losses "$T/straight.zst" | awk '$1 > 6' > "$T/l1"
losses "$T/resumed.zst" > "$T/l2"
[ "$(wc -l < "$T/l2")" = 6 ] && cmp "$T/l1" "$T/l2" || fail "resumed losses differ"
echo "resume: 12 straight == 6 + kill -9 + resume 6 (weights byte for byte, losses equal)"
# A directory resumes from its newest valid checkpoint.
"$B/cllm-train" $R -o "$T/resumed2.gguf" --resume "$T/killed.gguf.ckpt" > /dev/null
ls "$T/killed.gguf.ckpt"
# Checkpoint frequency does not change the result.
"$B/cllm-train" $R -o "$T/every1.gguf" --checkpoint-every 1 --keep 2 > /dev/null
cmp "$T/straight.gguf" "$T/every1.gguf" || fail "checkpointing changed the result"
[ "$(ls "$T/every1.gguf.ckpt" | wc -l)" = 2 ] || fail "--keep 2 kept $(ls "$T/every1.gguf.ckpt" | wc -l)"
perm=$(stat -c %a "$T/every1.gguf.ckpt/ckpt-00000012.cllmckpt")
[ "$perm" = "$(printf '%o' $(( 0666 & ~$(umask) )))" ] || fail "checkpoint permissions $perm"

# 3. SIGTERM: exit 143 after a checkpoint; the metric stream is whole but marked short.
"$B/cllm-train" $SFT --lr 3e-3 --max-steps 100000 --checkpoint-every 100000 -o "$T/term.gguf" "$T/p8.jsonl" > "$T/term.zst" 2> "$T/term.err" &
pid=$!
# The signal once the metric stream's header is out: the handler is in by then
# (a signal before it ends the run with no checkpoint; a fixed 2 s left that to
# the machine's speed), and a signal at any later moment still finishes a step
# and checkpoints it. Bounded: 30 s.
i=0
while [ "$(stat -c %s "$T/term.zst" 2>/dev/null || echo 0)" -lt 100 ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
kill -TERM $pid
rc=0
wait $pid || rc=$?
[ $rc = 143 ] || fail "SIGTERM: exit $rc, want 143"
ls "$T/term.gguf.ckpt"/ckpt-*.cllmckpt > /dev/null || fail "SIGTERM: no checkpoint"
"$B/cllm-cat" --check "$T/term.zst" 2> "$T/term.chk" || fail "SIGTERM: metric stream: $(cat "$T/term.chk")"
grep -q "interrupted (SIGTERM)" "$T/term.chk" || fail "SIGTERM: --check says $(cat "$T/term.chk")"
[ ! -e "$T/term.gguf" ] || fail "SIGTERM: wrote the output model"
echo "SIGTERM: exit 143, checkpoint $(ls "$T/term.gguf.ckpt")"

# 4. Damaged checkpoints and other options are refused.
ck="$T/killed.gguf.ckpt/ckpt-00000006.cllmckpt"
size=$(stat -c %s "$ck")
head -c $((size - 100)) "$ck" > "$T/trunc.cllmckpt"
cp "$ck" "$T/flip.cllmckpt"
printf '\001' | dd of="$T/flip.cllmckpt" bs=1 seek=5000 conv=notrunc 2>/dev/null
{ printf 'NOTACKPT'; tail -c +9 "$ck"; } > "$T/magic.cllmckpt"
head -c 16 "$ck" > "$T/short.cllmckpt"
for bad in trunc flip magic short; do
    rc=0
    "$B/cllm-train" $R -o "$T/bad.gguf" --resume "$T/$bad.cllmckpt" > /dev/null 2> "$T/bad.err" || rc=$?
    [ $rc = 1 ] || fail "$bad checkpoint: exit $rc"
    echo "  $bad: $(cat "$T/bad.err")"
done
rc=0
"$B/cllm-train" $SFT --lr 1e-3 --max-steps 12 --seed 7 --shuffle-buffer 3 "$T/p8.jsonl" -o "$T/bad.gguf" --resume "$ck" > /dev/null 2> "$T/bad.err" || rc=$?
[ $rc = 1 ] && grep -q "other options" "$T/bad.err" || fail "resume with another --lr accepted"
# one line naming what differs (it printed both option sets on lines of their own)
[ "$(wc -l < "$T/bad.err")" = 1 ] && grep -q "other options: lr=0.003 (now lr=0.001)\$" "$T/bad.err" \
    || fail "resume with another --lr: $(cat "$T/bad.err")"
echo "  other options: $(cat "$T/bad.err")"
rc=0
sed '1!G;h;$!d' "$T/p8.jsonl" > "$T/p8r.jsonl"
"$B/cllm-train" $SFT --lr 3e-3 --max-steps 12 --seed 7 --shuffle-buffer 3 -o "$T/bad.gguf" --resume "$ck" "$T/p8r.jsonl" > /dev/null 2> "$T/bad.err" || rc=$?
[ $rc = 1 ] && grep -q "input differs" "$T/bad.err" || fail "resume on another input accepted"
echo "  other input: $(cat "$T/bad.err")"

# 5. CLLM training on trajectories of the SFT model.
"$B/cllm-traj" -m "$T/sft" -n 8 --max-new-tokens 24 --field question --template gsm8k --labels -q "$T/p8.jsonl" > "$T/traj.zst"
"$B/cllm-train" -m "$T/sft" -o "$T/cllm.gguf" --lr 1e-3 --max-steps 6 --batch 2 -t 1 -q "$T/traj.zst" > "$T/c1.zst"
"$B/cllm-cat" -j "$T/c1.zst" | grep -q '"name":"consistency"' || fail "no consistency metric"
# The student as a fork of x||y* (the default) == the student in a pass of its
# own: the same weights (model-diff: max relative error 1e-5 per tensor; only
# the order of the weight gradients' sums differs) and losses (1e-6 relative),
# also without the AR loss's gradient (--ar-weight 0) and with mean rows.
metrics() { "$B/cllm-cat" -j "$1" | grep -E '"name":"(loss|consistency|ar)"' | sed 's/.*"name":"\([a-z]*\)","value":\([^,]*\),"step":\([0-9]*\).*/\3 \1 \2/'; }
for extra in "" "--ar-weight 0 --consistency-mean"; do
    "$B/cllm-train" -m "$T/sft" -o "$T/sep.gguf" --lr 1e-3 --max-steps 6 --batch 2 -t 1 -q $extra --separate-passes "$T/traj.zst" > "$T/sep.zst"
    "$B/cllm-train" -m "$T/sft" -o "$T/fork.gguf" --lr 1e-3 --max-steps 6 --batch 2 -t 1 -q $extra "$T/traj.zst" > "$T/fork.zst"
    "$B/tools/model-diff" -q "$T/fork.gguf" "$T/sep.gguf" > "$T/d" || { cat "$T/d"; fail "fork vs separate passes ($extra): weights differ"; }
    metrics "$T/sep.zst" > "$T/m1"
    metrics "$T/fork.zst" > "$T/m2"
    [ "$(wc -l < "$T/m1")" = 18 ] || fail "fork vs separate passes: $(wc -l < "$T/m1") loss metrics, want 18"
    paste "$T/m1" "$T/m2" | awk '$1 != $4 || $2 != $5 || ($3 - $6)^2 > 1e-12 * ($6^2 + 1e-30) { print; bad = 1 } END { exit bad }' \
        || fail "fork vs separate passes ($extra): losses differ"
    echo "fork == separate passes ($extra): $(tail -1 "$T/d"), losses equal to 1e-6"
done
"$B/cllm-train" -m "$T/sft" -o "$T/cllm-local" --loss local --use-labels --lr 1e-3 --max-steps 4 --batch 3 --grad-accum 2 -t 1 -q < "$T/traj.zst" > /dev/null
# A pipe that runs out before --max-steps: the steps it holds, a warning, the model written.
cat "$T/traj.zst" | "$B/cllm-train" -m "$T/sft" -o "$T/dry.gguf" --lr 1e-3 --max-steps 1000 --batch 2 -t 1 -q > "$T/dry.zst" 2> "$T/dry.err" \
    || fail "a pipe that runs dry: exit $?"
grep -q "warning: the input ended after step [0-9]* of 1000" "$T/dry.err" && [ -s "$T/dry.gguf" ] \
    || fail "a pipe that runs dry: no warning or no model ($(cat "$T/dry.err"))"
echo "pipe run dry: $(cat "$T/dry.err")"
echo "What is 2+2?" | "$B/cllm-gen" -m "$T/cllm.gguf" --lines --max-new-tokens 4 > /dev/null || fail "GGUF output does not load"
echo "What is 2+2?" | "$B/cllm-gen" -m "$T/cllm-local" --lines --max-new-tokens 4 > /dev/null || fail "HF output does not load"
# A stream from a model with another tokenizer is refused.
"$B/tools/make-tiny" -o "$T/other" --vocab 600 2>/dev/null
"$B/cllm-traj" -m "$T/other" -n 4 --max-new-tokens 4 --field question --template gsm8k -q "$T/p8.jsonl" > "$T/other.zst"
rc=0
"$B/cllm-train" -m "$T/sft" -o "$T/x.gguf" --max-steps 2 -q "$T/other.zst" > /dev/null 2> "$T/other.err" || rc=$?
[ $rc = 1 ] && grep -q "another tokenizer" "$T/other.err" || fail "another tokenizer's trajectories accepted (exit $rc)"
echo "other tokenizer: $(cat "$T/other.err")"
# 6. The output. Saved over its own HF source named another way ("/./"), it
# keeps the tokenizer files (they were copied onto themselves: truncated to 0
# bytes). An output that cannot be written is refused before the first step,
# not after the last (no metric stream at all).
cp -r "$T/tiny" "$T/own"
"$B/cllm-train" -m "$T/own" --objective sft --field question --template gsm8k -q --max-steps 1 -o "$T/./own" "$T/p8.jsonl" > /dev/null || fail "training into the base's own directory: exit $?"
cmp "$T/tiny/tokenizer.json" "$T/own/tokenizer.json" && cmp "$T/tiny/tokenizer_config.json" "$T/own/tokenizer_config.json" \
    || fail "training into the base's own directory spoilt its tokenizer files"
echo "What is 2+2?" | "$B/cllm-gen" -m "$T/own" --lines --max-new-tokens 2 > /dev/null || fail "the model saved over its base does not load"
cp "$T/p8.jsonl" "$T/p8.keep"
for out in "$T/none/x.gguf" "$T/p8.jsonl" "$T/tiny/config.json/x"; do
    rc=0
    "$B/cllm-train" $SFT --max-steps 1 -o "$out" "$T/p8.jsonl" > "$T/out.zst" 2> "$T/out.err" || rc=$?
    [ $rc = 1 ] && [ ! -s "$T/out.zst" ] && [ "$(wc -l < "$T/out.err")" = 1 ] || fail "-o $out: exit $rc, $(wc -c < "$T/out.zst") bytes of metrics, $(cat "$T/out.err")"
    echo "  -o $out: $(cat "$T/out.err")"
done
cmp -s "$T/p8.keep" "$T/p8.jsonl" || fail "-o INPUT changed the input"
# A model with partial RoPE (GGUF rope.dimension_count < the head size) is
# refused as a HF output before the first step (HF Llama rotates the whole
# head: the save dropped it); as GGUF it trains and keeps it.
"$B/tools/cllm-model-info" "$T/tiny" --rope-dim 4 --convert "$T/partial.gguf" > /dev/null || fail "no partial-RoPE GGUF"
rc=0
"$B/cllm-train" -m "$T/partial.gguf" --objective sft --field question --template gsm8k -q -t 1 --max-steps 1 \
    -o "$T/partial-hf" "$T/p8.jsonl" > "$T/out.zst" 2> "$T/out.err" || rc=$?
[ $rc = 1 ] && [ ! -s "$T/out.zst" ] && [ ! -e "$T/partial-hf" ] && [ "$(wc -l < "$T/out.err")" = 1 ] && grep -q "partial" "$T/out.err" \
    || fail "partial RoPE to HF: exit $rc, $(wc -c < "$T/out.zst") bytes of metrics, $(cat "$T/out.err")"
echo "  partial RoPE -o DIR: $(cat "$T/out.err")"
"$B/cllm-train" -m "$T/partial.gguf" --objective sft --field question --template gsm8k -q -t 1 --max-steps 1 \
    -o "$T/partial-out.gguf" "$T/p8.jsonl" > /dev/null || fail "partial RoPE to GGUF: exit $?"
"$B/tools/cllm-model-info" "$T/partial-out.gguf" | grep -qx "rope_dim	4" || fail "partial RoPE lost in the GGUF output"
# Usage errors.
rc=0; "$B/cllm-train" -m "$T/sft" > /dev/null 2>&1 || rc=$?; [ $rc = 2 ] || fail "no -o: exit $rc"
rc=0; "$B/cllm-train" -m "$T/sft" -o '' "$T/p8.jsonl" > /dev/null 2>&1 || rc=$?; [ $rc = 2 ] || fail "-o '': exit $rc"
rc=0; "$B/cllm-train" -m "$T/sft" -o x --objective sft --template gsm8kk "$T/p8.jsonl" > /dev/null 2>&1 || rc=$?; [ $rc = 2 ] || fail "--template gsm8kk: exit $rc"
rc=0; "$B/cllm-train" -m "$T/sft" -o x --lr -1 > /dev/null 2>&1 || rc=$?; [ $rc = 2 ] || fail "--lr -1: exit $rc"
echo "train tests passed"

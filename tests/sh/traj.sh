#!/bin/sh
# traj.sh: cllm-traj end to end.
#   SmolLM2, 4 GSM8K prompts, n = 8, 32 new tokens: every record's last state
#   differs from fixed, fixed is a fixed point of the model, the chunks joined
#   equal cllm-gen --method ar; --batch 1 == --batch 8 (also with
#   --full-window: every window row fed); shards 0/3, 1/3, 2/3
#   joined == the unsharded run; --labels; cllm-cat --check passes.
#   The tiny model (tests/golden/tiny-qwen2, prompts of 1..300 token ids, some
#   answers ending in EOS at every place in a chunk): every state steps to the
#   next (the states are a Jacobi trajectory), the first is the initial guess
#   y(0) (drawn from prompt + prefix; --init vocab reaches outside it; --init
#   pad is the model's pad token, also a non-zero one), the EOS cuts chunks
#   right (a state that the cut makes equal to the fixed point is dropped), the same with --init vocab|pad, identical prompts under different
#   ids draw different guesses,
#   batch sizes 1/4/17 agree (and --full-window, --batch-invariant; prompt chunks share the
#   windows' calls: about one call a tick), --aug adds exactly the reference's augmented
#   states, --seed changes the states and not the fixed points, SIGINT leaves
#   a cut stream of whole records.
set -eu
B=$CLLM_BUILD
M=$CLLM_MODEL
TM=tests/golden/tiny-qwen2
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
trajs() { "$B/cllm-cat" --type traj -j "$@"; }

# ---- SmolLM2 ----------------------------------------------------------------
head -4 "$CLLM_DATA/gsm8k_train.jsonl" > "$T/p.jsonl"
run() { "$B/cllm-traj" -m "$M" --template gsm8k -n 8 --max-new-tokens 32 -t 2 --labels -q "$@"; }
run --batch 1 "$T/p.jsonl" | tee "$T/b1.zst" | "$B/cllm-cat" --check -q -
"$B/cllm-gen" -m "$M" --template gsm8k --max-new-tokens 32 -t 2 "$T/p.jsonl" > "$T/ar.zst"
"$B/tools/traj-verify" -m "$M" -t 2 -n 8 --gen "$T/ar.zst" "$T/b1.zst" | tee "$T/v.txt"
grep -q ': ok$' "$T/v.txt" || fail "traj-verify on SmolLM2"
[ "$(trajs "$T/b1.zst" | wc -l)" = 16 ] || fail "expected 16 traj records (4 prompts x 4 chunks)"
[ "$(trajs "$T/b1.zst" | grep -c '"labels":\[[0-9]')" = 16 ] || fail "--labels: every record carries labels"
trajs "$T/b1.zst" | head -1 | grep -q '"id":0,"chunk":0,' || fail "first record is prompt 0, chunk 0"

run --batch 8 "$T/p.jsonl" > "$T/b8.zst"
trajs "$T/b1.zst" > "$T/b1.jsonl"
trajs "$T/b8.zst" | cmp - "$T/b1.jsonl" || fail "--batch 8 differs from --batch 1"
run --batch 8 --full-window "$T/p.jsonl" | trajs | cmp - "$T/b1.jsonl" ||
    fail "--full-window (every row of every window fed) differs from the default (only the rows that can change)"

for i in 0 1 2; do run --batch 2 --shard $i/3 "$T/p.jsonl" > "$T/s$i.zst"; done
cat "$T/s0.zst" "$T/s1.zst" "$T/s2.zst" | "$B/cllm-cat" --check -q -
cat "$T/s0.zst" "$T/s1.zst" "$T/s2.zst" | trajs | sort > "$T/shards.jsonl"
sort "$T/b1.jsonl" | cmp - "$T/shards.jsonl" || fail "shards joined differ from the unsharded run"
trajs "$T/s1.zst" | grep -v -q '"id":1,' && fail "--shard 1/3 holds a prompt other than 1"
echo "SmolLM2: batch 1 == batch 8 == shards 0..2/3"

# ---- tiny model ---------------------------------------------------------------
# 17 prompts of random ids (lengths 1..300: prefill in several chunks); the
# greedy answers of 7 end in EOS (token 2), at various places in a chunk.
cat > "$T/tiny.jsonl" <<'EOF'
{"tokens":[161]}
{"tokens":[76,95,28]}
{"tokens":[145,96,180,70,210,223,202]}
{"tokens":[94,233,51,127,26,131,35,9,79,31,225,182,168,96,103,101,202,251,99,81]}
{"tokens":[200,129,163,11,75,160,160,206,212,111,111,12,22,166,55,40,60,155,174,217,185,106,47,165,136,117,171,147,27,176,248,144,31,227,17,58,41,112,158,62,119,44,4,12,137,253,236,183,10,158,138,167,117,208,216,133,28,181,198,242,65,219,22,149,177,236,49,110,61,218,88,55,198,72,244,155,187,198,156,103,181,155,20,22,152,166,87,108,30,214,21,245,116,102,67,94,101,93,190,9,240,83,193,9,32,82,67,171,8,110,86,146,235,242,178,100,188,107,171,219,189,215,91,46,237,41,36,199,153,46,198,223,98,229,233,31,189,196,181,94,183,78]}
{"tokens":[24,92,49,137,133]}
{"tokens":[31,75,249,232,179,246,138,150,230]}
{"tokens":[133,5,93,30,107,138,247,46,115,215,84,98,182,220,73,37,185,103,106,59,9,28,233,63,136,150,208,90,210,133,135,168,64]}
{"tokens":[10,181]}
{"tokens":[197,123,60,31,173,205,102,84,63,239,118,95,32,139,73,45,43,227,222,211,43,192,41,238,94,222,248,100,76,163,4,133,216,187,45,228,49,201,103,108,38,135,133,183,31,177,16,39,73,211,217,87,75,36,208,18,43,123,69,37,78,167,117,247]}
{"tokens":[13,182,69,176,119,58,222,214,81,118,144]}
{"tokens":[3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56]}
{"tokens":[132,201,4,26,70,212,25,39,105,153,13,103,8,79,80,164]}
{"tokens":[77,184,135,76,121,122,122,199,33,231,143,54,82,253,24,242,124,7,77,120,22,212,132,250,118,71,102,56,237,245,241,56]}
{"tokens":[234,185,161,179,214,231]}
{"tokens":[66,45,234,3,14,18,139,9,106,50,63,43,17,236,202,29,6,159,144,171,243,53,39,108,54,135,158,167,132,168,167,109]}
{"tokens":[180,167,165,13,181,20,191,14,19]}
EOF
tiny() { "$B/cllm-traj" -m "$TM" -n 8 --max-new-tokens 40 -q "$@" "$T/tiny.jsonl"; }
tiny > "$T/t1.zst"
"$B/cllm-gen" -m "$TM" --max-new-tokens 40 "$T/tiny.jsonl" > "$T/tar.zst"
"$B/tools/traj-verify" -m "$TM" -n 8 --states --init prompt --gen "$T/tar.zst" "$T/t1.zst" | tee "$T/v.txt"
grep -q ' 7 eos, .*: ok$' "$T/v.txt" || fail "traj-verify on the tiny model (7 answers end in EOS)"
trajs "$T/t1.zst" > "$T/t1.jsonl"
for b in 4 17; do tiny --batch $b | trajs | cmp - "$T/t1.jsonl" || fail "tiny: --batch $b differs from --batch 1"; done
tiny --batch 4 --full-window | trajs | cmp - "$T/t1.jsonl" || fail "tiny: --full-window differs from the default"
# --batch-invariant (a CUDA route) changes nothing on the CPU, which is batch-invariant always
tiny --batch 4 --batch-invariant | trajs | cmp - "$T/t1.jsonl" || fail "tiny: --batch-invariant differs on the CPU"
# ... and the default does feed fewer rows: the progress line's rows per iteration
rows() { tiny --batch 4 --progress "$@" 2>&1 >/dev/null | tr '\r' '\n' | grep -o '[0-9.]* rows/iteration' | tail -1 | cut -d' ' -f1; }
rd=$(rows --device cpu) rf=$(rows --full-window)
echo "tiny: $rd rows/iteration, $rf with --full-window (n = 8)"
[ "$rf" = 8.0 ] || fail "--full-window: $rf rows/iteration, expected 8.0"
# 4.7 on the CPU (deterministic, hence --device cpu); one row more per iteration than needed gives 5.6
awk -v r="$rd" 'BEGIN { exit !(r > 0 && r < 5.2) }' || fail "only the changing rows: $rd rows/iteration, expected about 4.7 (half of 8 and a bit)"
# ... and the prompt chunks share the windows' calls (the CPU forward is batch-invariant):
# one forward call a tick but for ticks whose prompt chunks overflow the call (1.13 when the
# chunks go in calls of their own)
ct=$(tiny --batch 4 --progress 2>&1 >/dev/null | tr '\r' '\n' | grep -o '[0-9.]* calls/tick' | tail -1 | cut -d' ' -f1)
echo "tiny: $ct forward calls a tick (--batch 4)"
awk -v c="$ct" 'BEGIN { exit !(c >= 1 && c < 1.05) }' || fail "prompt chunks and windows: $ct calls/tick, expected under 1.05"
# Long answers: the KV cache grows (512 -> 1024 positions for the 300-token
# prompt) while other sequences are in flight.
tiny --max-new-tokens 300 | trajs > "$T/long1.jsonl"
tiny --max-new-tokens 300 --batch 5 | trajs | cmp - "$T/long1.jsonl" || fail "tiny: cache growth under --batch 5 changes records"
for init in vocab pad; do
    tiny --init $init --batch 3 > "$T/i.zst"
    "$B/tools/traj-verify" -m "$TM" -n 8 --states --init $init --gen "$T/tar.zst" "$T/i.zst" | grep -q ': ok$' || fail "--init $init"
done
tiny --init pad | trajs | head -1 | grep -q '"states":\[\[0,0,0,0,0,0,0,0\]' || fail "--init pad starts from the pad token (0)"
# ... the model's pad token, not 0: the tiny model with pad_token_id 2, its
# EOS. At n = 4 one answer's EOS (answer token 28) opens a chunk: that
# chunk's y(0), cut to the EOS, already is its fixed point [2] and is
# dropped (a record with no state); the others keep y(0) = pad everywhere.
mkdir "$T/pad2"
sed 's/"pad_token_id": null/"pad_token_id": 2/' "$TM/config.json" > "$T/pad2/config.json"
grep -q '"pad_token_id": 2' "$T/pad2/config.json" || fail "could not set the tiny model's pad token"
ln -s "$PWD/$TM/model.safetensors" "$T/pad2/model.safetensors"
"$B/cllm-traj" -m "$T/pad2" -n 4 --max-new-tokens 40 --init pad -q "$T/tiny.jsonl" > "$T/pad2.zst"
"$B/tools/traj-verify" -m "$T/pad2" -n 4 --states --init pad --gen "$T/tar.zst" "$T/pad2.zst" > "$T/v.txt"
grep -q ' 7 eos, [1-9][0-9]* with no state, .*: ok$' "$T/v.txt" || fail "--init pad with pad token 2 (the EOS): $(cat "$T/v.txt")"
# Each prompt draws from its own generator (seed, id): the same tokens under
# two ids give different guesses and the same fixed points.
printf '{"id":3,"tokens":[76,95,28]}\n{"id":4,"tokens":[76,95,28]}\n' > "$T/twin.jsonl"
"$B/cllm-traj" -m "$TM" -n 8 --max-new-tokens 8 -q "$T/twin.jsonl" | trajs > "$T/twin.out"
[ "$(wc -l < "$T/twin.out")" = 2 ] || fail "twin prompts: expected 2 records"
[ "$(sed -n 's/.*"states":\(.*\),"fixed".*/\1/p' "$T/twin.out" | sort -u | wc -l)" = 2 ] ||
    fail "two ids, the same prompt: the same random guesses"
[ "$(sed -n 's/.*"fixed"/"fixed"/p' "$T/twin.out" | sort -u | wc -l)" = 1 ] || fail "two ids, the same prompt: different fixed points"
tiny --aug --batch 5 > "$T/aug.zst"
"$B/tools/traj-verify" -m "$TM" -n 8 --aug-base "$T/t1.zst" "$T/aug.zst" | tee "$T/v.txt"
grep -q ': ok$' "$T/v.txt" || fail "--aug"
tiny --seed 7 | trajs > "$T/seed7.jsonl"
cmp -s "$T/seed7.jsonl" "$T/t1.jsonl" && fail "--seed 7 gives the same states as seed 0"
sed 's/"states":.*"fixed"/"fixed"/' "$T/seed7.jsonl" > "$T/a"
sed 's/"states":.*"fixed"/"fixed"/' "$T/t1.jsonl" | cmp - "$T/a" || fail "fixed points depend on the seed"

# SIGINT: exit 130, the records written so far are whole, the end record says SIGINT.
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do cat "$T/tiny.jsonl"; done > "$T/many.jsonl"
"$B/cllm-traj" -m "$TM" -n 16 --max-new-tokens 400 --batch 4 -q "$T/many.jsonl" > "$T/int.zst" 2> "$T/int.err" &
pid=$!
# The signal once a first record is out (the handler is in by then; a fixed
# 1 s could come before it on a loaded machine, where a program's start alone
# took up to 0.7 s, and end the run with no stream at all). Bounded: 30 s.
i=0
while ! "$B/cllm-cat" --type traj -j "$T/int.zst" 2>/dev/null | grep -q . && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
kill -INT $pid
rc=0; wait $pid || rc=$?
[ $rc = 130 ] || fail "SIGINT: exit $rc, expected 130"
"$B/cllm-cat" --check "$T/int.zst" 2> "$T/chk.err" || fail "an interrupted stream fails --check: $(cat "$T/chk.err")"
grep -q "1 section interrupted (SIGINT)" "$T/chk.err" || fail "an interrupted stream is not reported as short: $(cat "$T/chk.err")"
echo "traj tests passed"

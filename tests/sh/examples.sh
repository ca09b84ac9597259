#!/bin/sh
# examples.sh: every example's toy-size run (make test) works end to end.
set -eu
make --no-print-directory -C examples/gsm8k test BIN="$CLLM_BUILD" MODEL="$CLLM_MODEL" DATA="$CLLM_DATA"
# The report stage stops at a failing evaluation (the first of its two
# cllm-eval runs, here a stand-in that fails on the base's Jacobi stream):
# make fails and leaves no report (it used to pass, the error inside report.txt).
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir "$T/o" "$T/bin"
for f in base-ar base-jacobi cllm-jacobi; do : > "$T/o/$f.zst"; done
cat > "$T/bin/cllm-eval" <<'EOF'
#!/bin/sh
for a; do last=$a; done
case $last in *base-jacobi.zst) echo "cllm-eval: $last: bad stream" >&2; exit 1 ;; esac
echo "tok/step 2.0" >&2
EOF
chmod +x "$T/bin/cllm-eval"
rc=0
make --no-print-directory -s -C examples/gsm8k OUT="$T/o" BIN="$T/bin" -o "$T/o/base-ar.zst" -o "$T/o/base-jacobi.zst" \
    -o "$T/o/cllm-jacobi.zst" "$T/o/report.txt" > "$T/make.out" 2>&1 || rc=$?
[ $rc != 0 ] && [ ! -e "$T/o/report.txt" ] || { echo "FAIL: gsm8k report: a failing evaluation passed (make exit $rc)" >&2; exit 1; }
echo "examples ran; the gsm8k report stops at a failing evaluation"

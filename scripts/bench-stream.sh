#!/bin/sh
# bench-stream.sh BUILD [N]: write and read N traj records (16-token windows)
# through the stream format and print records/s and MB/s for each direction.
# Rates are per CPU second of the benchmark process, so a busy machine does
# not distort them.
set -eu
build=${1:-build}
n=${2:-1000000}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
"$build/tools/bench-stream" "$n"

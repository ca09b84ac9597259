#!/bin/sh
# st-dir.sh FILE DIR: make DIR a HF model directory whose model.safetensors is
# FILE and whose config.json is a valid tiny llama config, so that a
# safetensors case of tests/bad/fuzz-regressions.tsv reaches the reader.
set -e
mkdir -p "$2"
cp "$1" "$2/model.safetensors"
printf '{"model_type":"llama","num_hidden_layers":1,"hidden_size":4,"intermediate_size":4,"num_attention_heads":2,"vocab_size":4}' > "$2/config.json"

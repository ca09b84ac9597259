#!/usr/bin/env python3
"""hf_baseline.py: the baseline of issue 7's GPU benchmark.

Usage: python3 scripts/hf_baseline.py HF_DIR IDS_FILE N MAX_NEW

HF transformers' eager generate, greedy, batch 1, bf16, on the CUDA device,
over the first N prompts of IDS_FILE (one prompt per line, token ids separated
by spaces: tests/golden/gsm8k20_ids.txt), at most MAX_NEW new tokens each,
stopping at the model's end-of-sequence token as cllm-bench does. HF_DIR is the
model cllm runs, saved by `cllm-model-info MODEL --convert HF_DIR --dtype bf16`
(config.json + model.safetensors), so both run the same weights.

Prints one line:
  BENCH hf-eager-generate: T tokens in S s = R tokens/s (N prompts, ...)
scripts/gpu-check.sh divides cllm-bench's tokens/s by R. One warm-up
generate is not timed. Run by gpu-check on the GPU machine, which has torch
and transformers; nothing in the build or the tests uses it.
"""
import json
import os
import sys
import time


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__.split("\n\n")[1])
    hf_dir, ids_file, n, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.bfloat16, attn_implementation="eager")
    model = model.to(device).eval()
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    eos = cfg.get("eos_token_id")
    with open(ids_file) as f:
        prompts = [[int(t) for t in line.split()] for line in f if line.strip()][:n]
    if not prompts:
        sys.exit("hf_baseline: no prompts in " + ids_file)
    kw = dict(do_sample=False, eos_token_id=eos, pad_token_id=eos if eos is not None else 0)
    with torch.no_grad():
        model.generate(torch.tensor([prompts[0]], device=device), max_new_tokens=8, **kw)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        tokens = 0
        t0 = time.perf_counter()
        for p in prompts:
            out = model.generate(torch.tensor([p], device=device), max_new_tokens=max_new, **kw)
            new = out[0, len(p):].tolist()
            # cllm counts generated tokens without the end-of-sequence token
            tokens += len(new) - (1 if new and eos is not None and new[-1] == eos else 0)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    print(f"BENCH hf-eager-generate: {tokens} tokens in {dt:.2f} s = {tokens / dt:.1f} tokens/s "
          f"({len(prompts)} prompts, <= {max_new} new, bf16, batch 1, eager attention, {name}, "
          f"torch {torch.__version__})")


if __name__ == "__main__":
    main()

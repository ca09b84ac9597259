#!/usr/bin/env python3
"""gguf_dequant.py: golden values for the GGUF reader and the model loaders.

Run by hand (never by CI) with numpy, gguf, torch and transformers installed:

  python tests/golden/gguf_dequant.py [MODEL.gguf]
      writes tests/golden/gguf_dequant.txt: for several tensors of the model,
      dequantized by the `gguf` package's own code (gguf.quants.dequantize),
      the element count, a checksum over the fp32 bit patterns of ALL values,
      their float64 sum, and the bit patterns of the first 512 values; plus
      the same for HF transformers' Q/K projections after its GGUF loader
      un-permuted them (so the C GGUF loader's un-permutation is checked
      against HF's, not against itself).

  python tests/golden/gguf_dequant.py --hf-check DIR [MODEL.gguf]
      loads DIR (a safetensors directory written by
      `cllm-model-info MODEL.gguf --convert DIR`) with HF transformers and
      compares every tensor with transformers' own load of the GGUF: prints
      the number of tensors and the largest difference (0 expected).

Checksum (the C test computes the same): with b[i] the uint32 bit pattern of
value i, sum over i of b[i] * (i * 2654435761 + 1), all in uint64 arithmetic
modulo 2^64.
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "..", "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
OUT = os.path.join(HERE, "gguf_dequant.txt")
NFIRST = 512

TENSORS = [
    "token_embd.weight",          # Q8_0
    "blk.0.attn_q.weight",        # Q4_1
    "blk.0.attn_k.weight",        # Q4_1
    "blk.7.ffn_down.weight",      # Q4_1
    "blk.29.ffn_gate.weight",     # Q4_1
    "blk.0.attn_norm.weight",     # F32
    "output_norm.weight",         # F32
]

HF_TENSORS = [
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.13.self_attn.q_proj.weight",
    "model.layers.29.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
]


def checksum(a):
    b = np.ascontiguousarray(a, dtype=np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
    idx = np.arange(b.size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(np.sum(b * (idx * np.uint64(2654435761) + np.uint64(1)), dtype=np.uint64))


def record(out, kind, name, a):
    a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
    out.write(f"{kind} {name} {a.size} {checksum(a):016x} {float(np.sum(a, dtype=np.float64)):.17g}\n")
    bits = a[:NFIRST].view(np.uint32)
    for i in range(0, bits.size, 16):
        out.write(" ".join(f"{x:08x}" for x in bits[i:i + 16]) + "\n")


def hf_from_gguf(path):
    from transformers import AutoModelForCausalLM
    import torch
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                             gguf_file=os.path.basename(path), torch_dtype=torch.float32)
    return m


def main():
    args = sys.argv[1:]
    if args and args[0] == "--hf-check":
        d = args[1]
        path = args[2] if len(args) > 2 else DEFAULT
        import torch
        from transformers import AutoModelForCausalLM
        ref = hf_from_gguf(path).state_dict()
        got = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32).state_dict()
        worst, n = 0.0, 0
        for k, v in ref.items():
            if k not in got:
                print("missing in", d, k)
                worst = float("inf")
                continue
            n += 1
            diff = (v - got[k]).abs().max().item()
            worst = max(worst, diff)
        print(f"hf-check: {n} tensors compared, max abs difference {worst}")
        ok = worst == 0
        if os.path.exists(os.path.join(d, "tokenizer.json")):
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(d)
            for text, want in [("The capital of France is", [504, 3575, 282, 4649, 314]),
                               ("Hello world! 123", [19556, 905, 17, 216, 33, 34, 35]),
                               ("  multiple   spaces", [216, 2701, 256, 5600])]:
                got_ids = tok(text)["input_ids"]
                print(f"hf-check: tokenizer {text!r} -> {got_ids} {'ok' if got_ids == want else 'WANT ' + str(want)}")
                ok = ok and got_ids == want
        sys.exit(0 if ok else 1)

    path = args[0] if args else DEFAULT
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(path)
    by_name = {t.name: t for t in r.tensors}
    with open(OUT, "w") as out:
        out.write("# written by tests/golden/gguf_dequant.py from %s\n" % os.path.basename(path))
        out.write("# KIND NAME NUMEL CHECKSUM SUM, then the first %d values as fp32 bit patterns\n" % NFIRST)
        for name in TENSORS:
            t = by_name[name]
            a = dequantize(t.data, t.tensor_type)
            record(out, "gguf", name, a)
        sd = hf_from_gguf(path).state_dict()
        for name in HF_TENSORS:
            record(out, "hf", name, sd[name].numpy())
    print("wrote", OUT)


if __name__ == "__main__":
    main()

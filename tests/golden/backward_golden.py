#!/usr/bin/env python3
"""backward_golden.py: torch autograd gradients for tests/unit/test_backward.c (run by hand).

Needs: torch, transformers, safetensors, numpy (PyPI). Run from the repo root:
    python tests/golden/backward_golden.py
Writes (all committed, ~0.5 MB in all):
  tests/golden/tiny-train-llama/   a tiny random LlamaForCausalLM: tied embeddings,
                                   no bias, GQA (V=64, C=32, L=2, NH=4, NKV=2, HS=8, F=64)
  tests/golden/tiny-train-qwen2/   the same shape as Qwen2ForCausalLM: untied, q/k/v bias
  tests/golden/backward_grads.bin  for each model and each of two losses, the logits,
                                   the loss and the gradient of every parameter tensor

The batch is B=2 sequences of T=12 rows, lengths 12 and 7 (the C side pads the
second; torch runs each sequence on its own, so padding never enters here).
Losses, over the real rows only:
  0: L = sum(logits * R), R uniform in [-1, 1)          (dlogits = R)
  1: L = mean over real rows of cross_entropy(logits[row], target[row])
All in fp32, eager attention.

File format (little-endian):
  char magic[8] = "CLLMGRD1"; i32 n_cases
  per case: i32 len, char model_dir[len] (relative to the repo root); i32 loss, B, T, V;
            i32 lens[B]; i32 tokens[B*T] (padding -1);
            loss 0: f32 R[B*T*V] (padding 0); loss 1: i32 targets[B*T] (padding -1);
            f64 loss value; f32 logits[B*T*V] (padding 0);
            i32 n_tensors; per tensor: i32 len, char name[len], i32 numel, f32 grad[numel]
"""
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
B, T, V = 2, 12, 64
LENS = [12, 7]


def init_(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # well scaled, attention not uniform (as forward_golden.py)
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)


def save(model, name):
    out = os.path.join(HERE, name)
    model.save_pretrained(out, safe_serialization=True)
    cp = os.path.join(out, "config.json")
    cj = json.load(open(cp))
    # transformers 5 writes rope_theta inside rope_parameters; write it at the top level too
    cj["rope_theta"] = cj.get("rope_parameters", {}).get("rope_theta", cj.get("rope_theta"))
    json.dump(cj, open(cp, "w"), indent=2, sort_keys=True)
    gc = os.path.join(out, "generation_config.json")
    if os.path.exists(gc):
        os.remove(gc)
    return os.path.relpath(out, os.path.dirname(os.path.dirname(HERE)))


def make_models():
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rope_theta=10000.0, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
                  attn_implementation="eager")
    llama = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=True, attention_bias=False, **common))
    init_(llama.float(), 21)
    llama.tie_weights()
    qwen = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=False, **common))
    init_(qwen.float(), 22)
    return [(llama, save(llama, "tiny-train-llama")), (qwen, save(qwen, "tiny-train-qwen2"))]


def case(f, model, mdir, loss_kind, rng):
    model.train(False)
    model.zero_grad(set_to_none=True)
    tokens = np.full((B, T), -1, dtype=np.int64)
    for b in range(B):
        tokens[b, :LENS[b]] = rng.integers(0, V, size=LENS[b])
    R = np.zeros((B, T, V), dtype=np.float32)
    targets = np.full((B, T), -1, dtype=np.int64)
    for b in range(B):
        R[b, :LENS[b]] = rng.uniform(-1, 1, size=(LENS[b], V)).astype(np.float32)
        targets[b, :LENS[b]] = rng.integers(0, V, size=LENS[b])
    logits_out = np.zeros((B, T, V), dtype=np.float32)
    total = torch.zeros((), dtype=torch.float32)
    n_rows = sum(LENS)
    for b in range(B):
        ids = torch.tensor(tokens[b:b + 1, :LENS[b]])
        lg = model(ids).logits[0]                     # (lens[b], V)
        logits_out[b, :LENS[b]] = lg.detach().numpy()
        if loss_kind == 0:
            total = total + (lg * torch.from_numpy(R[b, :LENS[b]])).sum()
        else:
            tg = torch.from_numpy(targets[b, :LENS[b]])
            total = total + torch.nn.functional.cross_entropy(lg, tg, reduction="sum") / n_rows
    total.backward()

    md = mdir.encode()
    f.write(struct.pack("<i", len(md)) + md)
    f.write(struct.pack("<4i", loss_kind, B, T, V))
    f.write(np.asarray(LENS, dtype="<i4").tobytes())
    f.write(tokens.astype("<i4").tobytes())
    if loss_kind == 0:
        f.write(R.astype("<f4").tobytes())
    else:
        f.write(targets.astype("<i4").tobytes())
    f.write(struct.pack("<d", float(total.item())))
    f.write(logits_out.astype("<f4").tobytes())
    params = [(n, p) for n, p in model.named_parameters()]
    f.write(struct.pack("<i", len(params)))
    for n, p in params:
        g = p.grad.detach().float().numpy().ravel()
        nb = n.encode()
        f.write(struct.pack("<i", len(nb)) + nb + struct.pack("<i", g.size))
        f.write(g.astype("<f4").tobytes())
    print(mdir, "loss", loss_kind, "=", float(total.item()), len(params), "tensors")


def main():
    torch.set_num_threads(2)
    models = make_models()
    rng = np.random.default_rng(2024)
    path = os.path.join(HERE, "backward_grads.bin")
    with open(path, "wb") as f:
        f.write(b"CLLMGRD1")
        f.write(struct.pack("<i", 2 * len(models)))
        for model, mdir in models:
            for loss_kind in (0, 1):
                case(f, model, mdir, loss_kind, rng)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()

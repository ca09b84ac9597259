#!/usr/bin/env python3
"""forward_golden.py: golden logits for tests/unit/test_forward.c (run by hand).

Needs: torch, transformers, gguf, numpy, safetensors (PyPI). Run from the repo root:
    python tests/golden/forward_golden.py [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
Writes (all committed, small):
  tests/golden/smollm2_logits.bin  SmolLM2-135M-Instruct (the GGUF, dequantized to
                                   fp32, Q/K un-permuted) run by HF LlamaForCausalLM
                                   in fp32 on 3 prompts of >= 50 tokens
  tests/golden/tiny-qwen2/         a tiny random Qwen2 model (untied embeddings,
                                   GQA, q/k/v bias) as config.json + model.safetensors
  tests/golden/tiny_logits.bin     its logits on 2 prompts, every position in full
  tests/golden/gsm8k20_ids.txt     the first 20 GSM8K test questions in SmolLM2's
                                   chat template, one line of token ids each

Token ids come from transformers' GGUF tokenizer with the pre-tokenizer of the
model's tokenizer.json (Digits(individual) then ByteLevel) put back, so they
are what HF `tokenizers` gives for SmolLM2; the C tests read the ids from here.

Logits file format (little-endian):
  char magic[8] = "CLLMGLD1"; i32 n_prompts, V, K, NF; i32 fixed_ids[NF]
  per prompt: i32 T, n_full; i32 tokens[T];
              per position t: i32 top_ids[K]; f32 top_vals[K]; f32 fixed_vals[NF]
              f32 full[n_full][V]  (rows T-n_full .. T-1)
"""
import argparse
import json
import os
import struct

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
K = 5


def write_golden(path, V, fixed_ids, prompts, logits_list, n_full_list):
    with open(path, "wb") as f:
        f.write(b"CLLMGLD1")
        f.write(struct.pack("<4i", len(prompts), V, K, len(fixed_ids)))
        f.write(np.asarray(fixed_ids, dtype="<i4").tobytes())
        for ids, lg, nf in zip(prompts, logits_list, n_full_list):
            T = len(ids)
            assert lg.shape == (T, V)
            f.write(struct.pack("<2i", T, nf))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            for t in range(T):
                row = lg[t]
                top = np.argsort(-row, kind="stable")[:K]
                f.write(top.astype("<i4").tobytes())
                f.write(row[top].astype("<f4").tobytes())
                f.write(row[np.asarray(fixed_ids, dtype=np.int64)].astype("<f4").tobytes()
                        if len(fixed_ids) else b"")
            f.write(lg[T - nf:].astype("<f4").tobytes())
    print(path, os.path.getsize(path), "bytes")


def run(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids], dtype=torch.long))
    return out.logits[0].float().numpy()


# ---- SmolLM2 from the GGUF ------------------------------------------------------

def unpermute(w, n_head):
    # GGUF rows are permuted for adjacent-pair RoPE: W_hf[h*d + t*d/2 + i] = W_gguf[h*d + 2i + t]
    rows = w.shape[0]
    d = rows // n_head
    return w.reshape(n_head, d // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def smollm2(path):
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM

    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items()
            if not k.startswith("tokenizer.ggml.") or k.endswith("_id")}
    arch = meta["general.architecture"]
    g = lambda k: meta[f"{arch}.{k}"]
    nh, nkv = g("attention.head_count"), g("attention.head_count_kv")
    tensors = {}
    for t in r.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        tensors[t.name] = a.reshape(shape)
    V, C = tensors["token_embd.weight"].shape
    cfg = LlamaConfig(vocab_size=int(V), hidden_size=int(C),
                      intermediate_size=int(g("feed_forward_length")),
                      num_hidden_layers=int(g("block_count")), num_attention_heads=int(nh),
                      num_key_value_heads=int(nkv), rms_norm_eps=float(g("attention.layer_norm_rms_epsilon")),
                      rope_theta=float(g("rope.freq_base")),
                      max_position_embeddings=int(g("context_length")),
                      tie_word_embeddings="output.weight" not in tensors, attention_bias=False,
                      torch_dtype=torch.float32)
    model = LlamaForCausalLM(cfg).float().eval()
    sd = {"model.embed_tokens.weight": tensors["token_embd.weight"],
          "model.norm.weight": tensors["output_norm.weight"]}
    if "output.weight" in tensors:
        sd["lm_head.weight"] = tensors["output.weight"]
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for l in range(cfg.num_hidden_layers):
        for gn, hn in names.items():
            w = tensors[f"blk.{l}.{gn}.weight"]
            if gn == "attn_q":
                w = unpermute(w, nh)
            elif gn == "attn_k":
                w = unpermute(w, nkv)
            sd[f"model.layers.{l}.{hn}.weight"] = w
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert all(k == "lm_head.weight" for k in missing), missing
    model.tie_weights()
    return model


def tokenizer(path):
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.dirname(path) or ".", gguf_file=os.path.basename(path))
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    return tok


def chat_ids(tok, question):
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


# ---- tiny random Qwen2 --------------------------------------------------------------

def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1234)
    cfg = Qwen2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                      torch_dtype="float32", bos_token_id=1, eos_token_id=2)
    model = Qwen2ForCausalLM(cfg).float().eval()
    with torch.no_grad():  # larger than the default init so attention is not uniform
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--data", default="../shared/data/gsm8k_test.jsonl")
    a = ap.parse_args()
    torch.set_num_threads(2)

    # tiny model
    tiny = tiny_qwen2()
    out = os.path.join(HERE, "tiny-qwen2")
    tiny.save_pretrained(out, safe_serialization=True)
    # transformers 5 writes rope_theta inside rope_parameters; 4.x and most
    # readers look for it at the top level: write both.
    cp = os.path.join(out, "config.json")
    cj = json.load(open(cp))
    cj["rope_theta"] = cj.get("rope_parameters", {}).get("rope_theta", cj.get("rope_theta"))
    json.dump(cj, open(cp, "w"), indent=2, sort_keys=True)
    for junk in ("generation_config.json",):
        if os.path.exists(os.path.join(out, junk)):
            os.remove(os.path.join(out, junk))
    rng = np.random.default_rng(7)
    tiny_prompts = [rng.integers(0, 256, size=24).tolist(), rng.integers(0, 256, size=40).tolist()]
    lg = [run(tiny, p) for p in tiny_prompts]
    write_golden(os.path.join(HERE, "tiny_logits.bin"), 256, [], tiny_prompts, lg,
                 [len(p) for p in tiny_prompts])

    # SmolLM2
    tok = tokenizer(a.model)
    rows = [json.loads(line) for line in open(a.data)][:20]
    qs = [r["question"] for r in rows]
    with open(os.path.join(HERE, "gsm8k20_ids.txt"), "w") as f:
        for q in qs:
            f.write(" ".join(str(i) for i in chat_ids(tok, q)) + "\n")
    model = smollm2(a.model)
    prompts = [
        chat_ids(tok, qs[0]),
        tok("Question:\n" + qs[1] + "\nAnswer:\nLet's think step by step.\n" + rows[1]["answer"])["input_ids"],
        tok("The capital of France is Paris. " + qs[2] + " Numbers: 12345 67890.")["input_ids"],
    ]
    assert all(len(p) >= 50 for p in prompts), [len(p) for p in prompts]
    V = model.config.vocab_size
    fixed = np.linspace(0, V - 1, 64).astype(np.int64).tolist()
    lg = [run(model, p) for p in prompts]
    print("SmolLM2 prompt lengths", [len(p) for p in prompts],
          "top-1 after each:", [int(np.argmax(x[-1])) for x in lg])
    write_golden(os.path.join(HERE, "smollm2_logits.bin"), V, fixed, prompts, lg, [1] * len(prompts))


if __name__ == "__main__":
    main()

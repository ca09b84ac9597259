#!/usr/bin/env python3
"""adamw_golden.py: torch.optim.AdamW and the warm-up + cosine LambdaLR
schedule on inputs that C rebuilds exactly, written to adamw_golden.txt for
tests/unit/test_adamw.c.  Run by hand (torch from PyPI):

    python tests/golden/adamw_golden.py > tests/golden/adamw_golden.txt

Inputs (exact in binary, so C rounds them to the same floats):
  param[i]       = ((i * 37) % 101 - 50) / 50
  grad[s][i]     = ((i * 13 + s * 7) % 97 - 48) / 100 * 10^-(i % 4)
Cases: lr 1e-3 (and 2e-5), weight decay 0.01 on elements [0, 48) and none on
[48, 64) (two param groups), betas (0.9, 0.999), eps 1e-8; after 1 and 5 steps.
"""
import math
import torch

N = 64
NDECAY = 48


def param0():
    return torch.tensor([((i * 37) % 101 - 50) / 50 for i in range(N)], dtype=torch.float64).float()


def grad(s):
    return torch.tensor([((i * 13 + s * 7) % 97 - 48) / 100 * 10.0 ** -(i % 4) for i in range(N)],
                        dtype=torch.float64).float()


def run(lr, wd, steps):
    p = param0()
    a = torch.nn.Parameter(p[:NDECAY].clone())
    b = torch.nn.Parameter(p[NDECAY:].clone())
    opt = torch.optim.AdamW([{"params": [a], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    for s in range(steps):
        g = grad(s)
        a.grad = g[:NDECAY].clone()
        b.grad = g[NDECAY:].clone()
        opt.step()
    pa = torch.cat([a.detach(), b.detach()])
    m = torch.cat([opt.state[a]["exp_avg"], opt.state[b]["exp_avg"]])
    v = torch.cat([opt.state[a]["exp_avg_sq"], opt.state[b]["exp_avg_sq"]])
    return pa, m, v


def hf_cosine(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    return f


def main():
    print("# torch", torch.__version__)
    for lr, wd, steps in [(1e-3, 0.01, 1), (1e-3, 0.01, 5), (2e-5, 0.0, 5), (1e-1, 0.1, 5)]:
        p, m, v = run(lr, wd, steps)
        print(f"adamw {lr!r} {wd!r} {steps}")
        for i in range(N):
            print(f"{p[i].item():.9e} {m[i].item():.9e} {v[i].item():.9e}")
    for frac, total in [(0.03, 100), (0.03, 10), (0.0, 7), (0.5, 9)]:
        warmup = math.ceil(frac * total)
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=2e-5)
        sch = torch.optim.lr_scheduler.LambdaLR(opt, hf_cosine(warmup, total))
        lrs = []
        for _ in range(total):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
        print(f"schedule {frac!r} {total} {warmup}")
        print(" ".join(f"{x:.12e}" for x in lrs))


if __name__ == "__main__":
    main()

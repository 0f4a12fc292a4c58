#!/usr/bin/env python3
"""PyTorch peer for ferrogpt's CPU benchmarks.

A plain GPT-2 in the nanoGPT style (pre-LayerNorm blocks, causal attention through
F.scaled_dot_product_attention, tanh GELU, LM head tied to the token embedding, GPT-2
initialisation), used two ways:

* step timing (default): train steps on random tokens; prints one JSON object with the median
  step time and tokens/s over --steps steps after --warmup warm-up steps;
* --train-shakespeare FILE: the full `shakespeare-cpu` recipe (char vocab from FILE, 90/10
  split, random windows, 2000 steps, AdamW lr 1e-3 cosine to 1e-4 after 100 warm-up steps,
  betas (0.9, 0.99), weight decay 0.1 on 2-D weights only, grad clip 1.0, dropout 0, then a
  20-batch evaluation); prints one JSON object with the final val loss and the wall time.

Examples (see README.md beside this file):
    python3 bench/peers/pytorch_gpt2.py --preset shakespeare-cpu --threads 2 --steps 50 --warmup 10
    python3 bench/peers/pytorch_gpt2.py --preset gpt2-124m --threads 2 --steps 5 --warmup 2
    python3 bench/peers/pytorch_gpt2.py --threads 2 --train-shakespeare ../shared/data/tinyshakespeare.txt
"""

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # nanoGPT's CPU Shakespeare run (vocab 65 = Tiny Shakespeare's characters).
    "shakespeare-cpu": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab=65, batch=12, seq=64),
    # GPT-2 small at llm.c's CPU reference size (B=4, T=64).
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab=50304, batch=4, seq=64),
}


# ----------------------------------------------------------------------------- model


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        assert n_embd % n_head == 0
        self.n_head = n_head
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.c_proj.residual_scale = True
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd, dropout):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.c_proj = nn.Linear(4 * n_embd, n_embd)
        self.c_proj.residual_scale = True
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, dropout):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size, vocab, dropout=0.0):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList([Block(n_embd, n_head, dropout) for _ in range(n_layer)])
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2L).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                std = 0.02 / math.sqrt(2 * n_layer) if getattr(m, "residual_scale", False) else 0.02
                nn.init.normal_(m.weight, 0.0, std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx, targets=None):
        B, T = idx.shape
        assert T <= self.block_size, f"sequence {T} > block size {self.block_size}"
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss


def make_optimizer(model, lr, weight_decay, betas, eps=1e-8):
    """AdamW with decoupled weight decay on 2-D weights only (nanoGPT); fused if this torch
    build supports it on the CPU, else foreach, else the plain loop."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied weight once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    sig = inspect.signature(torch.optim.AdamW).parameters
    for impl in ("fused", "foreach"):
        if impl in sig:
            try:
                opt = torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **{impl: True})
                return opt, impl
            except (RuntimeError, ValueError):
                continue
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps), "for-loop"


# ----------------------------------------------------------------------------- helpers


def environment(threads):
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def resolve_config(args):
    cfg = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab=65, batch=12, seq=None)
    if args.preset:
        cfg.update(PRESETS[args.preset])
    for key in ("n_layer", "n_head", "n_embd", "block_size", "vocab", "batch", "seq"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    if cfg["seq"] is None:
        cfg["seq"] = cfg["block_size"]
    if cfg["seq"] > cfg["block_size"]:
        sys.exit(f"error: --seq {cfg['seq']} is longer than --block-size {cfg['block_size']}")
    if cfg["n_embd"] % cfg["n_head"]:
        sys.exit(f"error: --n-embd {cfg['n_embd']} is not a multiple of --n-head {cfg['n_head']}")
    return cfg


def lr_at(step, max_lr, min_lr, warmup, total):
    """nanoGPT's schedule: linear warm-up, then cosine from max_lr to min_lr at `total`."""
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    if step >= total:
        return min_lr
    ratio = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


# ----------------------------------------------------------------------------- modes


def time_steps(args, cfg):
    torch.manual_seed(args.seed)
    model = GPT(cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["block_size"], cfg["vocab"], args.dropout)
    model.train()
    opt, impl = make_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.99))
    B, T = cfg["batch"], cfg["seq"]
    gen = torch.Generator().manual_seed(args.seed)
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        x = torch.randint(cfg["vocab"], (B, T), generator=gen)
        y = torch.randint(cfg["vocab"], (B, T), generator=gen)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
            losses.append(loss.item())
        if args.verbose:
            print(f"step {i:4d} {'(warm-up) ' if i < args.warmup else ''}{dt * 1e3:9.1f} ms  loss {loss.item():.4f}",
                  file=sys.stderr)
    med = statistics.median(times)
    return {
        "mode": "step-timing",
        "preset": args.preset,
        "config": cfg,
        "params": sum(p.numel() for p in model.parameters()),
        "optimizer": f"AdamW ({impl})",
        "steps": args.steps,
        "warmup": args.warmup,
        "median_step_s": med,
        "mean_step_s": statistics.fmean(times),
        "min_step_s": min(times),
        "max_step_s": max(times),
        "tokens_per_s": B * T / med,
        "last_loss": losses[-1],
    }


def train_shakespeare(args, path):
    t_load = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]

    cfg = dict(PRESETS["shakespeare-cpu"])
    for key in ("n_layer", "n_head", "n_embd", "block_size", "batch", "seq"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    cfg["vocab"] = len(chars)
    cfg["seq"] = cfg["block_size"] if args.seq is None else cfg["seq"]
    steps = 2000 if args.steps is None else args.steps
    max_lr, min_lr, warmup = 1e-3, 1e-4, 100
    eval_batches = 20

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    B, T = cfg["batch"], cfg["seq"]

    def batch(split):
        d = train_data if split == "train" else val_data
        ix = torch.randint(len(d) - T - 1, (B,), generator=gen)
        x = torch.stack([d[i:i + T] for i in ix])
        y = torch.stack([d[i + 1:i + 1 + T] for i in ix])
        return x, y

    t_start = time.perf_counter()
    model = GPT(cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["block_size"], cfg["vocab"], 0.0)
    model.train()
    opt, impl = make_optimizer(model, lr=max_lr, weight_decay=0.1, betas=(0.9, 0.99))
    loss = None
    for step in range(steps):
        lr = lr_at(step, max_lr, min_lr, warmup, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch("train")
        opt.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if args.verbose and (step % 100 == 0 or step == steps - 1):
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {time.perf_counter() - t_start:6.1f} s",
                  file=sys.stderr)
    t_train = time.perf_counter() - t_start

    model.eval()
    out = {}
    with torch.no_grad():
        for split in ("train", "val"):
            out[split] = statistics.fmean(model(*batch(split))[1].item() for _ in range(eval_batches))
    wall = time.perf_counter() - t_start
    return {
        "mode": "train-shakespeare",
        "data": path,
        "config": cfg,
        "params": sum(p.numel() for p in model.parameters()),
        "optimizer": f"AdamW ({impl}), lr {max_lr} cosine to {min_lr}, warmup {warmup}, betas (0.9, 0.99), "
                     f"wd 0.1 on 2-D weights, clip 1.0",
        "steps": steps,
        "final_train_loss_last_batch": loss.item(),
        "train_loss": out["train"],
        "val_loss": out["val"],
        "eval_batches": eval_batches,
        "train_s": t_train,
        "wall_s": wall,  # model init + training + evaluation
        "wall_with_data_load_s": time.perf_counter() - t_load,
        "ms_per_step": 1e3 * t_train / steps,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS))
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--n-embd", type=int)
    ap.add_argument("--block-size", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int, help="sequence length (default: the block size)")
    ap.add_argument("--steps", type=int, help="timed steps (default 20), or training steps with "
                                                "--train-shakespeare (default 2000)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--train-shakespeare", metavar="FILE",
                    help="run the full shakespeare-cpu training recipe on FILE instead of timing")
    ap.add_argument("--verbose", "-v", action="store_true", help="per-step lines on stderr")
    args = ap.parse_args()

    for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab", "batch", "seq", "steps", "threads"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(torch.get_num_threads())

    if args.train_shakespeare:
        result = train_shakespeare(args, args.train_shakespeare)
    else:
        if args.steps is None:
            args.steps = 20
        result = time_steps(args, resolve_config(args))
    result["env"] = env
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch peer for ferrogpt's benchmarks: CPU (issue 2) and one NVIDIA GPU (issue 4).

A plain GPT-2 in the nanoGPT style (pre-LayerNorm blocks, causal attention through
F.scaled_dot_product_attention, tanh GELU, LM head tied to the token embedding, GPT-2
initialisation; dropout where nanoGPT has it: after the embeddings, on the attention weights via
SDPA's dropout_p while training, and on both residual branches), used two ways:

* step timing (default): train steps on random tokens; prints one JSON object with the median
  step time, tokens/s and MFU over --steps steps after --warmup warm-up steps;
* --train-shakespeare FILE: a full training recipe on FILE (char vocab, first 90% for training,
  random windows, AdamW lr 1e-3 with 100 warm-up steps then cosine to 1e-4, betas (0.9, 0.99),
  weight decay 0.1 on 2-D weights only, grad clip 1.0); prints one JSON object with the final val
  loss and the wall time. --recipe picks the sizes:
    shakespeare-cpu  (default) nanoGPT's CPU run: 4 layers, 4 heads, 128 channels, block 64,
                     batch 12, 2000 steps, dropout 0;
    shakespeare-char nanoGPT's config/train_shakespeare_char.py: 6 layers, 6 heads, 384
                     channels, block 256, batch 64, 5000 steps, dropout 0.2.

Devices and precision: --device cpu|cuda; --dtype fp32 (on cuda with TF32 off, true fp32 GEMMs)
or bf16 (torch.autocast around forward + loss; weights, gradients and AdamW state stay fp32;
on cpu this is autocast('cpu'), for checking only); --compile wraps the model in torch.compile
(the warm-up steps absorb the compilation; first_step_s shows it). On cuda AdamW is fused.

Examples (see README.md beside this file):
    python3 bench/peers/pytorch_gpt2.py --preset shakespeare-cpu --threads 2 --steps 50 --warmup 10
    python3 bench/peers/pytorch_gpt2.py --preset gpt2-124m --threads 2 --steps 5 --warmup 2
    python3 bench/peers/pytorch_gpt2.py --threads 2 --train-shakespeare ../shared/data/tinyshakespeare.txt
  on one NVIDIA H100/H200:
    python3 bench/peers/pytorch_gpt2.py --device cuda --dtype bf16 --compile --preset gpt2-124m --batch 16 --seq 1024 --steps 20 --warmup 5
    python3 bench/peers/pytorch_gpt2.py --device cuda --dtype bf16 --compile --train-shakespeare data/tinyshakespeare.txt --recipe shakespeare-char --eval-interval 250 --eval-batches 20 --target-loss 1.47
"""

import argparse
import contextlib
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
    # nanoGPT's config/train_shakespeare_char.py, the GPU-sized Shakespeare run.
    "shakespeare-char": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab=65, batch=64, seq=256),
    # GPT-2 small at llm.c's CPU reference size (B=4, T=64); on a GPU pass e.g. --batch 16 --seq 1024.
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab=50304, batch=4, seq=64),
    # GPT-2 medium, large and XL shapes (llm.c's d24, d36, d48); pass --batch and --seq on a GPU.
    "gpt2-350m": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024, vocab=50304, batch=4, seq=64),
    "gpt2-774m": dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab=50304, batch=4, seq=64),
    "gpt2-1558m": dict(n_layer=48, n_head=25, n_embd=1600, block_size=1024, vocab=50304, batch=4, seq=64),
}

# The training side of the --train-shakespeare recipes (the model sizes are the PRESETS above).
RECIPES = {
    "shakespeare-cpu": dict(steps=2000, dropout=0.0, max_lr=1e-3, min_lr=1e-4, warmup=100,
                            betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0),
    "shakespeare-char": dict(steps=5000, dropout=0.2, max_lr=1e-3, min_lr=1e-4, warmup=100,
                             betas=(0.9, 0.99), weight_decay=0.1, grad_clip=1.0),
}

# Dense (no sparsity) peak TFLOPS of an H100 SXM; the H200 has the same compute (only its memory
# differs). fp32 is the CUDA-core figure: with TF32 off, fp32 GEMMs do not use the tensor cores.
# tf32 is the dense TF32 tensor-core figure.
DEFAULT_PEAK_TFLOPS = {"bf16": 989.0, "fp32": 67.0, "tf32": 494.0}


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


def make_optimizer(model, lr, weight_decay, betas, device, eps=1e-8):
    """AdamW with decoupled weight decay on 2-D weights only (nanoGPT). On cuda fused=True (an
    error if this build cannot); on the CPU fused if this build supports it there, else foreach,
    else the plain loop."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied weight once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if device == "cuda":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True), "fused"
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


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args):
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update({
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name(0),
            "gpu_capability": f"sm_{props.major}{props.minor}",
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "gpu_sms": props.multi_processor_count,
        })
    return env


def setup_device(args):
    """Checks the device, sets the TF32 switches on cuda, and creates the CUDA context (outside
    every timed region). Returns the facts for the JSON."""
    info = {"device": args.device, "dtype": args.dtype, "compile": args.compile}
    if args.device == "cpu":
        info["device_name"] = cpu_name()
        return info
    if not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch.cuda.is_available() is False "
                 f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})")
    # fp32: true fp32 GEMMs (no TF32). tf32: fp32 everywhere with TF32 tensor-core matmuls (what
    # allow_tf32=True gives PyTorch users). bf16: TF32 on, as nanoGPT sets it; under autocast every
    # matmul runs in bf16 anyway, so this only touches fp32 matmuls left outside autocast (none here).
    tf32 = args.dtype in ("bf16", "tf32")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    t0 = time.perf_counter()
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    info.update({
        "device_name": torch.cuda.get_device_name(0),
        "cuda_init_s": time.perf_counter() - t0,
        "tf32": {
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
    })
    return info


def autocast(args):
    """The context for forward + loss: bf16 autocast, or nothing for fp32."""
    if args.dtype == "bf16":
        return torch.autocast(device_type=args.device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(args):
    if args.device == "cuda":
        torch.cuda.synchronize()


def peak_tflops(args):
    """(peak, where it came from); (None, None) on the CPU without --peak-tflops."""
    if args.peak_tflops is not None:
        return args.peak_tflops, "--peak-tflops"
    if args.device != "cuda":
        return None, None
    name = torch.cuda.get_device_name(0)
    if not any(s in name for s in ("H100", "H200")) or any(s in name for s in ("PCIe", "NVL")):
        print(f"warning: the default peak ({DEFAULT_PEAK_TFLOPS[args.dtype]} TFLOPS {args.dtype}) is the "
              f"H100/H200 SXM figure, but this is a {name}: pass --peak-tflops for a meaningful MFU",
              file=sys.stderr)
    return DEFAULT_PEAK_TFLOPS[args.dtype], f"default: H100/H200 SXM dense {args.dtype}"


def flops_per_token(model, cfg):
    """nanoGPT's estimate_mfu (the PaLM appendix B formula): 6N + 12*L*H*Q*T per token for forward
    + backward, N = parameters without the position embedding (the tied token embedding counted
    once, as the LM head's matmul), T = the sequence length trained on. Attention counts the full
    T x T products, causal mask or not."""
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    L, H, Q, T = cfg["n_layer"], cfg["n_head"], cfg["n_embd"] // cfg["n_head"], cfg["seq"]
    return 6 * n + 12 * L * H * Q * T


def throughput(args, model, cfg, tokens_per_s):
    fpt = flops_per_token(model, cfg)
    achieved = fpt * tokens_per_s / 1e12
    peak, source = peak_tflops(args)
    return {
        "flops_per_token": fpt,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_tflops_source": source,
        "mfu": achieved / peak if peak else None,
    }


def build_model(args, cfg, dropout):
    """The model, initialised on the CPU (so the weights are the same on every device for a
    seed) and moved to the device, and what to call: torch.compile's wrapper or the model."""
    model = GPT(cfg["n_layer"], cfg["n_head"], cfg["n_embd"], cfg["block_size"], cfg["vocab"], dropout)
    model.to(args.device)
    model.train()
    run = torch.compile(model) if args.compile else model
    return model, run


def check_sizes(cfg):
    if cfg["seq"] > cfg["block_size"]:
        sys.exit(f"error: --seq {cfg['seq']} is longer than --block-size {cfg['block_size']}")
    if cfg["n_embd"] % cfg["n_head"]:
        sys.exit(f"error: --n-embd {cfg['n_embd']} is not a multiple of --n-head {cfg['n_head']}")


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
    check_sizes(cfg)
    return cfg


def lr_at(step, max_lr, min_lr, warmup, total):
    """nanoGPT's schedule: linear warm-up, then cosine from max_lr to min_lr at `total`."""
    if step < warmup:
        return max_lr * (step + 1) / (warmup + 1)
    if step >= total:
        return min_lr
    ratio = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (max_lr - min_lr)


def memory_stats(args):
    if args.device != "cuda":
        return {}
    return {"max_memory_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}


# ----------------------------------------------------------------------------- modes


def step(args, model, run, opt, cfg, gen):
    """One training step on random tokens; returns (its start time, after the data is on the
    device, and the loss). Synchronises at both ends on cuda."""
    B, T = cfg["batch"], cfg["seq"]
    x = torch.randint(cfg["vocab"], (B, T), generator=gen).to(args.device)
    y = torch.randint(cfg["vocab"], (B, T), generator=gen).to(args.device)
    sync(args)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with autocast(args):
        _, loss = run(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sync(args)
    return t0, loss


def profile_step(args, one_step):
    """Runs one_step under torch.profiler and prints its GPU kernels by total time to stderr."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=acts) as prof:
        one_step()
    key = "self_cuda_time_total" if args.device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=40, max_name_column_width=90),
          file=sys.stderr)


def time_steps(args, cfg):
    torch.manual_seed(args.seed)
    dropout = args.dropout if args.dropout is not None else 0.0
    model, run = build_model(args, cfg, dropout)
    opt, impl = make_optimizer(model, lr=1e-4, weight_decay=0.1, betas=(0.9, 0.99), device=args.device)
    B, T = cfg["batch"], cfg["seq"]
    gen = torch.Generator().manual_seed(args.seed)
    times, losses = [], []
    first_step_s = None
    for i in range(args.warmup + args.steps):
        t0, loss = step(args, model, run, opt, cfg, gen)
        dt = time.perf_counter() - t0
        if i == 0:
            first_step_s = dt
        if i >= args.warmup:
            times.append(dt)
            losses.append(loss.item())
        if args.verbose:
            print(f"step {i:4d} {'(warm-up) ' if i < args.warmup else ''}{dt * 1e3:9.1f} ms  loss {loss.item():.4f}",
                  file=sys.stderr)
    if args.profile:
        profile_step(args, lambda: step(args, model, run, opt, cfg, gen))
    med = statistics.median(times)
    tokens_per_s = B * T / med
    return {
        "mode": "step-timing",
        "preset": args.preset,
        "config": cfg,
        "dropout": dropout,
        "params": sum(p.numel() for p in model.parameters()),
        "optimizer": f"AdamW ({impl})",
        "steps": args.steps,
        "warmup": args.warmup,
        "median_step_s": med,
        "mean_step_s": statistics.fmean(times),
        "min_step_s": min(times),
        "max_step_s": max(times),
        "first_step_s": first_step_s,  # with --compile: includes the compilation
        "tokens_per_s": tokens_per_s,
        **throughput(args, model, cfg, tokens_per_s),
        **memory_stats(args),
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

    recipe = RECIPES[args.recipe]
    cfg = dict(PRESETS[args.recipe])
    for key in ("n_layer", "n_head", "n_embd", "block_size", "batch", "seq"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    cfg["vocab"] = len(chars)
    cfg["seq"] = cfg["block_size"] if args.seq is None else cfg["seq"]
    check_sizes(cfg)
    steps = recipe["steps"] if args.steps is None else args.steps
    dropout = recipe["dropout"] if args.dropout is None else args.dropout
    max_lr, min_lr, warmup = recipe["max_lr"], recipe["min_lr"], recipe["warmup"]
    B, T = cfg["batch"], cfg["seq"]
    offsets = torch.arange(T)
    pin = args.device == "cuda"

    def batch(split, gen):
        """B random windows of T+1 tokens, gathered with one index tensor (no loop per row)."""
        d = train_data if split == "train" else val_data
        ix = torch.randint(len(d) - T - 1, (B, 1), generator=gen) + offsets  # (B, T) positions
        x, y = d[ix], d[ix + 1]
        if pin:
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(args.device, non_blocking=pin), y.to(args.device, non_blocking=pin)

    def evaluate(split):
        """Mean loss over --eval-batches windows, drawn the same way at every evaluation (a fixed
        seed, as ferrogpt does), in eval mode (no dropout), without touching the training stream."""
        gen = torch.Generator().manual_seed(args.seed ^ 0x5EEDE7A1)
        run.eval()
        total = torch.zeros((), dtype=torch.float64, device=args.device)
        with torch.no_grad():
            for _ in range(args.eval_batches):
                x, y = batch(split, gen)
                with autocast(args):
                    _, loss = run(x, y)
                total += loss.double()
        run.train()
        return (total / args.eval_batches).item()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.perf_counter()
    model, run = build_model(args, cfg, dropout)
    opt, impl = make_optimizer(model, lr=max_lr, weight_decay=recipe["weight_decay"], betas=recipe["betas"],
                               device=args.device)
    sync(args)
    init_s = time.perf_counter() - t_start
    loss = None
    first_step_s = None
    eval_s = periodic_eval_s = 0.0
    history = []
    target_step = target_s = None
    t_train_end = None
    for step in range(steps):
        t_step = time.perf_counter()
        lr = lr_at(step, max_lr, min_lr, warmup, steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch("train", gen)
        opt.zero_grad(set_to_none=True)
        with autocast(args):
            _, loss = run(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        opt.step()
        done = step + 1
        if step == 0:
            sync(args)
            first_step_s = time.perf_counter() - t_step
        if args.verbose and (step % 100 == 0 or done == steps):
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {time.perf_counter() - t_start:6.1f} s",
                  file=sys.stderr)
        last = done == steps
        if last:
            sync(args)
            t_train_end = time.perf_counter()
        if last or (args.eval_interval > 0 and done % args.eval_interval == 0):
            t_eval = time.perf_counter()
            val = evaluate("val")
            now = time.perf_counter()
            eval_s += now - t_eval
            if not last:
                periodic_eval_s += now - t_eval
            history.append({"step": done, "elapsed_s": now - t_start, "val_loss": val})
            if args.target_loss is not None and target_step is None and val <= args.target_loss:
                target_step, target_s = done, now - t_start
            if args.verbose:
                print(f"after {done} steps: val loss {val:.4f}  {now - t_start:6.1f} s", file=sys.stderr)
    t_end = time.perf_counter()
    wall = t_end - t_start
    train_s = (t_train_end - t_start) - periodic_eval_s
    train_loss = evaluate("train")  # after the clock stops: ferrogpt evaluates val only
    # Throughput of the steps after the first (which includes compilation), evaluations excluded.
    if steps > 1:
        tokens_per_s = (steps - 1) * B * T / (train_s - init_s - first_step_s)
    else:
        tokens_per_s = B * T / first_step_s
    return {
        "mode": "train-shakespeare",
        "recipe": args.recipe,
        "data": path,
        "config": cfg,
        "dropout": dropout,
        "params": sum(p.numel() for p in model.parameters()),
        "optimizer": f"AdamW ({impl}), lr {max_lr} cosine to {min_lr}, warmup {warmup}, betas {recipe['betas']}, "
                     f"wd {recipe['weight_decay']} on 2-D weights, clip {recipe['grad_clip']}",
        "steps": steps,
        "final_train_loss_last_batch": loss.item(),
        "train_loss": train_loss,
        "val_loss": history[-1]["val_loss"],
        "eval_batches": args.eval_batches,
        "eval_interval": args.eval_interval,
        "evaluations": history,
        "target_loss": args.target_loss,
        "target_reached_step": target_step,
        "target_reached_s": target_s,  # since model init, evaluations included; null if never
        "train_s": train_s,  # model init + training steps, evaluations excluded
        "eval_s": eval_s,  # all val evaluations, the final one included
        "wall_s": wall,  # model init + training + val evaluations (not data loading)
        "wall_with_data_load_s": t_end - t_load,
        "init_s": init_s,  # model init, move to the device, optimizer
        "first_step_s": first_step_s,  # with --compile: includes the compilation
        "ms_per_step": 1e3 * train_s / steps,  # train_s / steps: init and compilation included
        "tokens_per_s": tokens_per_s,  # steps after the first only
        **throughput(args, model, cfg, tokens_per_s),
        **memory_stats(args),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="model and batch sizes for step timing")
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--n-head", type=int)
    ap.add_argument("--n-embd", type=int)
    ap.add_argument("--block-size", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int, help="sequence length (default: the block size)")
    ap.add_argument("--steps", type=int, help="timed steps (default 20), or training steps with "
                                                "--train-shakespeare (default: the recipe's, 2000 or 5000)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--dropout", type=float, help="default: 0 for step timing, the recipe's for training")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: model and data on GPU 0, synchronize around each timed step, fused AdamW")
    ap.add_argument("--dtype", choices=("fp32", "tf32", "bf16"), default="fp32",
                    help="fp32 (on cuda: TF32 off for matmul and cuDNN, so true fp32), tf32 (fp32 with "
                         "TF32 tensor-core matmuls, allow_tf32=True), or bf16: "
                         "torch.autocast(bfloat16) around forward + loss, fp32 weights and optimizer state "
                         "(on cpu: autocast('cpu'), for checking, not timing)")
    ap.add_argument("--compile", action="store_true",
                    help="model = torch.compile(model); warm-up steps absorb the compilation")
    ap.add_argument("--peak-tflops", type=float,
                    help="peak for MFU; default on cuda 989 (bf16) or 67 (fp32): the dense H100 SXM "
                         "figures, also right for the H200 (same compute, more memory); H100 PCIe is "
                         "756/51. On cpu no MFU unless given")
    ap.add_argument("--train-shakespeare", metavar="FILE",
                    help="run a full training recipe on FILE instead of timing")
    ap.add_argument("--recipe", choices=sorted(RECIPES),
                    help="with --train-shakespeare: shakespeare-cpu (default) or shakespeare-char")
    ap.add_argument("--eval-interval", type=int, default=0,
                    help="with --train-shakespeare: val evaluation after every N steps as well as after "
                         "the last, inside the wall time (default 0: after the last only)")
    ap.add_argument("--eval-batches", type=int, default=20, help="batches per evaluation (default 20)")
    ap.add_argument("--target-loss", type=float,
                    help="with --train-shakespeare: report when an evaluation first has val loss <= this")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, one more step under torch.profiler: its GPU kernels "
                         "by total time on stderr (where a step's milliseconds go)")
    ap.add_argument("--verbose", "-v", action="store_true", help="progress lines on stderr")
    args = ap.parse_args()

    for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab", "batch", "seq", "steps", "threads",
                 "eval_batches", "peak_tflops"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.eval_interval < 0:
        ap.error("--eval-interval must be >= 0")
    if args.dropout is not None and not 0.0 <= args.dropout < 1.0:
        ap.error("--dropout must be in [0, 1)")
    if args.train_shakespeare:
        if args.preset:
            ap.error("--preset is for step timing; with --train-shakespeare use --recipe")
        args.recipe = args.recipe or "shakespeare-cpu"
    else:
        for flag, given in (("--recipe", args.recipe is not None), ("--eval-interval", args.eval_interval != 0),
                            ("--target-loss", args.target_loss is not None)):
            if given:
                ap.error(f"{flag} needs --train-shakespeare")
        if args.compile and args.warmup == 0:
            print("warning: --compile with --warmup 0: the first timed step includes the compilation",
                  file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = setup_device(args)
    env = environment(args)

    if args.train_shakespeare:
        result = train_shakespeare(args, args.train_shakespeare)
    else:
        if args.steps is None:
            args.steps = 20
        result = time_steps(args, resolve_config(args))
    result = {**device, **result, "env": env}
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

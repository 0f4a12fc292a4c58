#!/usr/bin/env python3
"""PyTorch peer for timing a Llama training step (CPU or one NVIDIA GPU).

A plain Llama in the nanoGPT style, the architecture of Hugging Face's LlamaForCausalLM (checked
against tests/fixtures/llama-tiny, see README.md): pre-RMSNorm blocks, rotary position
embeddings (the rotate_half convention of HF checkpoints, theta --rope-theta), grouped-query
causal attention through F.scaled_dot_product_attention (enable_gqa where the torch build has
it, else repeat_interleave of k/v), SwiGLU MLP (down(silu(gate(x)) * up(x))), no biases, LM
head untied unless --tie, HF's initialisation (N(0, 0.02), RMSNorm gains 1), no dropout.

Each timed step is zero_grad + forward + loss + backward + clip 1.0 + AdamW (lr 1e-4, betas
(0.9, 0.99), weight decay 0.1 on 2-D weights only; fused on cuda), on random tokens, as in
pytorch_gpt2.py; prints one JSON object with the median step time, tokens/s and MFU over --steps
steps after --warmup warm-up steps.

Presets (--preset; every size can be overridden):
    llama-tiny   4 layers, 128 channels, 4 heads, 2 kv heads, ffn 344, vocab 65 (Tiny
                 Shakespeare's characters), T=128, B=8: a CPU size;
    smollm-135m  SmolLM-135M: 30 layers, 576 channels, 9 heads, 3 kv heads, ffn 1536,
                 vocab 49152, embedding tied to the LM head, T=1024, B=16: a GPU size.

Devices and precision: --device cpu|cuda; --dtype fp32|bf16 (default bf16 on cuda, fp32 on cpu;
bf16 is torch.autocast around forward + loss, weights, gradients and AdamW state stay fp32; fp32
on cuda turns TF32 off); --compile wraps the model in torch.compile (the warm-up steps absorb
the compilation; first_step_s shows it). The device set-up, AdamW and MFU helpers are
pytorch_gpt2.py's.

Examples:
    python3 bench/peers/pytorch_llama.py --preset llama-tiny --threads 2 --steps 20 --warmup 5
  on one NVIDIA H100/H200:
    python3 bench/peers/pytorch_llama.py --device cuda --compile --preset smollm-135m --steps 20 --warmup 5
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_gpt2 import (environment, make_optimizer, memory_stats, peak_tflops,  # noqa: E402
                          setup_device, step)

PRESETS = {
    # A CPU size: the char-level Shakespeare vocabulary (65), GQA with 2 query heads per kv head.
    "llama-tiny": dict(n_layer=4, n_embd=128, n_head=4, n_kv_head=2, ffn=344, vocab=65, seq=128, batch=8,
                       tie=False),
    # HuggingFaceTB/SmolLM-135M's config.json (rope_theta 10000, rms_norm_eps 1e-5, tied embeddings).
    "smollm-135m": dict(n_layer=30, n_embd=576, n_head=9, n_kv_head=3, ffn=1536, vocab=49152, seq=1024, batch=16,
                        tie=True),
}
SIZE_KEYS = ("n_layer", "n_embd", "n_head", "n_kv_head", "ffn", "vocab", "seq", "batch")

# enable_gqa arrived in torch 2.5; before it, k and v are repeated to the query heads.
try:
    F.scaled_dot_product_attention(*(torch.zeros(1, h, 1, 2) for h in (2, 1, 1)), enable_gqa=True)
    NATIVE_GQA = True
except (TypeError, RuntimeError):
    NATIVE_GQA = False


# ----------------------------------------------------------------------------- model


def rms_norm(x, weight, eps):
    """x / sqrt(mean(x^2) + eps) * weight over the last dimension (F.rms_norm where it exists)."""
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.size(-1),), weight, eps)
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


class RMSNorm(nn.Module):
    def __init__(self, n_embd, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_embd))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_tables(seq, head_size, theta):
    """cos, sin: (T, HS), the angles t * inv_freq[i] repeated for both halves (rotate_half)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
    ang = torch.arange(seq, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (T, HS/2)
    ang = torch.cat((ang, ang), dim=-1)  # (T, HS)
    return ang.cos(), ang.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, n_embd, n_head, n_kv_head):
        super().__init__()
        self.n_head, self.n_kv_head, self.hs = n_head, n_kv_head, n_embd // n_head
        self.q_proj = nn.Linear(n_embd, n_head * self.hs, bias=False)
        self.k_proj = nn.Linear(n_embd, n_kv_head * self.hs, bias=False)
        self.v_proj = nn.Linear(n_embd, n_kv_head * self.hs, bias=False)
        self.o_proj = nn.Linear(n_head * self.hs, n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.hs).transpose(1, 2)  # (B, NH, T, HS)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.hs).transpose(1, 2)  # (B, NKV, T, HS)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.hs).transpose(1, 2)
        cos, sin = cos[:T].to(q.dtype), sin[:T].to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if NATIVE_GQA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            rep = self.n_head // self.n_kv_head  # query head h reads kv head h // rep
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, n_embd, ffn):
        super().__init__()
        self.gate_proj = nn.Linear(n_embd, ffn, bias=False)
        self.up_proj = nn.Linear(n_embd, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, n_embd, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, n_kv_head, ffn, eps):
        super().__init__()
        self.input_layernorm = RMSNorm(n_embd, eps)
        self.self_attn = Attention(n_embd, n_head, n_kv_head)
        self.post_attention_layernorm = RMSNorm(n_embd, eps)
        self.mlp = MLP(n_embd, ffn)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    def __init__(self, n_layer, n_embd, n_head, n_kv_head, ffn, vocab, seq, tie, rope_theta=10000.0, eps=1e-5):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, n_embd)
        self.layers = nn.ModuleList([Block(n_embd, n_head, n_kv_head, ffn, eps) for _ in range(n_layer)])
        self.norm = RMSNorm(n_embd, eps)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(seq, n_embd // n_head, rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        # HF's initialisation: N(0, initializer_range = 0.02) everywhere, RMSNorm gains 1.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx, targets=None):
        x = self.embed_tokens(idx)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ----------------------------------------------------------------------------- timing


def flops_per_token(model, cfg):
    """nanoGPT's estimate (PaLM appendix B): 6N + 12*L*H*Q*T per token for forward + backward, N =
    the parameters that take part in a matmul (the tied embedding counted once, as the LM head;
    an untied input embedding is a lookup and left out), H the query heads, Q the head size, T
    the sequence length. Attention counts the full T x T products, causal mask or not."""
    n = sum(p.numel() for p in model.parameters())  # a tied weight is listed once
    if not cfg["tie"]:
        n -= model.embed_tokens.weight.numel()
    L, H, Q, T = cfg["n_layer"], cfg["n_head"], cfg["n_embd"] // cfg["n_head"], cfg["seq"]
    return 6 * n + 12 * L * H * Q * T


def time_steps(args, cfg):
    torch.manual_seed(args.seed)
    model = Llama(cfg["n_layer"], cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["ffn"], cfg["vocab"],
                  cfg["seq"], cfg["tie"], rope_theta=args.rope_theta)
    model.to(args.device)
    model.train()
    run = torch.compile(model) if args.compile else model
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
    med = statistics.median(times)
    tokens_per_s = B * T / med
    fpt = flops_per_token(model, cfg)
    achieved = fpt * tokens_per_s / 1e12
    peak, source = peak_tflops(args)
    return {
        "mode": "step-timing",
        "model": "llama",
        "preset": args.preset,
        "config": {**cfg, "rope_theta": args.rope_theta, "rms_norm_eps": 1e-5},
        "gqa": "enable_gqa" if NATIVE_GQA else "repeat_interleave",
        "params": sum(p.numel() for p in model.parameters()),
        "optimizer": f"AdamW ({impl})",
        "steps": args.steps,
        "warmup": args.warmup,
        "median_step_s": med,
        "median_step_ms": med * 1e3,
        "mean_step_s": statistics.fmean(times),
        "min_step_s": min(times),
        "max_step_s": max(times),
        "first_step_s": first_step_s,  # with --compile: includes the compilation
        "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_tflops_source": source,
        "mfu": achieved / peak if peak else None,
        **memory_stats(args),
        "last_loss": losses[-1],
    }


def resolve_config(args):
    cfg = dict(PRESETS[args.preset or "llama-tiny"])
    for key in SIZE_KEYS:
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    if args.tie is not None:
        cfg["tie"] = args.tie
    if cfg["n_embd"] % cfg["n_head"] or (cfg["n_embd"] // cfg["n_head"]) % 2:
        sys.exit(f"error: --embd {cfg['n_embd']} must be --heads {cfg['n_head']} times an even head size")
    if cfg["n_head"] % cfg["n_kv_head"]:
        sys.exit(f"error: --heads {cfg['n_head']} is not a multiple of --kv-heads {cfg['n_kv_head']}")
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="model and batch sizes (default llama-tiny)")
    ap.add_argument("--layers", dest="n_layer", type=int)
    ap.add_argument("--embd", dest="n_embd", type=int, help="channels")
    ap.add_argument("--heads", dest="n_head", type=int, help="query heads")
    ap.add_argument("--kv-heads", dest="n_kv_head", type=int, help="key/value heads (divides --heads)")
    ap.add_argument("--ffn", type=int, help="SwiGLU hidden size (intermediate_size)")
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--seq", type=int, help="sequence length T")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--tie", action=argparse.BooleanOptionalAction,
                    help="tie the LM head to the token embedding (default: the preset's; smollm-135m ties)")
    ap.add_argument("--rope-theta", type=float, default=10000.0)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up steps (default 3)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: model and data on GPU 0, synchronize around each timed step, fused AdamW")
    ap.add_argument("--dtype", choices=("fp32", "bf16"),
                    help="default bf16 on cuda (autocast, fp32 weights and optimizer state), fp32 on cpu "
                         "(on cuda: TF32 off)")
    ap.add_argument("--compile", action="store_true",
                    help="model = torch.compile(model); warm-up steps absorb the compilation")
    ap.add_argument("--peak-tflops", type=float,
                    help="peak for MFU; default on cuda the dense H100/H200 SXM figure; on cpu no MFU unless given")
    ap.add_argument("--verbose", "-v", action="store_true", help="a line per step on stderr")
    args = ap.parse_args()

    for name in SIZE_KEYS + ("steps", "threads", "peak_tflops", "rope_theta"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.compile and args.warmup == 0:
        print("warning: --compile with --warmup 0: the first timed step includes the compilation", file=sys.stderr)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = setup_device(args)
    env = environment(args)
    result = {**device, **time_steps(args, resolve_config(args)), "env": env}
    result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

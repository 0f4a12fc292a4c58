#!/usr/bin/env python3
"""Make the tiny Hugging Face Llama fixture used by the Llama loading and training tests.

Writes tests/fixtures/llama-tiny/:

* config.json, model.safetensors.index.json and model-0000k-of-0000n.safetensors: a randomly
  initialised LlamaForCausalLM saved by transformers' save_pretrained, SHARDED as big hub
  checkpoints are (max_shard_size 150KB gives 4 shards, layer 0's MLP split across two).
  Sizes: vocab 96, 64 channels, 2 layers, 4 query heads of 16 and 2 key/value heads
  (grouped-query attention, 2 query heads per kv head), SwiGLU MLP of 176, RMSNorm eps 1e-5,
  RoPE theta 10000, untied LM head, no biases.
  Every tensor is drawn at random, larger than HF's init (std 0.1, not 0.02) so that the
  logits have structure, and the RMSNorm gains are 1 + 0.1 * randn, so a loader that
  mishandles any single tensor (wrong transpose, wrong head layout, wrong norm) is caught.
* reference.json: float32 numbers from transformers (eager attention) for a seeded batch of
  B=2 sequences of T=24 random ids (targets = the next ids, given explicitly):
  - logits (B, T, V) and the mean cross-entropy loss;
  - logits_f64 and loss_f64: an independent float64 numpy forward from the safetensors files
    (transformers upcasts RMSNorm, softmax and RoPE to float32 only, so it cannot give a
    float64 reference); it agrees with transformers to float32 precision;
  - logits_llama3 and loss_llama3: the same weights with Llama 3.1's RoPE frequency scaling
    (rope_parameters below), with the scaled inverse frequencies it uses;
  - short_inputs / logits_short: the first sequence cut to its first 7 tokens (an odd length);
  - train: ten AdamW steps (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on
    tensors with dim >= 2 only, as ferrogpt does; no clipping) on that same batch every step:
    the loss before each update, the gradient L2 norm at the first step, the loss after the last.

Flat arrays are row-major: logits[(b*T + t)*V + v].

The llama3 scaling uses original_max_position_embeddings 32 (not Llama 3.1's 8192): with
head_dim 16 and theta 10000 the wavelengths 2*pi/inv_freq are 6.3, 19.9, 62.8, ..., so one
frequency is kept (wavelength < 32/4), one is smoothed (between 8 and 32) and the other six are
divided by the factor: all three branches of the formula are exercised.

Usage (from the repository root; needs torch, transformers (5.x), safetensors, numpy):
    python3 scripts/make_llama_fixture.py [--out tests/fixtures/llama-tiny]

The output is deterministic for a given torch version (fixed seeds).
"""

import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

B, T, T_SHORT = 2, 24, 7
SEED = 0

CONFIG = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    attention_dropout=0.0,
    bos_token_id=1,
    eos_token_id=2,
)
ROPE_DEFAULT = {"rope_type": "default", "rope_theta": 10000.0}
# transformers 5 spells RoPE settings as `rope_parameters` (rope_theta inside); hub configs of
# Llama 3.1 still say `rope_scaling` (these keys minus rope_theta) plus a top-level `rope_theta`,
# which transformers 5 converts to the same thing.
ROPE_LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}

OPT = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
TRAIN_STEPS = 10


def make_config(rope):
    return LlamaConfig(**CONFIG, rope_parameters=dict(rope), attn_implementation="eager")


def build_model() -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(make_config(ROPE_DEFAULT)).float()
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):  # input_layernorm, post_attention_layernorm, model.norm
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    model.eval()
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr(), "head is tied"
    return model


def batch():
    gen = torch.Generator().manual_seed(SEED + 1)
    ids = torch.randint(CONFIG["vocab_size"], (B, T + 1), generator=gen)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def forward(model, inputs, targets=None):
    with torch.no_grad():
        logits = model(inputs).logits  # (B, T, V)
    loss = None
    if targets is not None:
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1)).item()
    return logits, loss


def sensitivity(model, inputs, logits) -> None:
    """Every parameter tensor must move the logits: perturb each in turn and compare."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            saved = p.detach().clone()
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            delta = (model(inputs).logits - logits).abs().max().item()
            p.copy_(saved)
            assert delta > 1e-3, f"{name} barely affects the logits ({delta})"
    print("every parameter tensor changes the logits when perturbed")


def numpy_forward(out_dir: str, cfg: dict, rope: dict, ids: np.ndarray) -> np.ndarray:
    """Independent float64 Llama forward straight from the sharded safetensors files, spelling
    out the layout a loader must follow. The shards are listed by model.safetensors.index.json
    (weight_map: tensor name -> file). Linear weights are [out, in] (y = x @ W.T), no biases.
    q_proj's output rows are NH blocks of HS; k_proj/v_proj's are NKV blocks; query head h uses
    kv head h // (NH / NKV) (transformers' repeat_kv, i.e. repeat_interleave). RoPE is the
    rotate_half ("NeoX") convention: dimension i of a head is paired with i + HS/2 and both use
    inv_freq[i] (i < HS/2), not adjacent pairs (2i, 2i+1) as in Meta's original checkpoints
    (the HF conversion permuted q_proj/k_proj rows for that). Attention scale 1/sqrt(HS).
    RMSNorm: x / sqrt(mean(x^2) + eps) * g. MLP: down(silu(gate(x)) * up(x)). Untied lm_head."""
    from safetensors.numpy import load_file

    with open(os.path.join(out_dir, "model.safetensors.index.json")) as fh:
        index = json.load(fh)
    w = {}
    for shard in sorted(set(index["weight_map"].values())):
        for k, v in load_file(os.path.join(out_dir, shard)).items():
            assert index["weight_map"][k] == shard
            w[k.removeprefix("model.")] = v.astype(np.float64)
    C, NH, NKV, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rms_norm_eps"]
    HS = C // NH
    Bn, Tn = ids.shape

    inv_freq = llama3_inv_freq(rope, HS) if rope["rope_type"] == "llama3" else default_inv_freq(rope, HS)
    ang = np.arange(Tn)[:, None] * inv_freq[None, :]  # (T, HS/2)
    cos = np.concatenate([np.cos(ang)] * 2, -1)  # (T, HS)
    sin = np.concatenate([np.sin(ang)] * 2, -1)

    def rope_apply(x):  # (B, H, T, HS)
        x1, x2 = x[..., : HS // 2], x[..., HS // 2:]
        return x * cos + np.concatenate([-x2, x1], -1) * sin

    def rms(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    def silu(x):
        return x / (1.0 + np.exp(-x))

    x = w["embed_tokens.weight"][ids]  # (B, T, C)
    mask = np.triu(np.ones((Tn, Tn), dtype=bool), 1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).reshape(Bn, Tn, NH, HS).transpose(0, 2, 1, 3)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).reshape(Bn, Tn, NKV, HS).transpose(0, 2, 1, 3)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(Bn, Tn, NKV, HS).transpose(0, 2, 1, 3)
        q, k = rope_apply(q), rope_apply(k)
        k = np.repeat(k, NH // NKV, axis=1)  # (B, NH, T, HS)
        v = np.repeat(v, NH // NKV, axis=1)
        att = q @ k.transpose(0, 1, 3, 2) / math.sqrt(HS)  # (B, NH, T, T)
        att[..., mask] = -np.inf
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(0, 2, 1, 3).reshape(Bn, Tn, C)
        x = x + y @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        x = x + (silu(h @ w[p + "mlp.gate_proj.weight"].T) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["norm.weight"])
    return x @ w["lm_head.weight"].T  # (B, T, V)


def default_inv_freq(rope: dict, hs: int) -> np.ndarray:
    return 1.0 / rope["rope_theta"] ** (np.arange(0, hs, 2, dtype=np.float64) / hs)


def llama3_inv_freq(rope: dict, hs: int) -> np.ndarray:
    """Llama 3.1's scaling (as in Meta's reference code): wavelengths below
    original_max/high_freq_factor are kept, those above original_max/low_freq_factor are divided by
    factor, and in between inv_freq is blended: (1 - s) * inv_freq / factor + s * inv_freq with
    s = (original_max / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)."""
    inv = default_inv_freq(rope, hs)
    factor, lo, hi, old = (rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"],
                           rope["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    out = np.where(wavelen > old / lo, inv / factor, inv)
    s = (old / wavelen - lo) / (hi - lo)
    medium = (wavelen >= old / hi) & (wavelen <= old / lo)
    return np.where(medium, (1 - s) * inv / factor + s * inv, out)


def ce(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits.reshape(-1, logits.shape[-1])
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]
    return float((lse - z[np.arange(len(z)), targets.reshape(-1)]).mean())


def train(model, inputs, targets):
    """Ten AdamW steps on the same batch; ferrogpt's weight-decay rule (dim >= 2 only)."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": OPT["weight_decay"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=OPT["lr"], betas=OPT["betas"], eps=OPT["eps"], foreach=False)
    losses, grad_norm0 = [], None
    for step in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        logits = model(inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        loss.backward()
        if step == 0:
            grad_norm0 = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params)).item()
        losses.append(loss.item())
        opt.step()
    model.eval()
    _, after = forward(model, inputs, targets)
    return losses, grad_norm0, after


def flat(t) -> list:
    return [float(v) for v in np.asarray(t, dtype=np.float64).reshape(-1)]


def dump_compact(obj: dict, row: int) -> str:
    """JSON with one line per key; long flat float lists broken every `row` values (one vocab
    row of logits per line). Floats are Python reprs of float64, which round-trip exactly (and
    of a float32 value give back exactly that float32)."""
    lines = []
    for i, (k, v) in enumerate(obj.items()):
        if isinstance(v, list) and len(v) > row and all(isinstance(x, float) for x in v):
            rows = ",\n    ".join(", ".join(repr(x) for x in v[j:j + row]) for j in range(0, len(v), row))
            text = f'  {json.dumps(k)}: [\n    {rows}\n  ]'
        else:
            text = f"  {json.dumps(k)}: {json.dumps(v)}"
        lines.append(text + ("," if i + 1 < len(obj) else ""))
    return "{\n" + "\n".join(lines) + "\n}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("tests", "fixtures", "llama-tiny"))
    ap.add_argument("--max-shard-size", default="150KB", help="save_pretrained's shard size (default 150KB: 4 shards)")
    args = ap.parse_args()

    model = build_model()
    os.makedirs(args.out, exist_ok=True)
    for old in glob.glob(os.path.join(args.out, "*.safetensors")):
        os.remove(old)
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size=args.max_shard_size)
    gen_cfg = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    index_path = os.path.join(args.out, "model.safetensors.index.json")
    assert os.path.exists(index_path), "checkpoint was not sharded"
    with open(index_path) as fh:
        shards = sorted(set(json.load(fh)["weight_map"].values()))
    assert len(shards) >= 2, shards

    # Report what the files hold (key names, dtypes, shapes, shard).
    for shard in shards:
        with safe_open(os.path.join(args.out, shard), framework="pt") as f:
            for k in sorted(f.keys()):
                t = f.get_tensor(k)
                print(f"{shard}  {k:45s} {str(t.dtype):14s} {list(t.shape)}")
            print(f"{shard} metadata: {f.metadata()}")
    with open(os.path.join(args.out, "config.json")) as fh:
        cfg = json.load(fh)

    inputs, targets = batch()
    logits, loss = forward(model, inputs, targets)
    sensitivity(model, inputs, logits)

    # Reloading from the directory (through the index) reproduces the logits.
    reloaded = LlamaForCausalLM.from_pretrained(args.out, attn_implementation="eager").float().eval()
    assert torch.equal(forward(reloaded, inputs)[0], logits), "reload mismatch"
    # HF's own loss (it shifts labels internally) agrees on the full sequences.
    ids = torch.cat([inputs, targets[:, -1:]], 1)
    with torch.no_grad():
        hf_loss = model(ids, labels=ids).loss.item()
    with torch.no_grad():
        hf_logits_full = model(ids).logits[:, :-1]
    loss_full = F.cross_entropy(hf_logits_full.reshape(-1, CONFIG["vocab_size"]), targets.reshape(-1)).item()
    assert abs(hf_loss - loss_full) < 1e-6, (hf_loss, loss_full)

    # Causality and odd length: the first 7 tokens alone give the first 7 rows.
    short = inputs[:1, :T_SHORT]
    logits_short, _ = forward(model, short)
    err = (logits_short - logits[:1, :T_SHORT]).abs().max().item()
    assert err < 1e-5, f"short prefix disagrees with the full sequence: {err}"

    # The same weights with Llama 3.1 RoPE scaling.
    model3 = LlamaForCausalLM(make_config(ROPE_LLAMA3)).float().eval()
    model3.load_state_dict(model.state_dict())
    inv3 = model3.model.rotary_emb.inv_freq.double().numpy()
    inv0 = model.model.rotary_emb.inv_freq.double().numpy()
    HS = CONFIG["hidden_size"] // CONFIG["num_attention_heads"]
    assert np.allclose(inv3, llama3_inv_freq(ROPE_LLAMA3, HS), rtol=1e-6, atol=0), (inv3, llama3_inv_freq(ROPE_LLAMA3, HS))
    assert np.allclose(inv0, default_inv_freq(ROPE_DEFAULT, HS), rtol=1e-6, atol=0)
    kept, divided = np.isclose(inv3, inv0, rtol=1e-6), np.isclose(inv3, inv0 / ROPE_LLAMA3["factor"], rtol=1e-6)
    assert kept.sum() >= 1 and divided.sum() >= 1 and (~kept & ~divided).sum() >= 1, "not all three llama3 branches"
    logits3, loss3 = forward(model3, inputs, targets)
    print(f"llama3 inv_freq: {inv3.tolist()}")
    print(f"logits max |default - llama3| = {(logits3 - logits).abs().max().item():.3e}")

    # Independent float64 forward from the files.
    ids_np = inputs.numpy()
    l64 = numpy_forward(args.out, cfg, ROPE_DEFAULT, ids_np)
    l64_3 = numpy_forward(args.out, cfg, ROPE_LLAMA3, ids_np)
    err = np.abs(l64 - logits.double().numpy()).max()
    err3 = np.abs(l64_3 - logits3.double().numpy()).max()
    print(f"numpy float64 vs transformers float32: max abs diff {err:.2e} (default), {err3:.2e} (llama3)")
    assert err < 1e-4 and err3 < 1e-4, (err, err3)
    loss64 = ce(l64, targets.numpy())

    losses, grad_norm0, loss_after = train(model, inputs, targets)
    print(f"loss {loss!r} (f64 {loss64!r}), llama3 {loss3!r}; train losses {losses}; grad norm {grad_norm0!r}")
    assert losses[-1] < losses[0]

    V = CONFIG["vocab_size"]
    reference = {
        "description": "reference for tests/fixtures/llama-tiny (scripts/make_llama_fixture.py): float32 numbers "
        "from transformers' LlamaForCausalLM (eager attention) except *_f64 (an independent float64 numpy forward); "
        "flat arrays are row-major, logits[(b*T + t)*V + v] is the next-token logit after inputs[b][0..=t]; "
        "loss is the mean cross-entropy of the B*T logits rows against targets",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "config": {**CONFIG, "head_dim": HS, "rope_parameters": ROPE_DEFAULT},
        "rope_parameters_llama3": ROPE_LLAMA3,
        "rope_llama3_hub_form": {"rope_theta": ROPE_LLAMA3["rope_theta"],
                                 "rope_scaling": {k: v for k, v in ROPE_LLAMA3.items() if k != "rope_theta"}},
        "inv_freq": flat(inv0),
        "inv_freq_llama3": flat(inv3),
        "shape": [B, T, V],
        "inputs": inputs.tolist(),
        "targets": targets.tolist(),
        "loss": loss,
        "loss_f64": loss64,
        "loss_llama3": loss3,
        "loss_llama3_f64": ce(l64_3, targets.numpy()),
        "short_inputs": short.tolist(),
        "short_shape": [1, T_SHORT, V],
        "train": {
            "optimizer": "torch.optim.AdamW (foreach=False); weight_decay only on tensors with dim >= 2; "
                         "no clipping; the same batch every step; losses[i] is the loss before update i",
            "lr": OPT["lr"], "betas": list(OPT["betas"]), "eps": OPT["eps"], "weight_decay": OPT["weight_decay"],
            "steps": TRAIN_STEPS,
            "losses": losses,
            "grad_norm_step0": grad_norm0,
            "loss_after": loss_after,
        },
        "logits": flat(logits),
        "logits_llama3": flat(logits3),
        "logits_short": flat(logits_short),
        "logits_f64": flat(l64),
        "logits_llama3_f64": flat(l64_3),
    }
    with open(os.path.join(args.out, "reference.json"), "w") as fh:
        fh.write(dump_compact(reference, V))
    total = 0
    for name in sorted(os.listdir(args.out)):
        size = os.path.getsize(os.path.join(args.out, name))
        total += size
        print(f"{name}: {size} bytes")
    print(f"total: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Make the tiny Hugging Face GPT-2 fixture used by the checkpoint-loading tests.

Writes tests/fixtures/hf-tiny/{model.safetensors,config.json,expected.json}:

* a randomly initialised GPT2LMHeadModel (2 layers, 2 heads, 16 channels, 32 positions,
  vocab 50, gelu_new, no dropout) whose every parameter -- embeddings, LayerNorm weights and
  biases, linear weights and biases -- is drawn at random with a scale large enough (std 0.2)
  that a loader which mishandles any single tensor (wrong transpose, wrong slice of c_attn,
  missing bias, swapped LayerNorm) gives visibly different logits;
* expected.json: a fixed 12-token sequence, the float64 logits of the model for it and the
  mean next-token cross-entropy over its 11 (input, target) pairs.

The weights are stored as float32 (as HF does); the reference numbers are computed in float64
from exactly those float32 values (model.double() after the weights are set), so a float64
implementation that loads the file should match them to ~1e-12 and a float32 one to ~1e-5.

Usage (from the repository root; needs torch, transformers, safetensors, numpy):
    python3 scripts/make_hf_fixture.py [--out tests/fixtures/hf-tiny]

The output is deterministic for a given torch version (torch.manual_seed(0)).
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel

# Fixed token ids (< vocab_size = 50); length 12.
IDS = [3, 17, 42, 0, 49, 8, 25, 25, 11, 36, 5, 30]


def build_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=16,
        n_positions=32,
        vocab_size=50,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        # GPT-2's <|endoftext|> is its last id; keep that convention inside the tiny vocab.
        bos_token_id=49,
        eos_token_id=49,
    )
    model = GPT2LMHeadModel(config)
    model.eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.2
            if ".ln_" in name and name.endswith(".weight") or name == "transformer.ln_f.weight":
                # LayerNorm gains around 1 (still random, so each one matters).
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)
    # The LM head is tied to the token embedding.
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    return model


def reference(model: GPT2LMHeadModel):
    m = model.double()
    ids = torch.tensor([IDS], dtype=torch.long)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    with torch.no_grad():
        full = m(ids).logits[0]  # [12, 50]
        out = m(inputs, labels=None).logits[0]  # [11, 50]
        loss = F.cross_entropy(out, targets[0], reduction="mean")
        # Cross-check with HF's own loss (it shifts labels internally, and upcasts the
        # logits to float32 only, so agreement is to float32 precision).
        hf_loss = m(ids, labels=ids).loss
    assert torch.allclose(full[:-1], out, rtol=0, atol=1e-12), "causality check failed"
    assert abs(loss.item() - hf_loss.item()) < 1e-5, (loss.item(), hf_loss.item())
    return full, out, loss


def sensitivity(model: GPT2LMHeadModel, out: torch.Tensor) -> None:
    """Every parameter tensor must move the logits: perturb each in turn and compare."""
    m = model.double()
    inputs = torch.tensor([IDS[:-1]])
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            saved = p.detach().clone()
            # Random, not constant: LayerNorm cancels a constant shift of e.g. wpe.
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            delta = (m(inputs).logits[0] - out).abs().max().item()
            p.copy_(saved)
            assert delta > 1e-3, f"{name} barely affects the logits ({delta})"
    print("every parameter tensor changes the logits when perturbed")


def numpy_forward(st_path: str, cfg: dict, ids: list) -> "np.ndarray":
    """Independent float64 GPT-2 forward straight from the safetensors file, spelling out the
    layout a loader must follow: Conv1D weights are [in, out] (y = x @ W + b); c_attn's output
    columns are [q | k | v], each split into n_head contiguous blocks of head_dim; the LM head
    is wte^T (tied); LayerNorm eps from config.json; GELU is the tanh approximation."""
    import numpy as np
    from safetensors.numpy import load_file

    raw = load_file(st_path)
    w = {k.removeprefix("transformer."): v.astype(np.float64) for k, v in raw.items()}
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    hd = C // H
    T = len(ids)

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * g + b

    def gelu(x):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))

    x = w["wte.weight"][ids] + w["wpe.weight"][:T]
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for i in range(cfg["n_layer"]):
        p = f"h.{i}."
        h = ln(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (qkv[:, j * C:(j + 1) * C].reshape(T, H, hd).transpose(1, 0, 2) for j in range(3))
        att = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
        att[:, mask] = -np.inf
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        y = (att @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = ln(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = ln(x, w["ln_f.weight"], w["ln_f.bias"])
    return x @ w["wte.weight"].T


def write_legacy(src: str, dst: str, cfg: dict, out: torch.Tensor) -> None:
    """The same weights laid out like the hub's original `gpt2` model.safetensors: keys without
    the `transformer.` prefix, plus the causal-mask buffers `h.{i}.attn.bias` of shape
    [1, 1, n_positions, n_positions] that a loader has to skip. config.json is the same;
    ../hf-tiny/expected.json applies unchanged."""
    import shutil
    from safetensors.torch import load_file, save_file

    os.makedirs(dst, exist_ok=True)
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(os.path.join(src, "model.safetensors")).items()}
    n = cfg["n_positions"]
    for i in range(cfg["n_layer"]):
        tensors[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
    save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(os.path.join(src, "config.json"), os.path.join(dst, "config.json"))
    m = GPT2LMHeadModel.from_pretrained(dst).double().eval()
    with torch.no_grad():
        again = m(torch.tensor([IDS[:-1]])).logits[0]
    assert torch.equal(again, out), "legacy layout reload mismatch"
    print(f"{dst}: keys without prefix + attn.bias masks; transformers loads it to the same logits")


def dump_compact(obj: dict) -> str:
    """JSON with one line per key and one line per logits row (full float64 precision:
    Python's float repr round-trips exactly)."""
    lines = []
    for i, (k, v) in enumerate(obj.items()):
        if isinstance(v, list) and v and isinstance(v[0], list):
            rows = ",\n    ".join(json.dumps(r) for r in v)
            text = f'  {json.dumps(k)}: [\n    {rows}\n  ]'
        else:
            text = f"  {json.dumps(k)}: {json.dumps(v)}"
        lines.append(text + ("," if i + 1 < len(obj) else ""))
    return "{\n" + "\n".join(lines) + "\n}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join("tests", "fixtures", "hf-tiny"))
    ap.add_argument("--legacy-out", default=os.path.join("tests", "fixtures", "hf-tiny-legacy"),
                    help="same weights in the layout of the hub's original gpt2 file ('' to skip)")
    args = ap.parse_args()

    model = build_model()
    os.makedirs(args.out, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    gen_cfg = os.path.join(args.out, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    full, out, loss = reference(model)

    # Report what the file holds (key names, dtypes, shapes).
    st_path = os.path.join(args.out, "model.safetensors")
    with safe_open(st_path, framework="pt") as f:
        keys = sorted(f.keys())
        for k in keys:
            t = f.get_tensor(k)
            print(f"{k:40s} {str(t.dtype):14s} {list(t.shape)}")
        meta = f.metadata()
    print("metadata:", meta)

    # Sanity: reloading from the directory reproduces the logits.
    reloaded = GPT2LMHeadModel.from_pretrained(args.out).double().eval()
    with torch.no_grad():
        again = reloaded(torch.tensor([IDS[:-1]])).logits[0]
    assert torch.equal(again, out), "reload mismatch"
    sensitivity(model, out)
    with open(os.path.join(args.out, "config.json")) as fh:
        cfg = json.load(fh)
    npl = numpy_forward(st_path, cfg, IDS[:-1])
    err = abs(npl - out.numpy()).max()
    assert err < 1e-12, f"numpy forward disagrees with transformers: {err}"
    print(f"independent numpy forward agrees with transformers (max abs diff {err:.1e})")

    if args.legacy_out:
        write_legacy(args.out, args.legacy_out, cfg, out)

    expected = {
        "description": "float64 reference for tests/fixtures/hf-tiny (scripts/make_hf_fixture.py); "
        "logits[i] are the next-token logits after inputs[0..=i]; loss is the mean "
        "cross-entropy of logits[i] against targets[i]",
        "torch_version": torch.__version__,
        "ids": IDS,
        "inputs": IDS[:-1],
        "targets": IDS[1:],
        "logits": [[float(v) for v in row] for row in out.tolist()],
        "logits_full": [[float(v) for v in row] for row in full.tolist()],
        "loss": float(loss.item()),
    }
    with open(os.path.join(args.out, "expected.json"), "w") as fh:
        fh.write(dump_compact(expected))
    print(f"loss = {loss.item()!r}")
    for name in sorted(os.listdir(args.out)):
        print(f"{name}: {os.path.getsize(os.path.join(args.out, name))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

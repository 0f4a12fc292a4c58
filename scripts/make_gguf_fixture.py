#!/usr/bin/env python3
"""GGUF files made and read by llama.cpp's own `gguf` package, for crates/model/tests/gguf.rs.

    make_gguf_fixture.py write OUTDIR   tiny gpt2.gguf and llama.gguf (GGUFWriter) and
                                        expected.json: their weights in Hugging Face names and
                                        layouts, with the config each one describes
    make_gguf_fixture.py read FILE      prints the file as GGUFReader sees it (JSON): metadata
                                        keys and scalar values, each tensor's shape, type and
                                        first values

The conversions to llama.cpp's layout (Conv1D transposed, q/k rows interleaved) are written
here independently of ferrogpt's, from the format's description.
"""
import json
import sys

import numpy as np
import gguf


def values(shape, seed):
    n = int(np.prod(shape))
    return (np.sin(np.arange(n, dtype=np.float64) * 0.37 + seed) * 0.5).astype(np.float32).reshape(shape)


def interleave(w, heads):
    """HF rotate-half rows -> Meta/llama.cpp interleaved rows, per head."""
    hs = w.shape[0] // heads
    return w.reshape(heads, 2, hs // 2, w.shape[1]).transpose(0, 2, 1, 3).reshape(w.shape)


def tokens(w, vocab):
    toks = ["!", "\"", "#", "a", "b", "ab", "Ġ", "Ġab", "<|endoftext|>"]
    toks += [f"[PAD{i}]" for i in range(len(toks), vocab)]
    types = [1] * 8 + [3] + [5] * (vocab - 9)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(["a b", "Ġ ab"])
    w.add_bos_token_id(8)
    w.add_eos_token_id(8)


def write(out):
    expected = {}
    # gpt2: L=2, C=8, NH=2, F=32, maxT=6, V=12
    L, C, F, T, V = 2, 8, 32, 6, 12
    w = gguf.GGUFWriter(f"{out}/gpt2.gguf", "gpt2")
    w.add_context_length(T)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(2)
    w.add_layer_norm_eps(1e-5)
    tokens(w, V)
    hf = {}
    seed = [0]

    def t(gname, hname, shape, conv1d=False, f16=False):
        seed[0] += 1
        v = values(shape, seed[0])
        hf[hname] = v.flatten().tolist()
        g = v.T.copy() if conv1d else v
        w.add_tensor(gname, g.astype(np.float16) if f16 else g)

    t("token_embd.weight", "wte.weight", (V, C))
    t("position_embd.weight", "wpe.weight", (T, C))
    for i in range(L):
        b, h = f"blk.{i}.", f"h.{i}."
        t(b + "attn_norm.weight", h + "ln_1.weight", (C,))
        t(b + "attn_norm.bias", h + "ln_1.bias", (C,))
        t(b + "attn_qkv.weight", h + "attn.c_attn.weight", (C, 3 * C), conv1d=True)
        t(b + "attn_qkv.bias", h + "attn.c_attn.bias", (3 * C,))
        t(b + "attn_output.weight", h + "attn.c_proj.weight", (C, C), conv1d=True, f16=True)
        t(b + "attn_output.bias", h + "attn.c_proj.bias", (C,))
        t(b + "ffn_norm.weight", h + "ln_2.weight", (C,))
        t(b + "ffn_norm.bias", h + "ln_2.bias", (C,))
        t(b + "ffn_up.weight", h + "mlp.c_fc.weight", (C, F), conv1d=True)
        t(b + "ffn_up.bias", h + "mlp.c_fc.bias", (F,))
        t(b + "ffn_down.weight", h + "mlp.c_proj.weight", (F, C), conv1d=True)
        t(b + "ffn_down.bias", h + "mlp.c_proj.bias", (C,))
    t("output_norm.weight", "ln_f.weight", (C,))
    t("output_norm.bias", "ln_f.bias", (C,))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected["gpt2"] = {"config": dict(n_layer=L, n_head=2, n_embd=C, block_size=T, vocab_size=V), "tensors": hf}

    # llama: L=2, C=32, NH=4, KV=2, HS=8, F=24, maxT=10, V=12, untied, theta 5e5, eps 1e-6;
    # ffn_up in Q8_0 (rows of C = 32 values: one block), attn_output in F16
    L, C, NH, KV, F, T = 2, 32, 4, 2, 24, 10
    HS = C // NH
    w = gguf.GGUFWriter(f"{out}/llama.gguf", "llama")
    w.add_context_length(T)
    w.add_embedding_length(C)
    w.add_block_count(L)
    w.add_feed_forward_length(F)
    w.add_head_count(NH)
    w.add_head_count_kv(KV)
    w.add_rope_dimension_count(HS)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-6)
    tokens(w, V)
    hf = {}

    def u(gname, hname, shape, heads=None, f16=False, q8=False):
        seed[0] += 1
        v = values(shape, seed[0])
        hf[hname] = v.flatten().tolist()
        g = interleave(v, heads) if heads else v
        if q8:
            q = gguf.quants.quantize(g, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gname, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gname, g.astype(np.float16) if f16 else g)

    u("token_embd.weight", "model.embed_tokens.weight", (V, C))
    for i in range(L):
        b, h = f"blk.{i}.", f"model.layers.{i}."
        u(b + "attn_norm.weight", h + "input_layernorm.weight", (C,))
        u(b + "attn_q.weight", h + "self_attn.q_proj.weight", (NH * HS, C), heads=NH)
        u(b + "attn_k.weight", h + "self_attn.k_proj.weight", (KV * HS, C), heads=KV)
        u(b + "attn_v.weight", h + "self_attn.v_proj.weight", (KV * HS, C))
        u(b + "attn_output.weight", h + "self_attn.o_proj.weight", (C, NH * HS), f16=True)
        u(b + "ffn_norm.weight", h + "post_attention_layernorm.weight", (C,))
        u(b + "ffn_gate.weight", h + "mlp.gate_proj.weight", (F, C))
        u(b + "ffn_up.weight", h + "mlp.up_proj.weight", (F, C), q8=True)
        u(b + "ffn_down.weight", h + "mlp.down_proj.weight", (C, F))
    u("output_norm.weight", "model.norm.weight", (C,))
    u("output.weight", "lm_head.weight", (12, C))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected["llama"] = {
        "config": dict(n_layer=L, n_head=NH, n_kv_head=KV, n_embd=C, block_size=T, vocab_size=12,
                       ffn_hidden=F, rope_theta=500000.0, norm_eps=1e-6),
        "tensors": hf,
    }
    with open(f"{out}/expected.json", "w") as f:
        json.dump(expected, f)


def read(path):
    r = gguf.GGUFReader(path)
    meta = {}
    for k, field in r.fields.items():
        if k.startswith("GGUF."):
            continue
        v = field.contents()
        meta[k] = v if not isinstance(v, list) else {"len": len(v), "first": v[:3]}
    tensors = {
        t.name: {
            "shape": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "first": [float(x) for x in np.asarray(t.data, dtype=np.float32).flatten()[:4]],
        }
        for t in r.tensors
    }
    print(json.dumps({"metadata": meta, "tensors": tensors}))


if __name__ == "__main__":
    {"write": write, "read": read}[sys.argv[1]](sys.argv[2])

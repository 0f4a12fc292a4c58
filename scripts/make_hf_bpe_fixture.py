#!/usr/bin/env python3
"""Make tests/fixtures/hf-bpe: a Hugging Face GPT-2 directory with its own byte-level BPE.

What it writes (deterministic for given torch/tokenizers versions):

* tokenizer.json, tokenizer_config.json: a byte-level BPE of 320 tokens (the 256 bytes, 63
  merges and <|endoftext|>) trained with the `tokenizers` library on the first 200,000
  characters of Tiny Shakespeare, saved by transformers' PreTrainedTokenizerFast;
* legacy/vocab.json, legacy/merges.txt: the same BPE in the older two-file form;
* model.safetensors, config.json: a GPT2LMHeadModel (2 layers, 2 heads, 32 channels, 64
  positions, vocab 320) trained for 1,500 steps on those characters, so that greedy decoding
  is text and not a loop of one token, saved by save_pretrained;
* expected.json: for a few texts, the ids the library gives (encode without special tokens);
  for a prompt, the ids and text of 40 tokens of greedy decoding by transformers' generate,
  and the smallest gap between the two largest logits along the way (a float32 implementation
  must agree on every argmax; a gap far above float32 noise makes that a fair test).

Usage (from the repository root; needs torch, transformers, tokenizers):
    python3 scripts/make_hf_bpe_fixture.py [--data ../shared/data/tinyshakespeare.txt]
"""

import argparse
import json
import os

import torch
import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

OUT = "tests/fixtures/hf-bpe"
TEXTS = [
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "Héllo, wörld! naïve café 東京 🦀\n\ttabs  and   spaces <|endoftext|> 1234567",
    "",
    " leading space, trailing space ",
]
PROMPT = "KING RICHARD:\nWhat"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/tinyshakespeare.txt")
    args = ap.parse_args()
    text = open(args.data, encoding="utf-8").read()[:200_000]
    os.makedirs(f"{OUT}/legacy", exist_ok=True)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text[i : i + 1000] for i in range(0, len(text), 1000)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", clean_up_tokenization_spaces=False)
    fast.save_pretrained(OUT)
    tok.model.save(f"{OUT}/legacy")
    for extra in ["special_tokens_map.json", "chat_template.jinja"]:
        if os.path.exists(f"{OUT}/{extra}"):
            os.remove(f"{OUT}/{extra}")
    vocab = tok.get_vocab_size()
    eot = tok.token_to_id("<|endoftext|>")

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab,
                        activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, bos_token_id=eot, eos_token_id=eot)
    model = GPT2LMHeadModel(config)
    ids = torch.tensor(tok.encode(text).ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(1500):
        starts = torch.randint(0, len(ids) - 65, (16,), generator=gen)
        x = torch.stack([ids[s : s + 64] for s in starts])
        y = torch.stack([ids[s + 1 : s + 65] for s in starts])
        loss = model(input_ids=x, labels=y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(OUT, safe_serialization=True)

    prompt_ids = tok.encode(PROMPT).ids
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=40, do_sample=False,
                             output_scores=True, return_dict_in_generate=True,
                             pad_token_id=eot)
    new = out.sequences[0, len(prompt_ids):].tolist()
    gaps = [float((s[0].topk(2).values[0] - s[0].topk(2).values[1])) for s in out.scores]
    expected = {
        "description": "made by scripts/make_hf_bpe_fixture.py; ids without special tokens",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "vocab_size": vocab,
        "final_train_loss": loss.item(),
        "texts": [{"text": t, "ids": tok.encode(t, add_special_tokens=False).ids} for t in TEXTS],
        "prompt": PROMPT,
        "prompt_ids": prompt_ids,
        "greedy_ids": new,
        "greedy_text": tok.decode(new),
        "min_top2_logit_gap": min(gaps),
    }
    with open(f"{OUT}/expected.json", "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps({k: expected[k] for k in ["vocab_size", "final_train_loss", "greedy_text",
                                                "min_top2_logit_gap"]}, ensure_ascii=False))


if __name__ == "__main__":
    main()

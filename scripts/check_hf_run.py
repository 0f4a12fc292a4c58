#!/usr/bin/env python3
"""Read a ferrogpt run directory with Hugging Face's libraries; print what they make of it.

Usage: check_hf_run.py RUN TEXT_FILE PROMPT N

Prints one JSON object:
  ids           the ids of TEXT_FILE by the `tokenizers` package from RUN/tokenizer.json
                (encode without special tokens);
  greedy        with transformers (and torch) installed: PROMPT followed by N tokens of greedy
                decoding by AutoModelForCausalLM.from_pretrained(RUN).generate, decoded by
                AutoTokenizer.from_pretrained(RUN); null without them.
The tests (crates/cli/tests/ecosystem.rs) compare these with ferrogpt's own.
"""

import json
import sys

from tokenizers import Tokenizer


def main():
    run, text_file, prompt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    text = open(text_file, encoding="utf-8").read()
    ids = Tokenizer.from_file(f"{run}/tokenizer.json").encode(text, add_special_tokens=False).ids
    greedy = None
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        pass
    else:
        tok = AutoTokenizer.from_pretrained(run)
        model = AutoModelForCausalLM.from_pretrained(run)
        x = torch.tensor([tok.encode(prompt, add_special_tokens=False)])
        with torch.no_grad():
            out = model.generate(x, max_new_tokens=n, do_sample=False, pad_token_id=0)
        greedy = tok.decode(out[0].tolist())
    print(json.dumps({"ids": ids, "greedy": greedy}))


if __name__ == "__main__":
    main()

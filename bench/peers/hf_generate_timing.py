"""transformers' generate as the peer of `ferrogpt sample` (issue 16): greedy decoding with the
KV cache on the CPU or one GPU (--device cuda, --dtype fp32|bf16), one timestamp per token
through a streamer (on cuda each step ends with generate's own check of the stopping criteria,
which waits for the GPU). Prints one JSON line: the time
to the first new token (prefill + first step, after the model is loaded) and the median time of
the later tokens. With --batch N, N copies of the prompt are generated side by side (one step
makes a token for each) and the line adds the tokens a second over the batch.

    python3 bench/peers/hf_generate_timing.py --model DIR --threads 2 --tokens 128 \
        --prompt-ids 15496,11,616,1438,318
"""
import argparse
import json
import statistics
import time

import torch
from transformers import GPT2LMHeadModel
from transformers.generation.streamers import BaseStreamer


class Stamps(BaseStreamer):
    """Records when each token reaches the streamer (the prompt first, then one per step)."""

    def __init__(self):
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())

    def end(self):
        pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--prompt-ids", default="15496,11,616,1438,318")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--batch", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=dtype).eval().to(a.device)
    load_s = time.perf_counter() - t0
    ids = torch.tensor([[int(x) for x in a.prompt_ids.split(",")]] * a.batch).to(a.device)
    for _ in range(a.repeats):
        s = Stamps()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=a.tokens,
                min_new_tokens=a.tokens,
                do_sample=False,
                use_cache=True,
                streamer=s,
                pad_token_id=0,
            )
        new = s.times[1:]  # s.times[0] is the prompt
        steps = [b - a for a, b in zip(new, new[1:])]
        median = statistics.median(steps)
        print(json.dumps({
            "peer": "transformers generate",
            "torch": torch.__version__,
            "threads": a.threads,
            "device": a.device,
            "dtype": a.dtype,
            "load_s": round(load_s, 3),
            "first_token_ms": round((new[0] - start) * 1e3, 1),
            "median_ms_per_token": round(median * 1e3, 2),
            "tokens": len(new),
            "batch": a.batch,
            "tokens_per_s_batch": round(a.batch / median, 1),
            "last_ids": out[0, -5:].tolist(),
        }), flush=True)


if __name__ == "__main__":
    main()

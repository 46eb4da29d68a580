"""Run under torchrun by the multi-process tests: build a model from a checkpoint, run a fixed workload,
and have rank 0 write the results as JSON, so that they can be compared with a one-process run."""

import json

import torch

from llama import Llama
from llama.cli import run

PROMPTS = ["The quick brown fox jumps over the lazy", "Hi", "Translate English to French: cheese =>", "Größe 🗽"]
DIALOGS = [
    [{"role": "user", "content": "hello there"}],
    [{"role": "system", "content": "Always answer with emojis"}, {"role": "user", "content": "How to go from Beijing to NY?"}],
]


def workload(llama: Llama, max_gen_len: int = 12) -> dict:
    """Greedy tokens and logprobs (with and without echo), and a streamed sampled chat."""
    prompts = [llama.tokenizer.encode(p, bos=True, eos=False) for p in PROMPTS]
    tokens, logprobs = llama.generate(prompts, max_gen_len, temperature=0, logprobs=True)
    echo_tokens, echo_logprobs = llama.generate(prompts, max_gen_len, temperature=0, logprobs=True, echo=True)
    torch.manual_seed(7)
    stream = ["".join(p) for p in zip(*llama.chat_completion_stream(DIALOGS, max_gen_len=max_gen_len, temperature=0.9))]
    return {
        "tokens": tokens,
        "logprobs": logprobs,
        "echo_tokens": echo_tokens,
        "echo_logprobs": echo_logprobs,
        "chat_stream": stream,
    }


def main(ckpt_dir: str, out: str, max_seq_len: int = 64, compile: bool = False):
    llama = Llama.build(ckpt_dir, f"{ckpt_dir}/tokenizer.model", max_seq_len, 4, dtype="float32", compile=compile)
    results = workload(llama)
    results["world_size"] = torch.distributed.get_world_size()
    if torch.distributed.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    run(main)

"""A straightforward one-token-at-a-time greedy loop over the model's public forward, for parity tests."""

from typing import List, Tuple

import torch

from llama import Llama


def naive_greedy(llama: Llama, prompt: List[int], max_gen_len: int, total_len: int) -> Tuple[List[int], List[float]]:
    """Greedy continuation of one prompt (cut at EOS) and the logprobs of its tokens."""
    model, eos = llama.model, llama.tokenizer.eos_id
    tokens, logprobs = list(prompt), []
    logits = model.forward(torch.tensor([tokens]), 0)[0, -1]
    while len(tokens) - len(prompt) < max_gen_len and len(tokens) < total_len:
        token = int(logits.argmax())
        if token == eos:
            break
        logprobs.append(float(torch.log_softmax(logits, -1)[token]))
        tokens.append(token)
        logits = model.forward(torch.tensor([[token]]), len(tokens) - 1)[0, -1]
    return tokens[len(prompt) :], logprobs

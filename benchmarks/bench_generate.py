"""Generation speed against the machine's memory-bandwidth limit.

    python benchmarks/bench_generate.py --shape 156m [--compile] [--device cpu] [--dtype bfloat16]
    python benchmarks/bench_generate.py --ckpt_dir llama-2-7b/ --tokenizer_path tokenizer.model

With --shape the model has random weights and is built directly on the device. It prints batch-1
prefill and decode tokens/s, the time of a ragged batch of 8 prompts (10 to 150 words, 32 new tokens
each), peak memory, the measured memory bandwidth, and decode as a fraction of the bandwidth roofline
(each decoded token reads every weight but the embedding table once). --baseline also times the released code's
generation loop (prefill up to the shortest prompt, then one token per forward) over the same model.
Run it as one process.
"""

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

import torch

from llama import Llama, ModelArgs, Transformer, Tokenizer
from llama.distributed import pick_device, pick_dtype, setup_model_parallel
from llama.tiny import train_tokenizer

SHAPES = {
    "156m": dict(dim=1024, n_layers=8, n_heads=16, n_kv_heads=4),
    "7b": dict(dim=4096, n_layers=32, n_heads=32),
    "13b": dict(dim=5120, n_layers=40, n_heads=40),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_llama(shape: str, device: torch.device, dtype: torch.dtype, max_seq_len: int, compile: bool) -> Llama:
    """A random-weight model of a named shape, allocated directly on the device."""
    setup_model_parallel(1, device)
    args = ModelArgs(**SHAPES[shape], vocab_size=32000, max_batch_size=8, max_seq_len=max_seq_len)
    with torch.device("meta"):
        model = Transformer(args)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, p.shape[-1] ** -0.5)
    model.init_buffers()
    path = Path(tempfile.mkdtemp()) / "tokenizer.model"
    train_tokenizer(path)
    return Llama(model.eval().requires_grad_(False), Tokenizer(str(path)), compile=compile)


def bandwidth_gbs(device: torch.device) -> float:
    """Read bandwidth: the best of five sums over a 1 GiB buffer, in GB/s (decode mostly reads)."""
    src = torch.ones(2**28, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(6):
        sync(device)
        start = time.perf_counter()
        src.sum()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return src.nbytes / best / 1e9


def bytes_read_per_token(model: Transformer) -> int:
    """Weight bytes a decode step reads: every weight but the embedding table, of which it reads one row."""
    embedding = model.tok_embeddings.weight
    return sum(p.nbytes for p in model.parameters()) - embedding.nbytes + embedding[0].nbytes


@torch.inference_mode()
def released_loop(llama: Llama, prompts: list, max_gen_len: int) -> None:
    """The released code's generation loop: prefill to the shortest prompt, then one token per forward
    with a host-side check of all rows every step."""
    model, device = llama.model, llama.model.norm.weight.device
    min_len, max_len = min(map(len, prompts)), max(map(len, prompts))
    total_len = min(model.params.max_seq_len, max_gen_len + max_len)
    tokens = torch.full((len(prompts), total_len), -1, dtype=torch.long, device=device)
    for i, t in enumerate(prompts):
        tokens[i, : len(t)] = torch.tensor(t, device=device)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    prompt_mask = tokens != -1
    prev = 0
    for cur in range(min_len, total_len):
        logits = model.forward(tokens[:, prev:cur], prev)
        next_token = torch.argmax(logits[:, -1], dim=-1)
        next_token = torch.where(prompt_mask[:, cur], tokens[:, cur], next_token)
        tokens[:, cur] = next_token
        done |= ~prompt_mask[:, cur] & (next_token == llama.tokenizer.eos_id)
        prev = cur
        if all(done):
            break


def timed(device: torch.device, fn):
    """Seconds that fn() took, and what it returned."""
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES))
    parser.add_argument("--ckpt_dir")
    parser.add_argument("--tokenizer_path")
    parser.add_argument("--device")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--baseline", action="store_true", help="also time the released generation loop")
    parser.add_argument("--decode_tokens", type=int, default=128)
    args = parser.parse_args()
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    max_seq_len = 512
    if args.shape:
        llama = random_llama(args.shape, device, dtype, max_seq_len, args.compile)
    else:
        llama = Llama.build(args.ckpt_dir, args.tokenizer_path, max_seq_len, 8, device=args.device, dtype=args.dtype, compile=args.compile)
    weight_bytes = sum(p.nbytes for p in llama.model.parameters())
    per_token = bytes_read_per_token(llama.model)
    rng = random.Random(0)
    vocab = llama.model.params.vocab_size
    prompt = [1] + [rng.randrange(3, vocab) for _ in range(128)]
    # 10 to 150 words at about 1.3 tokens a word, as Llama 2's tokenizer makes them
    ragged = [[1] + [rng.randrange(3, vocab) for _ in range(int(1.3 * n))] for n in (10, 30, 50, 70, 90, 110, 130, 150)]

    generate = lambda prompts, n: llama.generate(prompts, n, temperature=0)  # noqa: E731
    generate([prompt], args.decode_tokens)  # warm-up (and compilation)
    generate(ragged, 32)
    prefill_s, _ = timed(device, lambda: generate([prompt], 1))
    total_s, (tokens, _) = timed(device, lambda: generate([prompt], args.decode_tokens + 1))
    decode_tps = (len(tokens[0]) - 1) / (total_s - prefill_s)  # an early EOS would shorten the run
    ragged_s, _ = timed(device, lambda: generate(ragged, 32))
    bandwidth = bandwidth_gbs(device)
    roofline = bandwidth * 1e9 / per_token

    print(f"device {device}, dtype {dtype}, compile {args.compile}, {weight_bytes / 1e9:.2f} GB of weights, torch {torch.__version__}")
    print(f"batch 1: prefill {len(prompt)} tokens {len(prompt) / prefill_s:.0f} tokens/s, decode {decode_tps:.1f} tokens/s")
    print(f"ragged batch of 8 (prompts {min(map(len, ragged))}-{max(map(len, ragged))} tokens, 32 new each): {ragged_s:.2f} s")
    print(f"read bandwidth {bandwidth:.1f} GB/s, {per_token / 1e9:.2f} GB read per token -> roofline {roofline:.1f} tokens/s; "
          f"decode at {decode_tps / roofline:.0%} of it")
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    else:
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    if args.baseline:
        released_loop(llama, [prompt], 8)
        base_prefill, _ = timed(device, lambda: released_loop(llama, [prompt], 1))
        base_total, _ = timed(device, lambda: released_loop(llama, [prompt], args.decode_tokens + 1))
        base_ragged, _ = timed(device, lambda: released_loop(llama, ragged, 32))
        print(f"released loop: batch-1 decode {args.decode_tokens / (base_total - base_prefill):.1f} tokens/s, ragged batch of 8 {base_ragged:.2f} s")


if __name__ == "__main__":
    main()

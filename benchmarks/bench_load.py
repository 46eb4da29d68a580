"""Peak resident memory and time of loading a checkpoint, against the model's weight bytes.

    python benchmarks/bench_load.py --ckpt_dir DIR [--dtype bfloat16] [--device cpu]

Each measurement runs in a fresh process. `ours` is `Llama.build`; `released` loads the way Meta's
reference code does (build the model with allocated weights in the target dtype, torch.load each
shard whole without mmap, then load_state_dict), for comparison. Run it with one process (MP=1 world).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 2**20


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure_ours(args) -> dict:
    from llama import Llama

    start = time.perf_counter()
    llama = Llama.build(args.ckpt_dir, args.tokenizer_path, args.max_seq_len, 1, device=args.device, dtype=args.dtype)
    seconds = time.perf_counter() - start
    peak, after = peak_rss_gib(), rss_gib()
    llama.model.forward(torch.tensor([[1, 2, 3]], device=llama.model.norm.weight.device), 0)  # touches every weight
    weights = sum(p.nbytes for p in llama.model.parameters()) / 2**30
    return {"weights_gib": weights, "load_s": seconds, "peak_build_gib": peak, "rss_after_build_gib": after,
            "rss_after_forward_gib": rss_gib(), "peak_gib": peak_rss_gib()}


def measure_released(args) -> dict:
    from llama.checkpoint import read_params
    from llama.distributed import pick_device, pick_dtype, setup_model_parallel
    from llama.model import ModelArgs, Transformer
    from llama.tokenizer import Tokenizer

    start = time.perf_counter()
    device = pick_device(args.device)
    setup_model_parallel(1, device)
    dtype = pick_dtype(args.dtype, device)
    shard = torch.load(sorted(Path(args.ckpt_dir).glob("*.pth"))[0], map_location="cpu", weights_only=True)
    params = ModelArgs(**{**read_params(Path(args.ckpt_dir)), "max_seq_len": args.max_seq_len, "max_batch_size": 1,
                          "vocab_size": Tokenizer(args.tokenizer_path).n_words})
    torch.set_default_dtype(dtype)
    with torch.device(device):
        model = Transformer(params)
    model.load_state_dict(shard, strict=False)
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    weights = sum(p.nbytes for p in model.parameters()) / 2**30
    return {"weights_gib": weights, "load_s": seconds, "peak_build_gib": peak, "rss_after_build_gib": rss_gib(), "peak_gib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_dir", required=True)
    parser.add_argument("--tokenizer_path")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max_seq_len", type=int, default=512)
    parser.add_argument("--mode", choices=["ours", "released"])
    args = parser.parse_args()
    args.tokenizer_path = args.tokenizer_path or os.path.join(args.ckpt_dir, "tokenizer.model")
    if args.mode:
        result = (measure_ours if args.mode == "ours" else measure_released)(args)
        print(json.dumps(result))
        return
    for mode in ("ours", "released"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--mode", mode]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{mode:9s} weights {r['weights_gib']:.2f} GiB | load {r['load_s']:.1f} s | peak RSS during build "
              f"{r['peak_build_gib']:.2f} GiB ({r['peak_build_gib'] / r['weights_gib']:.2f}x weights) | "
              + (f"RSS after first forward {r['rss_after_forward_gib']:.2f} GiB" if "rss_after_forward_gib" in r else ""))


if __name__ == "__main__":
    main()

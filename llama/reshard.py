"""Writing Meta-format checkpoints (params.json and `consolidated.NN.pth` shards split as fairscale
splits them) for any model-parallel size, and re-splitting one offline:

    python -m llama.reshard IN_DIR OUT_DIR --mp M

It writes OUT_DIR/consolidated.NN.pth for NN < M (M = 1 merges the shards) and params.json.
Tensors are cut one at a time from the memory-mapped input and written through file-backed buffers,
so the whole model is never held in memory. `Llama.build` can also load any shard count directly;
resharding once saves that work at every start.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from .checkpoint import IGNORED_KEYS, PARAMS_FILE, Progress, Shard, check_out_dir, open_checkpoint, read_slice, valid_world_sizes
from .errors import LlamaError
from .model import ModelArgs


def rope_freqs(args: ModelArgs) -> torch.Tensor:
    """The `rope.freqs` tensor that Meta's shards carry (bf16 rotary frequencies; the loader ignores it)."""
    return (1.0 / (args.rope_theta ** (torch.arange(0, args.head_dim, 2).float() / args.head_dim))).to(torch.bfloat16)


def write_shard(shards: list[Shard], args: ModelArgs, rank: int, world: int, path: Path, progress: Progress) -> None:
    """Save rank `rank` of `world`'s part of every weight, plus rope.freqs, to `path`. Each tensor is copied
    into a buffer backed by a temporary file, which the kernel may page out, instead of into anonymous memory."""
    keys = [key for key in shards[0] if key not in IGNORED_KEYS]
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = {}
        for i, key in enumerate(keys):
            part = read_slice(shards, key, rank, world, args)
            buffer = torch.from_file(f"{tmp}/{i}", shared=True, size=part.numel(), dtype=part.dtype)
            out[key] = buffer.view(part.shape).copy_(part)
            progress.update(part.nbytes)
        out["rope.freqs"] = rope_freqs(args)
        torch.save(out, path)


def save_meta_checkpoint(params: dict, shards: list[Shard], out_dir: Path, mp: int, label: str = "Writing shards") -> None:
    """Write a model as Meta's downloads hold it: `mp` consolidated.NN.pth shards, then params.json with
    vocab_size -1 (the tokenizer decides), last, as it marks the folder complete. `shards` are the
    weights saved for any MP size (one unsharded mapping for a full state dict)."""
    args = ModelArgs(**{**params, "vocab_size": shards[0]["tok_embeddings.weight"].shape[0]})
    sizes = [m for m in valid_world_sizes(args) if m <= args.kv_heads]
    if mp not in sizes:
        raise LlamaError(
            f"This model ({args.n_heads} heads, {args.kv_heads} KV heads) cannot be saved as {mp} shards; "
            f"choose --mp from {sizes}. (More processes than KV heads can still load it directly.)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = len([key for key in shards[0] if key not in IGNORED_KEYS])
    progress = Progress(0, enabled=True, label=label, total_tensors=mp * weights)
    for rank in range(mp):
        write_shard(shards, args, rank, mp, out_dir / f"consolidated.{rank:02d}.pth", progress)
    (out_dir / PARAMS_FILE).write_text(json.dumps({**params, "vocab_size": -1}, indent=2) + "\n")


def reshard(in_dir: Path, out_dir: Path, mp: int) -> None:
    """Re-split the Meta checkpoint in `in_dir` into `mp` shards in `out_dir`."""
    check_out_dir(out_dir)
    params, shards = open_checkpoint(in_dir)
    save_meta_checkpoint(params, shards, out_dir, mp)
    print(f"Wrote {mp} shard(s) and {PARAMS_FILE} to {out_dir}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--mp", type=int, required=True, help="number of shards to write")
    args = parser.parse_args()
    try:
        reshard(args.in_dir, args.out_dir, args.mp)
    except LlamaError as err:
        sys.exit(f"Error: {err}")


if __name__ == "__main__":
    main()

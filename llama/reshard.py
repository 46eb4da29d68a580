"""Re-split a Meta-format checkpoint for another model-parallel size, offline:

    python -m llama.reshard IN_DIR OUT_DIR --mp M

It writes OUT_DIR/consolidated.NN.pth for NN < M (M = 1 merges the shards) and copies params.json.
Tensors are cut one at a time from the memory-mapped input and written through file-backed buffers,
so the whole model is never held in memory. `Llama.build` can also load any shard count directly;
resharding once saves that work at every start.
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from .checkpoint import IGNORED_KEYS, PARAMS_FILE, Progress, Shard, open_checkpoint, read_slice, split_dim, valid_world_sizes
from .errors import LlamaError
from .model import ModelArgs


def write_shard(shards: list[Shard], args: ModelArgs, rank: int, world: int, path: Path, progress: Progress) -> None:
    """Save rank `rank` of `world`'s part of every tensor to `path`. Each tensor is copied into a buffer
    backed by a temporary file, which the kernel may page out, instead of into anonymous memory."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = {}
        for i, key in enumerate(shards[0]):
            part = shards[0][key] if key in IGNORED_KEYS else read_slice(shards, key, rank, world, args)
            buffer = torch.from_file(f"{tmp}/{i}", shared=True, size=part.numel(), dtype=part.dtype)
            out[key] = buffer.view(part.shape).copy_(part)
            progress.update(part.nbytes)
        torch.save(out, path)


def reshard(in_dir: Path, out_dir: Path, mp: int) -> None:
    params, shards = open_checkpoint(in_dir)
    vocab_size = shards[0]["tok_embeddings.weight"].shape[0]
    args = ModelArgs(**{**params, "vocab_size": vocab_size})
    sizes = [m for m in valid_world_sizes(args) if m <= args.kv_heads]
    if mp not in sizes:
        raise LlamaError(
            f"This model ({args.n_heads} heads, {args.kv_heads} KV heads) cannot be saved as {mp} shards; "
            f"choose --mp from {sizes}. (More processes than KV heads can still load it directly.)"
        )
    if out_dir.resolve() == in_dir.resolve():
        raise LlamaError("OUT_DIR must differ from IN_DIR.")
    out_dir.mkdir(parents=True, exist_ok=True)
    replicated = [key for key in shards[0] if key in IGNORED_KEYS or split_dim(key) is None]
    total = sum(shard[key].nbytes for shard in shards for key in shard if key not in replicated)
    total += mp * sum(shards[0][key].nbytes for key in replicated)
    progress = Progress(total, enabled=True, label="Writing shards")
    for rank in range(mp):
        write_shard(shards, args, rank, mp, out_dir / f"consolidated.{rank:02d}.pth", progress)
    shutil.copyfile(in_dir / PARAMS_FILE, out_dir / PARAMS_FILE)
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

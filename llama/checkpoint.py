"""Reading Meta-format checkpoints: params.json, finding and safely opening the `consolidated.NN.pth`
shards, and building each model-parallel rank's slice of the weights from shards saved for any MP size."""

import json
import os
import pickle
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import torch
from fairscale.nn.model_parallel import layers as fs_layers

from .errors import LlamaError
from .model import ModelArgs, Transformer

PARAMS_FILE = "params.json"
IGNORED_KEYS = {"rope.freqs"}  # precomputed rotary frequencies, rebuilt by the model

# The dimension along which fairscale's layers split each weight; absent: replicated (the norms).
SPLIT_DIMS = {"tok_embeddings": 1, "wq": 0, "wk": 0, "wv": 0, "wo": 1, "w1": 0, "w3": 0, "w2": 1, "output": 0}

Shard = Dict[str, torch.Tensor]


def read_params(ckpt_dir: Path) -> dict:
    """The contents of params.json, checked to hold only fields that ModelArgs knows."""
    path = ckpt_dir / PARAMS_FILE
    if not path.is_file():
        raise LlamaError(f"{path} not found. --ckpt_dir must be a model folder holding params.json and *.pth shards.")
    try:
        params = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LlamaError(f"{path} is not valid JSON ({err}). Re-download it.") from None
    if not isinstance(params, dict):
        raise LlamaError(f"{path} must hold a JSON object of model settings.")
    known = {f.name for f in fields(ModelArgs)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise LlamaError(f"{path} has unknown keys {unknown}; the keys ModelArgs accepts are {sorted(known)}.")
    return params


def find_shards(ckpt_dir: Path) -> List[Path]:
    """The checkpoint's shards in model-parallel rank order."""
    shards = sorted(ckpt_dir.glob("*.pth"))
    if not shards:
        raise LlamaError(f"No *.pth checkpoint files in {ckpt_dir}. Pass the folder that holds consolidated.00.pth.")
    return shards


def open_shard(path: Path, fix: str = "Re-download it and check it against checklist.chk (md5sum -c checklist.chk).") -> Shard:
    """Memory-map one shard without unpickling anything but tensors: a .pth from an untrusted source
    must not be able to run code. `fix` says what to do about a damaged file."""
    try:
        shard = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError as err:
        raise LlamaError(
            f"{path} holds objects other than tensors, and it was not loaded because unpickling them could run "
            f"code. Use a checkpoint from a source you trust. ({str(err).splitlines()[0]})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise LlamaError(f"{path} is truncated or corrupt ({err}). {fix}") from None
    if not isinstance(shard, dict) or not all(isinstance(t, torch.Tensor) for t in shard.values()):
        raise LlamaError(f"{path} is not a state dict of tensors.")
    return shard


def check_out_dir(out_dir: Path) -> None:
    """Refuse an output folder that already holds a checkpoint: stale shards mixed with new ones
    would make a broken model."""
    if out_dir.exists() and not out_dir.is_dir():
        raise LlamaError(f"{out_dir} exists and is not a folder. Choose a new output folder.")
    patterns = ("config.json", PARAMS_FILE, "*.pth", "*.safetensors", "*.bin", "*.index.json")
    found = sorted(p.name for pattern in patterns for p in out_dir.glob(pattern))
    if found:
        raise LlamaError(f"{out_dir} already holds checkpoint files ({', '.join(found[:4])}). Choose an empty folder.")


def split_dim(key: str) -> Optional[int]:
    return SPLIT_DIMS.get(key.split(".")[-2])


def valid_world_sizes(args: ModelArgs) -> List[int]:
    """Process counts this model can be split over."""
    kv = args.kv_heads
    return [
        m
        for m in range(1, args.n_heads + 1)
        if args.n_heads % m == 0
        and (kv % m == 0 or m % kv == 0)
        and args.dim % m == 0
        and args.ffn_hidden_dim % m == 0
        and args.vocab_size % m == 0
    ]


def local_range(key: str, full: int, rank: int, world: int, args: ModelArgs) -> Tuple[int, int]:
    """The [start, stop) rows or columns of the full tensor `key` that rank `rank` of `world` holds.
    With more ranks than KV heads, each rank holds the one KV head its query heads use."""
    name = key.split(".")[-2]
    if name in ("wk", "wv") and world > args.kv_heads:
        head = rank // (world // args.kv_heads)
        return head * args.head_dim, (head + 1) * args.head_dim
    part = full // world
    return rank * part, (rank + 1) * part


def read_slice(shards: List[Shard], key: str, rank: int, world: int, args: ModelArgs) -> torch.Tensor:
    """Rank `rank`'s part of tensor `key`, cut from whichever shards hold it (each saved by one of
    len(shards) ranks); only those shards' bytes are read."""
    dim = split_dim(key)
    if dim is None:
        return shards[0][key]
    parts = [shard[key] for shard in shards]
    start, stop = local_range(key, sum(part.shape[dim] for part in parts), rank, world, args)
    pieces, offset = [], 0
    for part in parts:
        size = part.shape[dim]
        lo, hi = max(start, offset), min(stop, offset + size)
        if lo < hi:
            pieces.append(part.narrow(dim, lo - offset, hi - lo))
        offset += size
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


def check_keys(shard: Shard, expected: List[str], where: str) -> None:
    keys = set(shard) - IGNORED_KEYS
    missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
    if missing or unexpected:
        raise LlamaError(
            f"{where} does not match the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}. "
            "Check that params.json belongs to these weights."
        )


def open_checkpoint(ckpt_dir: Path) -> Tuple[dict, List[Shard]]:
    """The model settings and the memory-mapped shards (in model-parallel rank order) of a checkpoint folder."""
    if not ckpt_dir.is_dir():
        raise LlamaError(f"Checkpoint folder {ckpt_dir} not found. Pass --ckpt_dir pointing at a downloaded model.")
    if (ckpt_dir / "config.json").is_file() and not (ckpt_dir / PARAMS_FILE).is_file():
        from .convert import open_hf_checkpoint  # Hugging Face format

        return open_hf_checkpoint(ckpt_dir)
    params = read_params(ckpt_dir)
    return params, [open_shard(path) for path in find_shards(ckpt_dir)]


def cache_bytes(args: ModelArgs, world: int, dtype: torch.dtype) -> int:
    """Bytes of one rank's KV cache: 2 (K and V) x layers x batch x seq x local KV heads x head dim."""
    per_slot = args.local_kv_heads(world) * args.head_dim * dtype.itemsize
    return 2 * args.n_layers * args.max_batch_size * args.max_seq_len * per_slot


def available_memory(device: torch.device) -> Optional[int]:
    """Free bytes on the device (for the CPU, what the kernel calls available), if known."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024 // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    except (OSError, KeyError, ValueError):
        return None


def check_fits(args: ModelArgs, weight_bytes: int, world: int, device: torch.device, dtype: torch.dtype) -> None:
    need = weight_bytes + cache_bytes(args, world, dtype)
    free = available_memory(device)
    if free is not None and need > free:
        gib = 2**30
        raise LlamaError(
            f"The model needs {need / gib:.1f} GiB on {device} per process ({weight_bytes / gib:.1f} GiB of weights, "
            f"{cache_bytes(args, world, dtype) / gib:.1f} GiB of KV cache for max_batch_size={args.max_batch_size} x "
            f"max_seq_len={args.max_seq_len}), but only {free / gib:.1f} GiB is free. Lower --max_seq_len or "
            "--max_batch_size, or spread the model over more processes (torchrun --nproc_per_node)."
        )


class Progress:
    """Progress on stderr (rank 0's only), so that a long load or write never looks hung. It counts bytes
    against `total_bytes`, or, given `total_tensors` (for a writer that cannot size its output without
    reading every tensor first), tensors against that number."""

    def __init__(self, total_bytes: int, enabled: bool, label: str = "Loading weights", total_tensors: int = 0):
        self.total, self.done, self.enabled, self.label = total_bytes, 0, enabled, label
        self.total_tensors, self.tensors = total_tensors, 0
        self.start = self.last = time.perf_counter()

    def update(self, nbytes: int) -> None:
        """Count one more tensor of `nbytes` bytes; redraw at most once a second, and when done."""
        self.done += nbytes
        self.tensors += 1
        if self.total_tensors:
            finished = self.tensors == self.total_tensors
            counts = f"{self.tensors}/{self.total_tensors} tensors, {self.done / 2**30:.2f} GiB"
        else:
            finished = self.done == self.total
            counts = f"{self.done / 2**30:.2f}/{self.total / 2**30:.2f} GiB ({100 * self.done / max(self.total, 1):.0f}%)"
        now = time.perf_counter()
        if self.enabled and (now - self.last > 1.0 or finished):
            self.last = now
            print(
                f"\r{self.label}: {counts}, {now - self.start:.1f} s",
                end="\n" if finished else "",
                file=sys.stderr,
                flush=True,
            )


@contextmanager
def _skip_fairscale_init() -> Iterator[None]:
    """Build fairscale's parallel layers without filling their weights. Their constructor allocates with
    the legacy torch.Tensor call, which ignores the meta device, and with MP > 1 fills each weight from a
    full-size master copy. Every weight is about to be replaced by a loaded one, so skip the fill: the
    allocation is then never touched and costs no resident memory."""
    original = fs_layers._initialize_affine_weight
    fs_layers._initialize_affine_weight = lambda *args, **kwargs: None
    try:
        yield
    finally:
        fs_layers._initialize_affine_weight = original


def load_model(
    ckpt_dir: Path,
    max_seq_len: int,
    max_batch_size: int,
    vocab_size: int,
    rank: int,
    world: int,
    device: torch.device,
    dtype: torch.dtype,
    verbose: bool,
) -> Transformer:
    """Build model-parallel rank `rank` of `world` from a checkpoint saved for any MP size, without
    allocating random weights first: every tensor goes from the memory-mapped shard straight into place."""
    params, shards = open_checkpoint(ckpt_dir)
    args = ModelArgs(**{**params, "max_seq_len": max_seq_len, "max_batch_size": max_batch_size, "vocab_size": vocab_size})
    if world not in valid_world_sizes(args):
        raise LlamaError(
            f"This model ({args.n_heads} heads, {args.kv_heads} KV heads) cannot be split over a model-parallel "
            f"size of {world}; run it with torchrun --nproc_per_node one of {valid_world_sizes(args)} "
            "(or pass that as model_parallel_size)."
        )
    with torch.device("meta"), _skip_fairscale_init():
        model = Transformer(args)
    state = model.state_dict()
    for i, shard in enumerate(shards):
        check_keys(shard, list(state), f"Shard {i} of {ckpt_dir}")
    rows = shards[0]["tok_embeddings.weight"].shape[0]
    if rows != args.vocab_size:
        raise LlamaError(
            f"The tokenizer has {args.vocab_size} tokens but the checkpoint's embedding has {rows} rows. "
            "Use the tokenizer.model that came with these weights."
        )
    weight_bytes = sum(t.numel() for t in state.values()) * dtype.itemsize
    check_fits(args, weight_bytes, world, device, dtype)

    progress = Progress(weight_bytes, enabled=verbose)
    loaded = {}
    for key, target in state.items():
        tensor = read_slice(shards, key, rank, world, args)
        if tensor.shape != target.shape:
            raise LlamaError(
                f"{key} has shape {tuple(tensor.shape)} for rank {rank} of {world}, but params.json describes "
                f"{tuple(target.shape)}. Check that params.json belongs to these weights."
            )
        tensor = tensor.to(device=device, dtype=dtype)
        if tensor.untyped_storage().nbytes() > tensor.nbytes:  # a slice must not keep the whole tensor alive
            tensor = tensor.clone()
        loaded[key] = tensor.contiguous()
        progress.update(loaded[key].nbytes)
    model.load_state_dict(loaded, assign=True)
    model.init_buffers()
    return model.eval().requires_grad_(False)

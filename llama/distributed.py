"""Process setup: device and dtype choice, the process group, model-parallel groups and rank-0 output."""

import os
import sys
from typing import Optional

import torch
import torch.distributed as dist
from fairscale.nn.model_parallel import initialize as fs_init

from .errors import LlamaError


def pick_device(device: Optional[str]) -> torch.device:
    """The requested device, else this rank's CUDA device when there is one, else the CPU."""
    if device is not None:
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise LlamaError(f"device={device!r} was asked for, but CUDA is not available here. Use device='cpu'.")
    elif torch.cuda.is_available():
        chosen = torch.device("cuda")
    else:
        chosen = torch.device("cpu")
    if chosen.type == "cuda" and chosen.index is None:
        chosen = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return chosen


DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def pick_dtype(dtype: Optional[str | torch.dtype], device: torch.device) -> torch.dtype:
    """The requested dtype, else bfloat16 (float16 on GPUs without bfloat16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is not None:
        if dtype not in DTYPES:
            raise LlamaError(f"dtype={dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
        return DTYPES[dtype]
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def setup_model_parallel(model_parallel_size: Optional[int], device: torch.device) -> None:
    """Join the process group (torchrun's, or a one-process group for a plain `python` run)
    and make fairscale's model-parallel groups of `model_parallel_size` ranks (default: all)."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    world_size = dist.get_world_size()
    size = model_parallel_size or world_size
    if world_size % size:
        raise LlamaError(
            f"model_parallel_size={size} does not divide the {world_size} processes; "
            f"run with a multiple of {size} processes (torchrun --nproc_per_node {size})."
        )
    if fs_init.model_parallel_is_initialized():
        if fs_init.get_model_parallel_world_size() == size:
            return
        fs_init.destroy_model_parallel()
    fs_init.initialize_model_parallel(size)


def is_main_rank() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def silence_other_ranks() -> None:
    """Send stdout of every rank but 0 to /dev/null, so that a script's prints appear once."""
    if not is_main_rank() and sys.stdout is sys.__stdout__:
        sys.stdout = open(os.devnull, "w")


def agree_on_errors(error: Optional[BaseException], device: torch.device) -> None:
    """Raise on every rank if any rank failed, so that no rank waits forever in a later collective.
    The failing rank re-raises its own error; the others name the rank to look at."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        if error is not None:
            raise error
        return
    flags = torch.zeros(dist.get_world_size(), device=device if dist.get_backend() == "nccl" else "cpu")
    flags[dist.get_rank()] = float(error is not None)
    dist.all_reduce(flags)
    if error is not None:
        raise error
    failed = flags.nonzero().flatten().tolist()
    if failed:
        raise LlamaError(f"rank {failed[0]} failed to load its part of the model; see its error message above.")

"""Running the example scripts: fire's flags, and bad input reported as one line instead of a traceback."""

import sys
from typing import Callable

import fire
import torch.distributed as dist

from .errors import LlamaError


def run(main: Callable) -> None:
    """Call `main` with the command line's flags. A LlamaError, which every rank raises alike, prints
    its message and exits with status 1. After a clean run or such an error the ranks leave together;
    after any other failure this rank leaves at once, and torchrun stops the others."""
    try:
        fire.Fire(main)
    except LlamaError as err:
        print(f"Error: {err}", file=sys.stderr)
        _leave_together()
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C: leave quietly
        sys.exit(130)
    _leave_together()


def _leave_together() -> None:
    if dist.is_initialized():
        dist.barrier()  # a rank that exits early can abort gloo's threads in another
        dist.destroy_process_group()

"""Running the example scripts: fire's flags, and bad input reported as one line instead of a traceback."""

import sys
from typing import Callable

import fire
import torch.distributed as dist

from .errors import LlamaError


def run(main: Callable) -> None:
    """Call `main` with the command line's flags. A LlamaError prints its message and exits with
    status 1 on every rank that raised it; the process group is closed either way."""
    try:
        fire.Fire(main)
    except LlamaError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)

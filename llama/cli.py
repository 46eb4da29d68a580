"""Running the example scripts: fire's flags, and bad input reported as one line instead of a traceback."""

import sys
from typing import Callable

import fire
import torch.distributed as dist

from .errors import LlamaError


def run(main: Callable) -> None:
    """Call `main` with the command line's flags. A LlamaError prints its message and exits with
    status 1 on every rank that raised it. The process group is closed on the way out."""
    try:
        fire.Fire(main)
    except LlamaError as err:
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C: leave quietly
        sys.exit(130)
    finally:
        if dist.is_initialized():
            dist.barrier()  # leave together: a rank that exits early can abort gloo's threads in another
            dist.destroy_process_group()

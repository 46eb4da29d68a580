import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from llama import Llama
from llama.tiny import write_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
REAL_TOKENIZER = FIXTURES / "llama2-tokenizer.model"
GOLDEN = FIXTURES / "prompt_tokens_golden.json"


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory) -> Callable[..., Path]:
    """Write (once per distinct setting) a random tiny checkpoint: tiny_factory(mp=2, n_kv_heads=None)."""
    made = {}

    def make(mp: int = 1, seed: int = 0, **params) -> Path:
        key = (mp, seed, tuple(sorted(params.items())))
        if key not in made:
            made[key] = write_tiny_checkpoint(tmp_path_factory.mktemp(f"tiny_mp{mp}"), mp, seed, params)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_factory) -> Path:
    return tiny_factory()


@pytest.fixture(scope="session")
def llama32(tiny_ckpt) -> Llama:
    """The tiny model in float32 on the CPU, shared by tests that leave it as they found it."""
    return Llama.build(str(tiny_ckpt), str(tiny_ckpt / "tokenizer.model"), max_seq_len=96, max_batch_size=6, dtype="float32")


@pytest.fixture(scope="session")
def golden() -> dict:
    if not GOLDEN.is_file() or not REAL_TOKENIZER.is_file():
        pytest.skip("../shared/fixtures (Meta's Llama 2 tokenizer and golden tokens) is not present")
    return json.loads(GOLDEN.read_text())


def torchrun(nproc: int, *args: str, timeout: int = 240, stdin: str = "") -> subprocess.CompletedProcess:
    """Run a script under torchrun with `nproc` CPU processes (gloo), feeding it `stdin`, and capture its output."""
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": pythonpath}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)

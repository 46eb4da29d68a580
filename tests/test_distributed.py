"""Multi-process behaviour under real torchrun processes (gloo, CPU)."""

import json

import pytest
import torch

from llama import Llama
from tests.conftest import torchrun
from tests.mp_worker import workload


def run_worker(nproc: int, ckpt, tmp_path, *extra: str) -> dict:
    out = tmp_path / f"out_{nproc}.json"
    proc = torchrun(nproc, "tests/mp_worker.py", "--ckpt_dir", str(ckpt), "--out", str(out), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def assert_same_results(got: dict, expected: dict) -> None:
    for key in ("tokens", "echo_tokens", "chat_stream"):
        assert got[key] == expected[key], key
    for key in ("logprobs", "echo_logprobs"):
        for a, b in zip(got[key], expected[key]):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def single_process_results(tiny_factory):
    ckpt = tiny_factory(mp=1)
    llama = Llama.build(str(ckpt), str(ckpt / "tokenizer.model"), 64, 4, dtype="float32")
    return workload(llama)


@pytest.mark.parametrize("shards, procs", [(1, 2), (2, 2), (4, 2), (1, 4), (2, 4), (4, 4), (1, 8)])
def test_any_shard_count_on_any_process_count_matches_one_process(tiny_factory, tmp_path, single_process_results, shards, procs):
    """The same weights saved as 1, 2 or 4 shards give the same tokens and logprobs on 2, 4 or 8
    processes as on one; 8 processes exceed the 4 KV heads, which are then replicated."""
    ckpt = tiny_factory(mp=shards)
    results = run_worker(procs, ckpt, tmp_path)
    assert results["world_size"] == procs
    assert_same_results(results, single_process_results)


@pytest.mark.parametrize("shards", [2, 4])
def test_shards_merge_on_one_process(tiny_factory, single_process_results, shards):
    ckpt = tiny_factory(mp=shards)
    llama = Llama.build(str(ckpt), str(ckpt / "tokenizer.model"), 64, 4, dtype="float32")
    assert_same_results(workload(llama), single_process_results)


@pytest.mark.parametrize("script, extra", [("example_chat_completion.py", ["--max_seq_len", "1024"]), ("example_text_completion.py", [])])
def test_examples_run_under_torchrun(tiny_factory, script, extra):
    ckpt = tiny_factory(mp=2)
    args = [script, "--ckpt_dir", str(ckpt), "--tokenizer_path", str(ckpt / "tokenizer.model"), "--max_gen_len", "8", *extra]
    proc = torchrun(2, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    chat = script == "example_chat_completion.py"
    assert proc.stdout.count("==================================") == (6 if chat else 4)  # rank 0 only, one per item
    assert ("Error: special tags are not allowed" in proc.stdout) == chat
    assert proc.stderr.count("Loading weights:") == 1 and proc.stderr.count("Loaded in") == 1


def test_bad_input_fails_cleanly_on_every_rank(tiny_ckpt, tmp_path):
    args = ["example_chat_completion.py", "--ckpt_dir", str(tmp_path / "missing"), "--tokenizer_path", str(tiny_ckpt / "tokenizer.model")]
    proc = torchrun(2, *args, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.count("Error: Checkpoint folder") == 2
    assert "LlamaError" not in proc.stderr  # a message, not a traceback


def test_process_count_the_heads_cannot_split_over(tiny_ckpt):
    args = ["example_text_completion.py", "--ckpt_dir", str(tiny_ckpt), "--tokenizer_path", str(tiny_ckpt / "tokenizer.model")]
    proc = torchrun(3, *args, timeout=60)
    assert proc.returncode != 0
    assert proc.stderr.count("cannot be split over a model-parallel size of 3; run it with torchrun --nproc_per_node one of [1, 2, 4, 8]") == 3

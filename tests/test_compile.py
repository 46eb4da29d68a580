"""The compiled decode step (Llama.build(..., compile=True)) against the eager path."""

import pytest
import torch

from llama import Llama
from tests.mp_worker import workload
from tests.test_distributed import assert_same_results, run_worker


@pytest.fixture(scope="module")
def eager_and_compiled(tiny_ckpt):
    build = lambda compile: Llama.build(str(tiny_ckpt), str(tiny_ckpt / "tokenizer.model"), 64, 4, dtype="float32", compile=compile)  # noqa: E731
    return build(False), build(True)


def test_compiled_matches_eager_on_ragged_batches(eager_and_compiled):
    eager, compiled = eager_and_compiled
    assert_same_results(workload(compiled), workload(eager))


def test_compiled_matches_eager_with_stop_strings(eager_and_compiled):
    eager, compiled = eager_and_compiled
    prompts = ["The quick brown fox", "Hi", "Translate English to French:", "Größe"]
    kwargs = dict(max_gen_len=20, temperature=0, logprobs=True, stop=["e"])
    results = [llama.text_completion(prompts, **kwargs) for llama in (eager, compiled)]
    for a, b in zip(*results):
        assert a["generation"] == b["generation"] and a["tokens"] == b["tokens"]
        torch.testing.assert_close(torch.tensor(a["logprobs"]), torch.tensor(b["logprobs"]), rtol=1e-4, atol=1e-4)


def test_compiled_on_two_processes_matches_one_eager(tiny_factory, tmp_path, eager_and_compiled):
    eager, _ = eager_and_compiled
    results = run_worker(2, tiny_factory(mp=2), tmp_path, "--compile", "True")
    assert_same_results(results, workload(eager))

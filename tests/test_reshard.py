import subprocess
import sys

import torch

from llama import Llama
from tests.conftest import ROOT


def reshard(src, dst, mp) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "llama.reshard", str(src), str(dst), "--mp", str(mp)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def shard_tensors(ckpt):
    return [torch.load(path, weights_only=True) for path in sorted(ckpt.glob("consolidated.*.pth"))]


def test_round_trip_1_to_4_to_2_to_1_is_bit_identical(tiny_ckpt, tmp_path):
    previous = tiny_ckpt
    for mp in (4, 2, 1):
        out = tmp_path / f"mp{mp}"
        proc = reshard(previous, out, mp)
        assert proc.returncode == 0, proc.stderr
        assert len(shard_tensors(out)) == mp and (out / "params.json").read_text() == (tiny_ckpt / "params.json").read_text()
        previous = out
    original, final = shard_tensors(tiny_ckpt)[0], shard_tensors(previous)[0]
    assert original.keys() == final.keys()
    for key in original:
        assert original[key].dtype == final[key].dtype and torch.equal(original[key], final[key]), key


def test_resharded_checkpoint_equals_natively_saved_one(tiny_factory, tmp_path):
    """Shards cut by the resharder are those the tiny writer saves for MP=2 (fairscale's split)."""
    assert reshard(tiny_factory(mp=1), tmp_path / "out", 2).returncode == 0
    for ours, native in zip(shard_tensors(tmp_path / "out"), shard_tensors(tiny_factory(mp=2))):
        assert all(torch.equal(ours[k], native[k]) for k in native)


def test_more_shards_than_kv_heads_is_refused(tiny_ckpt, tmp_path):
    proc = reshard(tiny_ckpt, tmp_path / "out", 8)
    assert proc.returncode == 1
    assert "cannot be saved as 8 shards; choose --mp from [1, 2, 4]" in proc.stderr


def test_resharded_checkpoint_generates_the_same(tiny_ckpt, tmp_path):
    assert reshard(tiny_ckpt, tmp_path / "out", 2).returncode == 0
    prompts = [[1, 40, 50, 60], [1, 7]]
    results = []
    for ckpt in (tiny_ckpt, tmp_path / "out"):
        llama = Llama.build(str(ckpt), str(tiny_ckpt / "tokenizer.model"), 32, 2, dtype="float32")
        results.append(llama.generate(prompts, 8, temperature=0, logprobs=True))
    assert results[0] == results[1]


def test_output_folder_holding_a_checkpoint_is_refused(tiny_ckpt, tmp_path):
    assert reshard(tiny_ckpt, tmp_path / "out", 4).returncode == 0
    proc = reshard(tiny_ckpt, tmp_path / "out", 2)
    assert proc.returncode == 1 and "already holds checkpoint files" in proc.stderr

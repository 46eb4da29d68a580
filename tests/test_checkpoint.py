import json
import shutil

import pytest
import torch

from llama import Llama, LlamaError, ModelArgs
from llama.checkpoint import read_slice, valid_world_sizes
from llama.tiny import TINY_PARAMS, random_weights, train_tokenizer


@pytest.fixture
def ckpt(tiny_ckpt, tmp_path):
    """A private copy of the tiny checkpoint that a test may damage."""
    return shutil.copytree(tiny_ckpt, tmp_path / "ckpt")


def build(ckpt_dir, tokenizer=None):
    return Llama.build(str(ckpt_dir), str(tokenizer or ckpt_dir / "tokenizer.model"), 32, 2, dtype="float32")


def test_builds_twice_in_one_process(ckpt):
    first, second = build(ckpt), build(ckpt)
    prompt = [[1, 50, 60]]
    assert first.generate(prompt, 5, temperature=0) == second.generate(prompt, 5, temperature=0)


def test_missing_folder(ckpt, tmp_path):
    with pytest.raises(LlamaError, match="Checkpoint folder .* not found"):
        build(tmp_path / "nope", tokenizer=ckpt / "tokenizer.model")


def test_no_shards(ckpt):
    for shard in ckpt.glob("*.pth"):
        shard.unlink()
    with pytest.raises(LlamaError, match=r"No \*.pth checkpoint files"):
        build(ckpt)


def test_params_json_missing(ckpt):
    (ckpt / "params.json").unlink()
    with pytest.raises(LlamaError, match="params.json not found"):
        build(ckpt)


def test_params_json_not_json(ckpt):
    (ckpt / "params.json").write_text("{dim: 64,")
    with pytest.raises(LlamaError, match="is not valid JSON"):
        build(ckpt)


def test_params_json_unknown_keys(ckpt):
    (ckpt / "params.json").write_text(json.dumps({**TINY_PARAMS, "dimension": 64, "flash": True}))
    with pytest.raises(LlamaError, match=r"unknown keys \['dimension', 'flash'\]"):
        build(ckpt)


def test_params_that_do_not_match_the_weights(ckpt):
    (ckpt / "params.json").write_text(json.dumps({**TINY_PARAMS, "dim": 128}))
    with pytest.raises(LlamaError, match="has shape .* but params.json describes"):
        build(ckpt)


def test_truncated_shard(ckpt):
    shard = ckpt / "consolidated.00.pth"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(LlamaError, match="truncated or corrupt.*checklist.chk"):
        build(ckpt)


def test_missing_and_unexpected_keys(ckpt):
    shard = ckpt / "consolidated.00.pth"
    state = torch.load(shard, weights_only=True)
    state["extra.weight"] = state.pop("norm.weight")
    torch.save(state, shard)
    with pytest.raises(LlamaError, match=r"missing keys \['norm.weight'\], unexpected keys \['extra.weight'\]"):
        build(ckpt)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_booby_trapped_pickle_is_not_run(ckpt, tmp_path):
    marker = tmp_path / "pwned"
    state = torch.load(ckpt / "consolidated.00.pth", weights_only=True)
    state["payload"] = _Exploit(marker)
    torch.save(state, ckpt / "consolidated.00.pth")
    with pytest.raises(LlamaError, match="not loaded because unpickling them could run code"):
        build(ckpt)
    assert not marker.exists()


def test_tokenizer_vocab_differs_from_the_checkpoint(ckpt, tmp_path):
    other = tmp_path / "other.model"
    train_tokenizer(other, vocab_size=480)
    with pytest.raises(LlamaError, match="tokenizer has 480 tokens but the checkpoint's embedding has 512 rows"):
        build(ckpt, tokenizer=other)


def test_read_slice_cuts_the_full_tensor_along_fairscale_dims():
    args = ModelArgs(**{**TINY_PARAMS, "vocab_size": 512})
    full = random_weights(args, seed=1)
    for key in ("layers.0.attention.wq.weight", "layers.0.feed_forward.w2.weight", "tok_embeddings.weight", "norm.weight"):
        shards = [{key: read_slice([full], key, r, 2, args)} for r in range(2)]
        for world in (1, 4):
            for rank in range(world):
                assert torch.equal(read_slice(shards, key, rank, world, args), read_slice([full], key, rank, world, args))
        assert torch.equal(read_slice(shards, key, 0, 1, args), full[key])


def test_valid_world_sizes_follow_the_heads():
    assert valid_world_sizes(ModelArgs(**{**TINY_PARAMS, "vocab_size": 512})) == [1, 2, 4, 8]
    assert valid_world_sizes(ModelArgs(dim=8192, n_heads=64, n_kv_heads=8, vocab_size=32000, ffn_dim_multiplier=1.3, multiple_of=4096)) == [1, 2, 4, 8, 16, 32, 64]


def test_model_and_cache_that_do_not_fit_say_what_to_lower(ckpt):
    with pytest.raises(LlamaError, match=r"needs .* GiB .* KV cache for max_batch_size=100000 x max_seq_len=4096.*Lower --max_seq_len"):
        Llama.build(str(ckpt), str(ckpt / "tokenizer.model"), 4096, 100000, dtype="float32")

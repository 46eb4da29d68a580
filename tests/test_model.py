import pytest
import torch

from llama import Llama, ModelArgs
from llama.model import apply_rope, rope_tables
from tests.reference_math import reference_logits, rotate


def build32(ckpt, max_seq_len=64, max_batch_size=4) -> Llama:
    return Llama.build(str(ckpt), str(ckpt / "tokenizer.model"), max_seq_len, max_batch_size, dtype="float32")


def full_state(ckpt) -> dict:
    return torch.load(ckpt / "consolidated.00.pth", weights_only=True)


@pytest.mark.parametrize("n_kv_heads", [None, 2, 4], ids=["mha", "gqa2", "gqa4"])
def test_forward_matches_independent_math(tiny_factory, n_kv_heads):
    ckpt = tiny_factory(n_kv_heads=n_kv_heads)
    llama = build32(ckpt)
    tokens = [1, 17, 300, 42, 99, 5, 7, 8, 250]
    logits = llama.model.forward(torch.tensor([tokens]), 0)[0]
    assert logits.dtype == torch.float32 and logits.shape == (len(tokens), llama.tokenizer.n_words)
    expected = reference_logits(full_state(ckpt), llama.model.params, tokens)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_incremental_decoding_equals_one_full_forward(llama32):
    model = llama32.model
    tokens = torch.tensor([[1, 20, 30, 40, 50, 60, 70, 80], [1, 9, 8, 7, 6, 5, 4, 3]])
    full = model.forward(tokens, 0)
    parts = [model.forward(tokens[:, :3], 0)] + [model.forward(tokens[:, i : i + 1], i) for i in range(3, 8)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)


def test_rows_at_their_own_positions_match_separate_runs(llama32):
    """A ragged batch in one forward (right-padded, per-row positions) gives each row's own logits."""
    model = llama32.model
    rows = [[1, 5, 6, 7, 8, 9], [1, 40, 41], [1, 70, 71, 72]]
    single = [model.forward(torch.tensor([r]), 0)[0, -1] for r in rows]
    padded = torch.tensor([r + [0] * (6 - len(r)) for r in rows])
    positions = torch.arange(6).expand(3, -1)
    last = torch.tensor([len(r) - 1 for r in rows])
    batched = model.forward_rows(padded, positions, kv_len=6, logits_at=last)[:, 0]
    torch.testing.assert_close(batched, torch.stack(single), rtol=1e-5, atol=1e-5)


def test_rope_rotates_interleaved_pairs_like_complex_multiplication():
    x = torch.randn(1, 12, 3, 16)
    cos, sin = rope_tables(16, 12, 10000.0)
    positions = torch.arange(12)[None]
    torch.testing.assert_close(apply_rope(x, cos[positions], sin[positions])[0], rotate(x[0], 10000.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dim, mult, hidden", [(4096, None, 11008), (5120, None, 13824), (8192, 1.3, 28672)])
def test_ffn_hidden_sizes_of_the_released_models(dim, mult, hidden):
    assert ModelArgs(dim=dim, ffn_dim_multiplier=mult, multiple_of=4096 if mult else 256).ffn_hidden_dim == hidden

"""Hugging Face format checkpoints: direct loading, conversion both ways, and the models we refuse."""

import json
import shutil

import pytest
import torch

from llama import Llama
from llama.convert import ffn_settings, hf_to_meta, hf_to_meta_rows, main, meta_to_hf_rows, open_hf_checkpoint, params_from_hf_config
from llama.errors import LlamaError
from llama.model import ModelArgs
from tests.conftest import torchrun
from tests.mp_worker import workload

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

VOCAB = 512  # the tiny tokenizer's size
SEQ = 24


def hf_model(vocab: int = VOCAB, seed: int = 0, **overrides):
    """A random LlamaForCausalLM with GQA and weights large enough that mistakes show in the logits."""
    settings = dict(
        hidden_size=64,
        intermediate_size=160,  # not Meta's sizing for dim 64: needs an ffn_dim_multiplier
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=4,
        vocab_size=vocab,
        rms_norm_eps=1e-5,
        rope_theta=20000.0,
        tie_word_embeddings=False,
    )
    config = transformers.LlamaConfig(**{**settings, **overrides})
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.1 * torch.randn_like(param))
            else:
                param.normal_(0, param.shape[-1] ** -0.5)
    return model.eval()


def save_hf(model, path, tokenizer, **kwargs):
    model.save_pretrained(path, **kwargs)
    shutil.copyfile(tokenizer, path / "tokenizer.model")
    return path


def hf_logprobs(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=tokens).logits.float(), dim=-1)


def our_logprobs(llama: Llama, tokens: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(llama.model.forward(tokens, 0), dim=-1)


def build(ckpt_dir, tokenizer=None) -> Llama:
    tokenizer = tokenizer or ckpt_dir / "tokenizer.model"
    return Llama.build(str(ckpt_dir), str(tokenizer), max_seq_len=64, max_batch_size=4, dtype="float32")


@pytest.fixture(scope="module")
def tokenizer(tiny_ckpt):
    return tiny_ckpt / "tokenizer.model"


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory, tokenizer):
    """A float32 HF model and the folder save_pretrained wrote it to (plus the tiny tokenizer)."""
    model = hf_model()
    return model, save_hf(model, tmp_path_factory.mktemp("hf"), tokenizer)


@pytest.fixture(scope="module")
def hf_bf16_sharded(tmp_path_factory, tokenizer):
    """A bf16 HF checkpoint split over several safetensors files with an index."""
    path = save_hf(hf_model(seed=1).to(torch.bfloat16), tmp_path_factory.mktemp("hf_bf16"), tokenizer, max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").is_file()
    return path


def read_safetensors_folder(path) -> dict:
    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(safetensors_torch.load_file(file))
    return state


def assert_bit_identical(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        assert torch.equal(got[key], expected[key]), key


# --- the q/k permutation and the config mapping ----------------------------------------------------


def test_row_permutation_matches_rotate_half_and_inverts():
    """Un-permuting makes HF's halves [x0..x3 | y0..y3] Meta's pairs (x0, y0, x1, y1, ...) per head."""
    heads, head_dim = 2, 8
    hf_rows = torch.arange(heads * head_dim).float().unsqueeze(1).expand(-1, 3)
    meta = hf_to_meta_rows(hf_rows, heads)
    assert meta[:8, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]
    assert meta[8:, 0].tolist() == [8, 12, 9, 13, 10, 14, 11, 15]
    assert torch.equal(meta_to_hf_rows(meta, heads), hf_rows)


@pytest.mark.parametrize(
    "dim, intermediate, expected",
    [(4096, 11008, (256, None)), (5120, 13824, (256, None)), (64, 192, (64, None)), (8192, 28672, (4096, 1.3)), (64, 160, None), (64, 7, None), (64, 1000, None)],
)
def test_ffn_settings_reproduce_intermediate_size_exactly(dim, intermediate, expected):
    multiple_of, multiplier = ffn_settings(dim, intermediate)
    assert ModelArgs(dim=dim, multiple_of=multiple_of, ffn_dim_multiplier=multiplier).ffn_hidden_dim == intermediate
    if expected:
        assert (multiple_of, multiplier) == expected


def test_config_mapping_accepts_transformers_4_and_5_styles():
    v4 = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
          "num_attention_heads": 32, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": None,
          "vocab_size": 32000, "torch_dtype": "float16"}  # fmt: skip
    params = params_from_hf_config(v4)
    assert params == {"dim": 4096, "n_layers": 32, "n_heads": 32, "n_kv_heads": 32, "multiple_of": 256, "ffn_dim_multiplier": None,
                      "norm_eps": 1e-5, "rope_theta": 10000.0, "vocab_size": 32000}  # fmt: skip
    v5 = {**v4, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}, "num_key_value_heads": 8}
    del v5["rope_theta"], v5["rope_scaling"]
    assert params_from_hf_config(v5)["rope_theta"] == 500000.0
    assert params_from_hf_config(v5)["n_kv_heads"] == 8


# --- loading and converting match transformers ------------------------------------------------------


def test_hf_folder_loads_directly_and_matches_transformers(hf_pair, tokenizer, tokens):
    model, path = hf_pair
    assert json.loads((path / "config.json").read_text())["num_key_value_heads"] == 4
    llama = build(path)
    assert llama.model.params.ffn_hidden_dim == 160 and llama.model.params.rope_theta == 20000.0
    torch.testing.assert_close(our_logprobs(llama, tokens), hf_logprobs(model, tokens), rtol=0, atol=1e-4)


def test_pytorch_model_bin_loads_like_safetensors(hf_pair, tmp_path):
    model, path = hf_pair
    shutil.copyfile(path / "config.json", tmp_path / "config.json")
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    (_, (from_bin,)), (_, (from_st,)) = open_hf_checkpoint(tmp_path), open_hf_checkpoint(path)
    assert list(from_bin) == list(from_st)
    for key in from_st:
        assert torch.equal(from_bin[key], from_st[key]), key


def test_from_hf_then_load_matches_transformers(hf_pair, tmp_path, tokens):
    model, path = hf_pair
    out = tmp_path / "meta"
    main(["from-hf", str(path), str(out), "--mp", "2"])
    assert sorted(p.name for p in out.iterdir()) == ["consolidated.00.pth", "consolidated.01.pth", "params.json", "tokenizer.model"]
    params = json.loads((out / "params.json").read_text())
    assert ModelArgs(**params).ffn_hidden_dim == 160 and params["vocab_size"] == -1
    torch.testing.assert_close(our_logprobs(build(out), tokens), hf_logprobs(model, tokens), rtol=0, atol=1e-4)


def test_to_hf_of_a_meta_checkpoint_matches_our_model(tiny_factory, tmp_path, tokens, capfd):
    meta = tiny_factory(mp=2)
    out = tmp_path / "hf"
    main(["to-hf", str(meta), str(out)])
    assert "Converting" in capfd.readouterr().err  # progress on stderr
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert config["torch_dtype"] == "bfloat16" and config["tie_word_embeddings"] is False
    assert (out / "tokenizer.model").read_bytes() == (meta / "tokenizer.model").read_bytes()
    model = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    expected = our_logprobs(build(meta), tokens)
    torch.testing.assert_close(hf_logprobs(model, tokens), expected, rtol=0, atol=1e-4)


def test_meta_to_hf_to_meta_is_bit_identical(tiny_factory, tmp_path):
    meta = tiny_factory(mp=2)
    main(["to-hf", str(meta), str(tmp_path / "hf"), "--max-shard-size", "100KB"])
    assert len(json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())["weight_map"]) == 21
    main(["from-hf", str(tmp_path / "hf"), str(tmp_path / "back"), "--mp", "2"])
    for rank in range(2):
        name = f"consolidated.{rank:02d}.pth"
        original = torch.load(meta / name, weights_only=True)
        assert_bit_identical(torch.load(tmp_path / "back" / name, weights_only=True), original)
        assert original["layers.0.attention.wq.weight"].dtype == torch.bfloat16


def test_hf_to_meta_to_hf_is_bit_identical(hf_bf16_sharded, tmp_path):
    main(["from-hf", str(hf_bf16_sharded), str(tmp_path / "meta")])
    main(["to-hf", str(tmp_path / "meta"), str(tmp_path / "hf")])
    original = read_safetensors_folder(hf_bf16_sharded)
    assert original["model.layers.0.self_attn.q_proj.weight"].dtype == torch.bfloat16
    assert_bit_identical(read_safetensors_folder(tmp_path / "hf"), original)


def test_two_process_load_of_hf_folder_matches_one_process(hf_pair, tmp_path):
    _, path = hf_pair
    out = tmp_path / "out.json"
    proc = torchrun(2, "tests/mp_worker.py", "--ckpt_dir", str(path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    got, expected = json.loads(out.read_text()), workload(build(path))
    assert got["world_size"] == 2
    for key in ("tokens", "echo_tokens", "chat_stream"):
        assert got[key] == expected[key], key
    for key in ("logprobs", "echo_logprobs"):
        for a, b in zip(got[key], expected[key]):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=1e-4, atol=1e-4)


# --- what cannot be mapped is refused with a clear error ----------------------------------------------


def variant(path, tmp_path, config_changes=None, drop=(), add=None):
    """A copy of an HF folder with config.json edited and tensors dropped or added."""
    out = tmp_path / "variant"
    shutil.copytree(path, out)
    config = json.loads((out / "config.json").read_text())
    config.update(config_changes or {})
    (out / "config.json").write_text(json.dumps(config))
    if drop or add:
        state = {k: v for k, v in safetensors_torch.load_file(out / "model.safetensors").items() if k not in drop}
        safetensors_torch.save_file({**state, **(add or {})}, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize(
    "changes, drop, add, message",
    [
        ({"tie_word_embeddings": True}, (), None, "tie_word_embeddings"),
        ({}, ("lm_head.weight",), None, "no lm_head.weight"),
        ({"attention_bias": True}, (), None, "attention_bias"),
        ({"mlp_bias": True}, (), None, "mlp_bias"),
        ({}, (), {"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, "bias tensors"),
        ({"rope_scaling": {"type": "linear", "factor": 2.0}}, (), None, "rope_scaling"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}, (), None, "rope_parameters"),
        ({"model_type": "mistral"}, (), None, "'mistral'"),
        ({"head_dim": 16}, (), None, "head_dim 16"),
        ({"hidden_act": "gelu"}, (), None, "hidden_act"),
        ({"intermediate_size": 0}, (), None, "intermediate_size"),
        ({"num_hidden_layers": 3}, (), None, "missing ['model.layers.2"),
    ],
)
def test_unmappable_checkpoints_are_refused(hf_pair, tmp_path, changes, drop, add, message):
    path = variant(hf_pair[1], tmp_path, changes, drop, add)
    with pytest.raises(LlamaError) as err:
        build(path)
    assert message in str(err.value)


def test_vocab_that_does_not_match_the_tokenizer_is_refused(tmp_path, tokenizer):
    path = save_hf(hf_model(vocab=VOCAB + 8), tmp_path / "hf", tokenizer)
    with pytest.raises(LlamaError, match="512 tokens but the checkpoint's embedding has 520 rows"):
        build(path)
    with pytest.raises(LlamaError, match="512 tokens but the checkpoint's embedding has 520 rows"):
        hf_to_meta(path, tmp_path / "meta")


def test_missing_index_file_and_nonempty_output_are_refused(hf_bf16_sharded, hf_pair, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(hf_bf16_sharded, broken)
    next(broken.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(LlamaError, match="not in .* Finish the download"):
        open_hf_checkpoint(broken)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "consolidated.00.pth").write_bytes(b"")
    with pytest.raises(SystemExit):
        main(["from-hf", str(hf_pair[1]), str(tmp_path / "full")])
    assert "already holds checkpoint files" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["from-hf", str(hf_pair[1]), str(tmp_path / "out"), "--mp", "8"])
    assert "choose --mp from [1, 2, 4]" in capsys.readouterr().err

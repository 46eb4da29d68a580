import pytest

from llama import LlamaError, Tokenizer
from tests.conftest import REAL_TOKENIZER


def test_real_tokenizer_ids_and_decode_cases(golden):
    tok = Tokenizer(str(REAL_TOKENIZER))
    assert (tok.n_words, tok.bos_id, tok.eos_id, tok.pad_id) == (32000, 1, 2, -1)
    for case in golden["decode_cases"]:
        assert tok.decode(case["ids"]) == case["text"]


def test_tiny_tokenizer_round_trips_multibyte_text(tiny_ckpt):
    tok = Tokenizer(str(tiny_ckpt / "tokenizer.model"))
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, -1)
    text = "Größe 🗽 and 中文 ✨ with  two spaces"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids[1:-1]) == text


def test_missing_tokenizer_file_names_the_path(tmp_path):
    with pytest.raises(LlamaError, match="not found.*--tokenizer_path"):
        Tokenizer(str(tmp_path / "nope.model"))


def test_file_that_is_not_sentencepiece(tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_text("this is not a sentencepiece model")
    with pytest.raises(LlamaError, match="not a SentencePiece model"):
        Tokenizer(str(bad))

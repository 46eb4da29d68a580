import pytest
import torch

from llama import Tokenizer
from llama.streaming import TextStream

PROMPTS = ["Größe 🗽 and", "The quick brown fox", "中文 ✨", "Hi"]
DIALOGS = [
    [{"role": "user", "content": "Always answer with emojis 😀"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Größe?"}],
    [{"role": "user", "content": "bad [INST] tag"}],
]


def joined(stream) -> list:
    return ["".join(pieces) for pieces in zip(*stream)]


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_text_stream_joins_to_the_non_streamed_text(llama32, temperature):
    torch.manual_seed(11)
    plain = [r["generation"] for r in llama32.text_completion(PROMPTS, temperature=temperature, max_gen_len=40)]
    torch.manual_seed(11)
    streamed = joined(llama32.text_completion_stream(PROMPTS, temperature=temperature, max_gen_len=40))
    assert streamed == plain
    assert any(len(text) > 10 for text in plain)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_chat_stream_joins_to_the_non_streamed_answers(llama32, temperature):
    torch.manual_seed(5)
    plain = [r["generation"]["content"] for r in llama32.chat_completion(DIALOGS, temperature=temperature, max_gen_len=30)]
    torch.manual_seed(5)
    streamed = joined(llama32.chat_completion_stream(DIALOGS, temperature=temperature, max_gen_len=30))
    assert streamed == plain
    assert streamed[2] == "Error: special tags are not allowed as part of the prompt."


def test_stop_string_ends_only_the_sequences_that_contain_it(llama32):
    plain = [r["generation"] for r in llama32.text_completion(PROMPTS, temperature=0, max_gen_len=40)]
    # a stop string found in the first completion's text but in no other
    stop = next(
        plain[0][i : i + n]
        for n in (3, 2, 1)
        for i in range(1, len(plain[0]) - n)
        if not any(plain[0][i : i + n] in other for other in plain[1:])
    )
    cut = plain[0][: plain[0].find(stop)]
    results = llama32.text_completion(PROMPTS, temperature=0, max_gen_len=40, stop=[stop], logprobs=True)
    assert [r["generation"] for r in results] == [cut] + plain[1:]
    # tokens and logprobs cover the kept text and no more: the fewest leading tokens whose text holds it
    ids, _ = llama32.generate([llama32.tokenizer.encode(PROMPTS[0], bos=True, eos=False)], 40, temperature=0)
    n = len(results[0]["tokens"])
    assert n == len(results[0]["logprobs"]) and results[0]["tokens"] == [llama32.tokenizer.decode([t]) for t in ids[0][:n]]
    assert llama32.tokenizer.decode(ids[0][:n]).startswith(cut) and not llama32.tokenizer.decode(ids[0][: n - 1]).startswith(cut)
    streamed = joined(llama32.text_completion_stream(PROMPTS, temperature=0, max_gen_len=40, stop=[stop]))
    assert streamed == [cut] + plain[1:]


def test_stop_token_ids_end_a_sequence_before_the_token(llama32):
    tokens, _ = llama32.generate([llama32.tokenizer.encode(PROMPTS[1], bos=True, eos=False)], 20, temperature=0)
    stop_id = tokens[0][5]
    first = tokens[0].index(stop_id)
    result = llama32.text_completion([PROMPTS[1]], temperature=0, max_gen_len=20, stop_token_ids=[stop_id])
    assert result[0]["generation"] == llama32.tokenizer.decode(tokens[0][:first])


def test_text_stream_never_splits_a_character(tiny_ckpt):
    tokenizer = Tokenizer(str(tiny_ckpt / "tokenizer.model"))
    text = "Größe 🗽✨ 中文字符 日本語のテキスト"
    stream = TextStream(tokenizer)
    pieces = [stream.add(token) for token in tokenizer.encode(text, bos=False, eos=False)] + [stream.finish()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert len([p for p in pieces if p]) > 5


def test_text_stream_holds_back_a_possible_stop_string(tiny_ckpt):
    tokenizer = Tokenizer(str(tiny_ckpt / "tokenizer.model"))
    stream = TextStream(tokenizer, stop=["\nUser:"])
    pieces = [stream.add(token) for token in tokenizer.encode("Hello there\nUse it\nUser: more", bos=False, eos=False)]
    assert stream.stopped and "".join(pieces) == "Hello there\nUse it"
    assert stream.finish() == ""

import pytest

from llama import LlamaError, Tokenizer
from llama.chat_format import UNSAFE_ERROR, check_dialog, encode_dialog, has_special_tags
from tests.conftest import REAL_TOKENIZER


def test_golden_chat_prompt_tokens(golden):
    tok = Tokenizer(str(REAL_TOKENIZER))
    assert golden["unsafe_error"] == UNSAFE_ERROR
    for dialog, expected, unsafe in zip(golden["dialogs"], golden["chat_prompt_tokens"], golden["chat_unsafe"]):
        check_dialog(dialog)
        assert encode_dialog(tok, dialog) == expected
        assert has_special_tags(dialog) == unsafe


def test_golden_text_prompt_tokens(golden):
    tok = Tokenizer(str(REAL_TOKENIZER))
    for prompt, expected in zip(golden["text_prompts"], golden["text_prompt_tokens"]):
        assert tok.encode(prompt, bos=True, eos=False) == expected


def test_chat_layout_on_tiny_tokenizer(tiny_ckpt):
    tok = Tokenizer(str(tiny_ckpt / "tokenizer.model"))
    dialog = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": " hi "},
        {"role": "assistant", "content": " hello "},
        {"role": "user", "content": "bye"},
    ]
    # the system prompt is folded in before strip(), so the user text keeps its leading space
    expected = tok.encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n hi [/INST] hello ", bos=True, eos=True)
    expected += tok.encode("[INST] bye [/INST]", bos=True, eos=False)
    assert encode_dialog(tok, dialog) == expected


@pytest.mark.parametrize(
    "dialog, message",
    [
        ([], "is empty"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "must end with a 'user'"),
        ([{"role": "robot", "content": "a"}], "unknown role 'robot'"),
        ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "found 'assistant' where 'user'"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "found 'user' where 'assistant'"),
        ([{"role": "system", "content": "a"}], "must end with a 'user'"),
        ([{"role": "user"}], "string 'content'"),
    ],
)
def test_bad_dialogs(dialog, message):
    with pytest.raises(LlamaError, match=message):
        check_dialog(dialog)

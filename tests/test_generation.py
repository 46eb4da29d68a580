import pytest
import torch

from llama import Llama, LlamaError
from llama.generation import sample_top_p
from tests.naive import naive_greedy

PROMPTS = ["The quick brown fox jumps over the lazy", "Hi", "Translate English to French: cheese =>", "Größe 🗽"]


def encode(llama: Llama, prompts):
    return [llama.tokenizer.encode(p, bos=True, eos=False) for p in prompts]


@pytest.mark.parametrize("max_gen_len", [1, 12, 95])
def test_greedy_ragged_batch_matches_one_token_at_a_time(llama32, max_gen_len):
    prompts = encode(llama32, PROMPTS)
    tokens, logprobs = llama32.generate(prompts, max_gen_len, temperature=0, logprobs=True)
    total_len = min(llama32.model.params.max_seq_len, max_gen_len + max(map(len, prompts)))
    for prompt, got, got_lp in zip(prompts, tokens, logprobs):
        expected, expected_lp = naive_greedy(llama32, prompt, max_gen_len, total_len)
        assert got == expected
        assert len(got) <= max_gen_len and len(prompt) + len(got) <= total_len
        torch.testing.assert_close(torch.tensor(got_lp), torch.tensor(expected_lp), rtol=1e-4, atol=1e-4)


def test_echo_returns_prompt_and_its_logprobs(llama32):
    prompts = encode(llama32, PROMPTS[:2])
    plain, plain_lp = llama32.generate(prompts, 6, temperature=0, logprobs=True)
    echoed, echoed_lp = llama32.generate(prompts, 6, temperature=0, logprobs=True, echo=True)
    for prompt, p, plp, e, elp in zip(prompts, plain, plain_lp, echoed, echoed_lp):
        assert e == prompt + p
        assert elp[0] == 0.0 and len(elp) == len(e)
        torch.testing.assert_close(torch.tensor(elp[len(prompt) :]), torch.tensor(plp), rtol=1e-4, atol=1e-4)
        logits = llama32.model.forward(torch.tensor([prompt]), 0)[0]
        prompt_lp = torch.log_softmax(logits[:-1], -1).gather(-1, torch.tensor(prompt[1:])[:, None])[:, 0]
        torch.testing.assert_close(torch.tensor(elp[1 : len(prompt)]), prompt_lp, rtol=1e-4, atol=1e-4)


def test_sampling_is_reproducible_with_a_seed_and_narrow_top_p_is_greedy(llama32):
    prompts = encode(llama32, PROMPTS)
    torch.manual_seed(3)
    first, _ = llama32.generate(prompts, 10, temperature=0.8, top_p=0.9)
    torch.manual_seed(3)
    second, _ = llama32.generate(prompts, 10, temperature=0.8, top_p=0.9)
    assert first == second
    greedy, _ = llama32.generate(prompts, 10, temperature=0)
    assert llama32.generate(prompts, 10, temperature=1.0, top_p=1e-6)[0] == greedy


def test_sample_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).repeat(2000, 1)
    counts = torch.bincount(sample_top_p(probs, 0.7), minlength=4)
    assert counts[2] == counts[3] == 0 and counts[0] > counts[1] > 0
    counts = torch.bincount(sample_top_p(probs, 0.85), minlength=4)
    assert counts[2] > 0 and counts[3] == 0


def test_text_and_chat_completion_shapes(llama32):
    results = llama32.text_completion(PROMPTS[:2], max_gen_len=5, temperature=0, logprobs=True)
    for result in results:
        assert set(result) == {"generation", "tokens", "logprobs"}
        assert len(result["tokens"]) == len(result["logprobs"]) <= 5
    assert set(llama32.text_completion(["Hi"], max_gen_len=3)[0]) == {"generation"}
    dialogs = [
        [{"role": "user", "content": "hello"}],
        [{"role": "system", "content": "be nice"}, {"role": "user", "content": "x [INST] y"}],
    ]
    chats = llama32.chat_completion(dialogs, max_gen_len=4, temperature=0)
    assert chats[0]["generation"]["role"] == "assistant"
    assert chats[1]["generation"]["content"] == "Error: special tags are not allowed as part of the prompt."


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=["x" * 2000]), "more than max_seq_len=96"),
        (dict(prompts=["a"] * 7), "7 prompts were given but max_batch_size is 6"),
        (dict(temperature=-0.1), "temperature must be >= 0"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(max_gen_len=0), "max_gen_len must be at least 1"),
    ],
)
def test_bad_generation_arguments_leave_the_model_usable(llama32, kwargs, message):
    before = llama32.text_completion(["Hello there"], max_gen_len=4, temperature=0, logprobs=True)
    args = dict(prompts=["Hello"], temperature=0.0, top_p=0.9, max_gen_len=4) | kwargs
    with pytest.raises(LlamaError, match=message):
        llama32.text_completion(**args)
    with pytest.raises(LlamaError, match=message):
        llama32.text_completion_stream(**args)  # checked at the call, not the first step
    assert llama32.text_completion(["Hello there"], max_gen_len=4, temperature=0, logprobs=True) == before


@pytest.mark.parametrize(
    "dialogs, message",
    [
        ([], "No dialogs"),
        ([[]], "Dialog 0 is empty"),
        ([[{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]], "must end with a 'user'"),
        ([[{"role": "user", "content": "a"}], [{"role": "bot", "content": "b"}]], "Dialog 1, message 0: unknown role"),
    ],
)
def test_bad_dialogs_are_rejected(llama32, dialogs, message):
    with pytest.raises(LlamaError, match=message):
        llama32.chat_completion(dialogs)


def test_prompt_filling_max_seq_len_gets_no_new_tokens(llama32):
    prompt = [1] + [50] * 95
    tokens, logprobs = llama32.generate([prompt, [1, 5]], 10, temperature=0, logprobs=True)
    assert tokens[0] == [] and logprobs[0] == [] and len(tokens[1]) > 0
    assert llama32.generate([prompt, prompt], 10, logprobs=True) == ([[], []], [[], []])
    echoed, echoed_lp = llama32.generate([prompt], 10, logprobs=True, echo=True)
    assert echoed == [prompt] and len(echoed_lp[0]) == len(prompt)


def test_forward_past_the_cache_is_a_clear_error(llama32):
    with pytest.raises(LlamaError, match="does not fit the KV cache"):
        llama32.model.forward(torch.ones(1, 10, dtype=torch.long), 90)

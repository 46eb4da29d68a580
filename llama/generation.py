"""The `Llama` class: building a model from a checkpoint, and batched generation, sampling,
text and chat completion (plain and streaming) on top of it."""

import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, TypedDict

import torch
import torch.nn.functional as F
from fairscale.nn.model_parallel.initialize import get_model_parallel_rank, get_model_parallel_world_size

from .chat_format import UNSAFE_ERROR, Dialog, Message, check_dialog, encode_dialog, has_special_tags
from .checkpoint import load_model
from .distributed import agree_on_errors, is_main_rank, pick_device, pick_dtype, setup_model_parallel, silence_other_ranks
from .errors import LlamaError
from .model import Transformer
from .streaming import TextStream
from .tokenizer import Tokenizer


class CompletionPrediction(TypedDict, total=False):
    generation: str
    tokens: List[str]  # not required
    logprobs: List[float]  # not required


class ChatPrediction(TypedDict, total=False):
    generation: Message
    tokens: List[str]  # not required
    logprobs: List[float]  # not required


def sample_top_p(probs: torch.Tensor, p: float) -> torch.Tensor:
    """Sample one token per row from the smallest set of most likely tokens whose mass reaches p."""
    probs_sort, probs_idx = torch.sort(probs, dim=-1, descending=True)
    mass_before = torch.cumsum(probs_sort, dim=-1) - probs_sort
    probs_sort[mass_before > p] = 0.0
    choice = torch.multinomial(probs_sort / probs_sort.sum(dim=-1, keepdim=True), num_samples=1)
    return torch.gather(probs_idx, -1, choice).squeeze(-1)


class Llama:
    def __init__(self, model: Transformer, tokenizer: Tokenizer, compile: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self._compiled_step = torch.compile(model.forward_rows, dynamic=False, **_compile_options(model)) if compile else None
        self._compiled_batch_sizes: set = set()

    @staticmethod
    def build(
        ckpt_dir: str,
        tokenizer_path: str,
        max_seq_len: int,
        max_batch_size: int,
        model_parallel_size: Optional[int] = None,
        seed: int = 1,
        *,
        device: Optional[str] = None,
        dtype: Optional[str | torch.dtype] = None,
        compile: bool = False,
    ) -> "Llama":
        """Load a checkpoint (saved for any model-parallel size) onto this process's share of the
        model-parallel group. Runs under torchrun, or as a plain one-process program.

        device: "cuda", "cuda:N" or "cpu" (default: CUDA when available). dtype: "bfloat16", "float16" or
        "float32" (default: bfloat16, or float16 on GPUs without it). compile: compile the decode step."""
        start = time.perf_counter()
        if max_seq_len < 1 or max_batch_size < 1:
            raise LlamaError(f"max_seq_len ({max_seq_len}) and max_batch_size ({max_batch_size}) must be at least 1.")
        torch_device = pick_device(device)
        torch_dtype = pick_dtype(dtype, torch_device)
        setup_model_parallel(model_parallel_size, torch_device)
        silence_other_ranks()
        torch.manual_seed(seed)

        error = None
        try:
            tokenizer = Tokenizer(tokenizer_path)
            model = load_model(
                Path(ckpt_dir),
                max_seq_len,
                max_batch_size,
                tokenizer.n_words,
                get_model_parallel_rank(),
                get_model_parallel_world_size(),
                torch_device,
                torch_dtype,
                verbose=is_main_rank(),
            )
        except Exception as err:  # every rank must hear of it, or the others hang in the next collective
            error = err
        agree_on_errors(error, torch_device)
        if is_main_rank():
            print(f"Loaded in {time.perf_counter() - start:.2f} seconds", file=sys.stderr)
        return Llama(model, tokenizer, compile=compile)

    def _check_batch(self, prompt_tokens: Sequence[Sequence[int]], max_gen_len: int, temperature: float, top_p: float) -> None:
        params = self.model.params
        if not prompt_tokens:
            raise LlamaError("No prompts were given.")
        if len(prompt_tokens) > params.max_batch_size:
            raise LlamaError(
                f"{len(prompt_tokens)} prompts were given but max_batch_size is {params.max_batch_size}. "
                "Pass fewer prompts per call, or build with a larger max_batch_size."
            )
        for i, tokens in enumerate(prompt_tokens):
            if not tokens:
                raise LlamaError(f"Prompt {i} is empty; give at least one token (e.g. BOS).")
            if len(tokens) > params.max_seq_len:
                raise LlamaError(
                    f"Prompt {i} is {len(tokens)} tokens long, more than max_seq_len={params.max_seq_len}. "
                    "Shorten it, or build with a larger max_seq_len."
                )
            if min(tokens) < 0 or max(tokens) >= params.vocab_size:
                raise LlamaError(f"Prompt {i} holds token ids outside the vocabulary [0, {params.vocab_size}).")
        if temperature < 0:
            raise LlamaError(f"temperature must be >= 0 (0 is greedy); got {temperature}.")
        if not 0 < top_p <= 1:
            raise LlamaError(f"top_p must be in (0, 1]; got {top_p}.")
        if max_gen_len < 1:
            raise LlamaError(f"max_gen_len must be at least 1; got {max_gen_len}.")

    def _sample(self, logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
        if temperature > 0:
            return sample_top_p(torch.softmax(logits / temperature, dim=-1), top_p)
        return torch.argmax(logits, dim=-1)

    def _budgets(self, prompt_tokens: Sequence[Sequence[int]], max_gen_len: int) -> List[int]:
        """How many tokens each prompt may gain: at most max_gen_len, and the batch shares one limit of
        min(max_seq_len, longest prompt + max_gen_len) positions, as in the reference code."""
        total_len = min(self.model.params.max_seq_len, max_gen_len + max(len(t) for t in prompt_tokens))
        return [min(max_gen_len, total_len - len(t)) for t in prompt_tokens]

    def _steps(
        self,
        prompt_tokens: Sequence[Sequence[int]],
        budgets: List[int],
        temperature: float,
        top_p: float,
        logprobs: bool,
        echo: bool,
        stop_ids: Sequence[int],
    ) -> Iterator[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
        """The generation core. It prefills every prompt in one forward, then decodes one token per
        step for the whole batch, each row at its own position. It first yields the prompts' logprobs
        (with `logprobs and echo`: [B, longest prompt], the first column 0), then each step's
        (tokens [B], logprobs [B] or None), all on the device. It ends once every row has used its
        budget or produced a stop id. That check reads the previous step's flag, so that the host never
        waits for the step in flight, and every rank stops at the same step."""
        model = self.model
        device = model.norm.weight.device
        bsz, lengths = len(prompt_tokens), [len(t) for t in prompt_tokens]
        max_prompt = max(lengths)

        tokens = torch.zeros((bsz, max_prompt), dtype=torch.long)
        for i, t in enumerate(prompt_tokens):
            tokens[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        tokens = tokens.to(device)
        positions = torch.arange(max_prompt, device=device).expand(bsz, -1)
        last = torch.tensor(lengths, device=device) - 1
        if logprobs and echo:
            logits = model.forward_rows(tokens, positions, kv_len=max_prompt)
            prompt_lp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
            yield torch.cat([torch.zeros_like(prompt_lp[:, :1]), prompt_lp], dim=1)
            logits = logits[torch.arange(bsz, device=device), last]
        else:
            yield None
            logits = model.forward_rows(tokens, positions, kv_len=max_prompt, logits_at=last)[:, 0]

        budgets_t = torch.tensor(budgets, device=device)
        stop_ids_t = torch.tensor(list(stop_ids), device=device)
        ended = torch.zeros(bsz, dtype=torch.bool, device=device)
        all_ended = torch.zeros((), dtype=torch.bool, pin_memory=device.type == "cuda")
        copied = torch.cuda.Event() if device.type == "cuda" else None
        positions = last.unsqueeze(1)
        for step in range(max(budgets)):
            next_tokens = self._sample(logits, temperature, top_p)
            token_lp = F.log_softmax(logits, dim=-1).gather(-1, next_tokens[:, None]).squeeze(-1) if logprobs else None
            yield next_tokens, token_lp
            if step + 1 == max(budgets):
                return
            if step > 0:  # the previous step's flag: its copy is done by now, or nearly
                if copied is not None:
                    copied.synchronize()
                if bool(all_ended):
                    return
            ended |= torch.isin(next_tokens, stop_ids_t) | (budgets_t <= step + 1)
            all_ended.copy_(ended.all(), non_blocking=True)
            if copied is not None:
                copied.record()
            positions = (positions + 1).clamp(max=model.params.max_seq_len - 1)
            logits = self._decode(next_tokens.unsqueeze(1), positions, kv_len=max_prompt + step + 1)

    def _decode(self, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
        """One decode step's logits [B, vocab]. Compiled, it keeps shapes static so that it compiles
        once per batch bucket: it attends over the whole cache, and the batch is padded to a power of
        two (rows past the batch write only cache rows it does not use)."""
        max_seq_len = self.model.params.max_seq_len
        if self._compiled_step is None:
            return self.model.forward_rows(tokens, positions, kv_len=min(kv_len, max_seq_len))[:, 0]
        bsz = tokens.shape[0]
        bucket = min(self.model.params.max_batch_size, 1 << (bsz - 1).bit_length())
        start = time.perf_counter()
        padding = (0, 0, 0, bucket - bsz)
        logits = self._compiled_step(F.pad(tokens, padding), F.pad(positions, padding), max_seq_len)[:bsz, 0]
        if bucket not in self._compiled_batch_sizes:
            self._compiled_batch_sizes.add(bucket)
            if is_main_rank():
                print(f"Compiled the decode step for batch size {bucket} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        return logits

    @torch.inference_mode()
    def generate(
        self,
        prompt_tokens: List[List[int]],
        max_gen_len: int,
        temperature: float = 0.6,
        top_p: float = 0.9,
        logprobs: bool = False,
        echo: bool = False,
    ) -> Tuple[List[List[int]], Optional[List[List[float]]]]:
        """Continue each prompt by at most `max_gen_len` tokens (within max_seq_len), each sequence cut
        at its first EOS. Returns the new tokens (with the prompt first if `echo`) and, if `logprobs`,
        the log-probability of each returned token under the untempered distribution."""
        self._check_batch(prompt_tokens, max_gen_len, temperature, top_p)
        budgets = self._budgets(prompt_tokens, max_gen_len)
        steps = self._steps(prompt_tokens, budgets, temperature, top_p, logprobs, echo, [self.tokenizer.eos_id])
        prompt_lp = next(steps)
        generated = list(steps)
        if generated:
            new_tokens = torch.stack([t for t, _ in generated], dim=1).tolist()
            new_lp = torch.stack([lp for _, lp in generated], dim=1).tolist() if logprobs else None
        else:  # every prompt already fills max_seq_len
            new_tokens = new_lp = [[] for _ in prompt_tokens]
        out_tokens, out_lp = [], []
        for i, (prompt, budget) in enumerate(zip(prompt_tokens, budgets)):
            toks = new_tokens[i][:budget]
            n = toks.index(self.tokenizer.eos_id) if self.tokenizer.eos_id in toks else len(toks)
            out_tokens.append((list(prompt) if echo else []) + toks[:n])
            if logprobs:
                out_lp.append((prompt_lp[i, : len(prompt)].tolist() if echo else []) + new_lp[i][:n])
        return out_tokens, (out_lp if logprobs else None)

    def _stream(
        self,
        prompt_tokens: List[List[int]],
        max_gen_len: int,
        temperature: float,
        top_p: float,
        logprobs: bool,
        stop: Sequence[str],
        stop_token_ids: Sequence[int],
        rows: List["_Row"],
    ) -> Iterator[List[str]]:
        """Generation that yields, each step, the text each sequence gained. It fills `rows` with each
        sequence's tokens, logprobs and text, each cut at its first stop token or stop string. The
        arguments are checked at the call, not at the first step."""
        self._check_batch(prompt_tokens, max_gen_len, temperature, top_p)
        budgets = self._budgets(prompt_tokens, max_gen_len)
        stop_ids = {self.tokenizer.eos_id, *stop_token_ids}
        rows[:] = [_Row(TextStream(self.tokenizer, stop), budget) for budget in budgets]
        steps = self._steps(prompt_tokens, budgets, temperature, top_p, logprobs, False, sorted(stop_ids))
        return self._stream_pieces(steps, rows, logprobs, stop_ids)

    @torch.inference_mode()
    def _stream_pieces(
        self,
        steps: Iterator[Tuple[torch.Tensor, Optional[torch.Tensor]]],
        rows: List["_Row"],
        logprobs: bool,
        stop_ids: set,
    ) -> Iterator[List[str]]:
        next(steps)
        pieces = [""] * len(rows)
        for tokens, lps in steps:
            tokens = tokens.tolist()
            lps = lps.tolist() if logprobs else [0.0] * len(tokens)
            pieces = [row.add(token, lp, stop_ids) for row, token, lp in zip(rows, tokens, lps)]
            if all(row.done for row in rows):
                break
            yield pieces
        yield [piece + row.text.finish() for row, piece in zip(rows, pieces)]

    def generate_stream(
        self,
        prompt_tokens: List[List[int]],
        max_gen_len: int,
        temperature: float = 0.6,
        top_p: float = 0.9,
        stop: Optional[List[str]] = None,
        stop_token_ids: Optional[List[int]] = None,
    ) -> Iterator[List[str]]:
        """Like `generate`, but yields after each step the text each sequence gained (often "").
        Joined, a sequence's pieces are its full decoded continuation, cut before the first stop
        string or stop token. Every rank yields the same pieces; stdout of ranks > 0 is silenced."""
        return self._stream(prompt_tokens, max_gen_len, temperature, top_p, False, stop or (), stop_token_ids or (), [])

    def _max_gen_len(self, max_gen_len: Optional[int]) -> int:
        return self.model.params.max_seq_len - 1 if max_gen_len is None else max_gen_len

    def _complete(
        self,
        prompt_tokens: List[List[int]],
        temperature: float,
        top_p: float,
        max_gen_len: Optional[int],
        logprobs: bool,
        echo: bool,
        stop: Optional[List[str]],
        stop_token_ids: Optional[List[int]],
    ) -> List[Tuple[str, List[int], List[float]]]:
        """Text, tokens and logprobs (empty unless asked for) of each completion."""
        max_gen_len = self._max_gen_len(max_gen_len)
        if stop or stop_token_ids:
            if echo:
                raise LlamaError("echo=True cannot be combined with stop strings or stop token ids.")
            rows: List[_Row] = []
            for _ in self._stream(prompt_tokens, max_gen_len, temperature, top_p, logprobs, stop or (), stop_token_ids or (), rows):
                pass
            return [(row.text.text, row.text.tokens, row.logprobs) for row in rows]
        tokens, lps = self.generate(prompt_tokens, max_gen_len, temperature, top_p, logprobs, echo)
        return [(self.tokenizer.decode(t), t, lps[i] if lps else []) for i, t in enumerate(tokens)]

    def _with_tokens(self, prediction: dict, tokens: List[int], logprobs: List[float]) -> dict:
        prediction["tokens"] = [self.tokenizer.decode([t]) for t in tokens]
        prediction["logprobs"] = logprobs
        return prediction

    def text_completion(
        self,
        prompts: List[str],
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_gen_len: Optional[int] = None,
        logprobs: bool = False,
        echo: bool = False,
        stop: Optional[List[str]] = None,
        stop_token_ids: Optional[List[int]] = None,
    ) -> List[CompletionPrediction]:
        """Continue each prompt (BOS is added). max_gen_len=None allows up to max_seq_len - 1 tokens.
        A completion ends at EOS, at any of `stop_token_ids`, or before the first of the `stop` strings."""
        prompt_tokens = [self.tokenizer.encode(x, bos=True, eos=False) for x in prompts]
        results = self._complete(prompt_tokens, temperature, top_p, max_gen_len, logprobs, echo, stop, stop_token_ids)
        if logprobs:
            return [self._with_tokens({"generation": text}, t, lp) for text, t, lp in results]
        return [{"generation": text} for text, _, _ in results]

    def text_completion_stream(
        self,
        prompts: List[str],
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_gen_len: Optional[int] = None,
        stop: Optional[List[str]] = None,
        stop_token_ids: Optional[List[int]] = None,
    ) -> Iterator[List[str]]:
        """`text_completion` as a stream: yields after each step the text each completion gained."""
        prompt_tokens = [self.tokenizer.encode(x, bos=True, eos=False) for x in prompts]
        return self.generate_stream(prompt_tokens, self._max_gen_len(max_gen_len), temperature, top_p, stop, stop_token_ids)

    def _chat_prompts(self, dialogs: List[Dialog]) -> Tuple[List[List[int]], List[int]]:
        """Prompt tokens of the dialogs that may reach the model, and their indices; the others carry
        the chat format's special tags."""
        for i, dialog in enumerate(dialogs):
            check_dialog(dialog, i)
        safe = [i for i, dialog in enumerate(dialogs) if not has_special_tags(dialog)]
        return [encode_dialog(self.tokenizer, dialogs[i]) for i in safe], safe

    def chat_completion(
        self,
        dialogs: List[Dialog],
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_gen_len: Optional[int] = None,
        logprobs: bool = False,
        stop: Optional[List[str]] = None,
        stop_token_ids: Optional[List[int]] = None,
    ) -> List[ChatPrediction]:
        """The assistant's next message for each dialog. A dialog whose messages contain the chat
        format's tags ([INST], <<SYS>>, ...) is not run; its answer is an error message."""
        if not dialogs:
            raise LlamaError("No dialogs were given.")
        prompt_tokens, safe = self._chat_prompts(dialogs)
        results = [(UNSAFE_ERROR, [], [])] * len(dialogs)
        if prompt_tokens:
            done = self._complete(prompt_tokens, temperature, top_p, max_gen_len, logprobs, False, stop, stop_token_ids)
            for i, result in zip(safe, done):
                results[i] = result
        predictions = [{"generation": {"role": "assistant", "content": text}} for text, _, _ in results]
        if logprobs:
            return [self._with_tokens(p, t, lp) for p, (_, t, lp) in zip(predictions, results)]
        return predictions

    def chat_completion_stream(
        self,
        dialogs: List[Dialog],
        temperature: float = 0.6,
        top_p: float = 0.9,
        max_gen_len: Optional[int] = None,
        stop: Optional[List[str]] = None,
        stop_token_ids: Optional[List[int]] = None,
    ) -> Iterator[List[str]]:
        """`chat_completion` as a stream: yields after each step the text each answer gained."""
        if not dialogs:
            raise LlamaError("No dialogs were given.")
        prompt_tokens, safe = self._chat_prompts(dialogs)
        first = [UNSAFE_ERROR if i not in safe else "" for i in range(len(dialogs))]
        if not prompt_tokens:
            return iter([first])
        stream = self.generate_stream(prompt_tokens, self._max_gen_len(max_gen_len), temperature, top_p, stop, stop_token_ids)
        return _spread(stream, first, safe)


def _spread(stream: Iterator[List[str]], first: List[str], safe: List[int]) -> Iterator[List[str]]:
    """A stream over the safe dialogs, widened to all of them; the others' error message comes first."""
    for pieces in stream:
        out, first = first, [""] * len(first)
        for i, piece in zip(safe, pieces):
            out[i] = piece
        yield out


class _Row:
    """One sequence of a streamed batch: its text so far, its logprobs, and whether it has ended."""

    def __init__(self, text: TextStream, budget: int):
        self.text, self.budget = text, budget
        self.logprobs: List[float] = []
        self.done = budget == 0

    def add(self, token: int, logprob: float, stop_ids: set) -> str:
        """Take the sequence's next token; return the text it makes final."""
        if self.done:
            return ""
        if token in stop_ids:
            self.done = True
            return ""
        self.logprobs.append(logprob)
        piece = self.text.add(token)
        if self.text.stopped:  # the text may have dropped tokens past the stop string's start
            del self.logprobs[len(self.text.tokens) :]
        self.done = self.text.stopped or len(self.text.tokens) >= self.budget
        return piece


def _compile_options(model: Transformer) -> dict:
    """torch.compile settings for the decode step: CUDA graphs on GPU, frozen weights on CPU."""
    if model.norm.weight.device.type == "cuda":
        return {"mode": "reduce-overhead"}
    return {"options": {"freezing": True}}

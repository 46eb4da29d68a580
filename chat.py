"""Talk to a Llama 2 chat model in the terminal; answers stream as they are generated.

    torchrun --nproc_per_node 1 chat.py --ckpt_dir llama-2-7b-chat/ --tokenizer_path tokenizer.model [--system "..."]

Type a message and press Enter. /reset clears the history, /exit or Ctrl-D leaves. With one process,
Ctrl-C stops the current answer and keeps the session (under torchrun with several processes, Ctrl-C
ends the run, as torchrun stops its workers). Rank 0 reads the input and shares it with the other ranks.
When the history outgrows max_seq_len, the oldest turns are dropped (the system prompt is kept).
"""

import sys
from typing import Optional

import torch.distributed as dist

from llama import Dialog, Llama, LlamaError
from llama.chat_format import UNSAFE_ERROR, fit_dialog, has_special_tags
from llama.cli import run
from llama.distributed import is_main_rank


def read_line() -> Optional[str]:
    """The user's next line, read on rank 0 and broadcast to every rank; None at end of input."""
    line = None
    if is_main_rank():
        try:
            line = input("\nUser: " if sys.stdin.isatty() else "")
        except EOFError:
            pass
        except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh prompt
            line = ""
    shared = [line]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def answer(generator: Llama, dialog: Dialog, temperature: float, top_p: float, max_gen_len: Optional[int]) -> str:
    """Stream the assistant's answer to stdout and return it (as far as it got, if interrupted)."""
    print("Assistant: ", end="", flush=True)
    text = ""
    try:
        for pieces in generator.chat_completion_stream([dialog], temperature, top_p, max_gen_len):
            print(pieces[0], end="", flush=True)
            text += pieces[0]
    except KeyboardInterrupt:
        print(" [stopped]", end="")
    print(flush=True)
    return text


def main(
    ckpt_dir: str,
    tokenizer_path: str,
    temperature: float = 0.6,
    top_p: float = 0.9,
    max_seq_len: int = 512,
    max_batch_size: int = 1,
    max_gen_len: Optional[int] = None,
    device: Optional[str] = None,
    dtype: Optional[str] = None,
    compile: bool = False,
    system: Optional[str] = None,
):
    generator = Llama.build(ckpt_dir, tokenizer_path, max_seq_len, max_batch_size, device=device, dtype=dtype, compile=compile)
    intro = [{"role": "system", "content": system}] if system else []
    history: Dialog = []
    # Leave room for an answer: max_gen_len tokens, or a quarter of the context when it is not set.
    max_prompt = max_seq_len - (max_gen_len or max_seq_len // 4)
    print("Chat with the model. /reset clears the history, /exit or Ctrl-D leaves.", flush=True)
    while (line := read_line()) is not None:
        line = line.strip()
        if line == "/exit":
            break
        if line == "/reset":
            history = []
            print("(history cleared)", flush=True)
            continue
        if not line:
            continue
        message = {"role": "user", "content": line}
        if has_special_tags([message]):
            print(UNSAFE_ERROR, flush=True)
            continue
        dialog, dropped = fit_dialog(generator.tokenizer, intro + history + [message], max_prompt)
        if dropped:
            print(f"(history too long for max_seq_len={max_seq_len}: dropped the oldest {dropped} turn(s))", flush=True)
        try:
            reply = answer(generator, dialog, temperature, top_p, max_gen_len)
        except LlamaError as err:  # e.g. a single message longer than max_seq_len
            print(f"\nError: {err}", flush=True)
            continue
        history = dialog[len(intro) :] + [{"role": "assistant", "content": reply}]
    print("Bye.", flush=True)


if __name__ == "__main__":
    run(main)

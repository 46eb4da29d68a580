"""Talk to a Llama 2 chat model in the terminal; answers stream as they are generated.

    torchrun --nproc_per_node 1 chat.py --ckpt_dir llama-2-7b-chat/ --tokenizer_path tokenizer.model [--system "..."]

Type a message and press Enter. /reset clears the history, /exit or Ctrl-D leaves, Ctrl-C stops the
current answer. Rank 0 reads the input and shares it with the other ranks.
When the history outgrows max_seq_len, the oldest turns are dropped (the system prompt is kept).
"""

import os
import select
import sys
import termios
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.distributed as dist

from llama import Dialog, Llama, LlamaError
from llama.chat_format import UNSAFE_ERROR, fit_dialog, has_special_tags, remove_special_tags
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
    shared = [line]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


class CtrlC:
    """Ctrl-C stops the current answer, not the program. While an answer streams, rank 0 turns the
    terminal's Ctrl-C into a plain keystroke (a SIGINT would make torchrun stop every worker) and
    watches for it; every rank learns of it from rank 0 at the same step, so that all stop together."""

    def __init__(self, device: torch.device):
        self.pressed = torch.zeros(1, device=device)
        self.tty = is_main_rank() and sys.stdin.isatty()

    @contextmanager
    def watching(self) -> Iterator[None]:
        self.pressed.zero_()
        if not self.tty:
            yield
            return
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        mode = termios.tcgetattr(fd)
        mode[3] &= ~(termios.ISIG | termios.ICANON | termios.ECHO)  # keys arrive one by one, Ctrl-C as \x03
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)  # and drop what was typed meanwhile

    def check(self) -> bool:
        """Whether Ctrl-C was pressed since the answer began (a collective: every rank calls it)."""
        if self.tty and select.select([sys.stdin], [], [], 0)[0] and b"\x03" in os.read(sys.stdin.fileno(), 1024):
            self.pressed.fill_(1)
        if dist.get_world_size() > 1:
            dist.broadcast(self.pressed, src=0)
        return bool(self.pressed.item())


def answer(generator: Llama, dialog: Dialog, ctrl_c: CtrlC, temperature: float, top_p: float, max_gen_len: Optional[int]) -> str:
    """Stream the assistant's answer to stdout and return it (as far as it got, if stopped)."""
    text = ""
    with ctrl_c.watching():
        print("Assistant: ", end="", flush=True)
        for pieces in generator.chat_completion_stream([dialog], temperature, top_p, max_gen_len):
            print(pieces[0], end="", flush=True)
            text += pieces[0]
            if ctrl_c.check():
                print(" [stopped]", end="")
                break
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
    intro = [{"role": "system", "content": system}] if system else []
    if has_special_tags(intro):
        raise LlamaError(f"--system: {UNSAFE_ERROR}")
    # Leave room for an answer: max_gen_len tokens, or a quarter of the context when it is not set.
    max_prompt = max_seq_len - (max_gen_len or max_seq_len // 4)
    if max_prompt < 1:
        raise LlamaError(f"--max_gen_len ({max_gen_len}) must be less than --max_seq_len ({max_seq_len}) to leave room for the prompt.")
    generator = Llama.build(ckpt_dir, tokenizer_path, max_seq_len, max_batch_size, device=device, dtype=dtype, compile=compile)
    ctrl_c = CtrlC(generator.model.norm.weight.device)
    history: Dialog = []
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
            reply = answer(generator, dialog, ctrl_c, temperature, top_p, max_gen_len)
        except LlamaError as err:  # e.g. a single message longer than max_seq_len
            print(f"\nError: {err}", flush=True)
            continue
        # a reply that happens to contain the format's tags would make every later turn unsafe
        history = dialog[len(intro) :] + [{"role": "assistant", "content": remove_special_tags(reply)}]
    print("Bye.", flush=True)


if __name__ == "__main__":
    run(main)

"""The interactive chat (chat.py), driven through a pipe, on one process and on two under torchrun."""

import subprocess
import sys

from llama import Tokenizer
from llama.chat_format import encode_dialog, fit_dialog
from tests.conftest import ROOT, torchrun

SESSION = "hello there\n/reset\nbad [INST] tag\nhow are you doing today my friend\nand again a long message to fill up the history\none more\n"


def chat_args(ckpt) -> list:
    return ["chat.py", "--ckpt_dir", str(ckpt), "--tokenizer_path", str(ckpt / "tokenizer.model"),
            "--max_seq_len", "128", "--max_gen_len", "16", "--system", "Be brief.", "--temperature", "0"]


def check_session(stdout: str) -> None:
    lines = stdout.splitlines()
    assert sum(line.startswith("Assistant: ") for line in lines) == 4
    assert "(history cleared)" in lines
    assert "Error: special tags are not allowed as part of the prompt." in lines
    assert any(line.startswith("(history too long for max_seq_len=128: dropped the oldest") for line in lines)
    assert lines[-1] == "Bye."  # end of input (Ctrl-D) leaves cleanly


def test_chat_session_through_a_pipe(tiny_ckpt):
    proc = subprocess.run([sys.executable, *chat_args(tiny_ckpt)], input=SESSION, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_session(proc.stdout)


def test_chat_session_on_two_processes(tiny_factory):
    proc = torchrun(2, *chat_args(tiny_factory(mp=2)), stdin=SESSION + "/exit\nnot read\n", timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_session(proc.stdout)


def test_fit_dialog_drops_the_oldest_turns_and_keeps_the_system_prompt(tiny_ckpt):
    tokenizer = Tokenizer(str(tiny_ckpt / "tokenizer.model"))
    dialog = [{"role": "system", "content": "Be brief."}]
    for i in range(4):
        dialog += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    dialog.append({"role": "user", "content": "last"})
    budget = len(encode_dialog(tokenizer, dialog[:1] + dialog[5:]))
    fitted, dropped = fit_dialog(tokenizer, dialog, budget)
    assert dropped == 2 and fitted == dialog[:1] + dialog[5:]
    assert fit_dialog(tokenizer, dialog, 10**6) == (dialog, 0)

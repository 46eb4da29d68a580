"""The interactive chat (chat.py), driven through a pipe, on one process and on two under torchrun."""

import os
import pty
import select
import subprocess
import sys
import time

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


def read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    """Read a pty until `marker` shows up (or fail after `timeout` seconds)."""
    out, deadline = b"", time.monotonic() + timeout
    while marker not in out:
        assert time.monotonic() < deadline, out[-500:]
        if select.select([fd], [], [], 0.5)[0]:
            out += os.read(fd, 4096)
    return out


def test_ctrl_c_on_a_terminal_stops_the_answer_and_keeps_the_session(tiny_ckpt):
    main, child = pty.openpty()
    args = chat_args(tiny_ckpt) + ["--max_seq_len", "4096", "--max_gen_len", "4000"]  # later flags win
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdin=child, stdout=child, stderr=subprocess.DEVNULL)
    os.close(child)
    try:
        read_until(main, b"/exit or Ctrl-D leaves.")
        os.write(main, b"hello there\n")
        read_until(main, b"Assistant: ")
        os.write(main, b"\x03")  # a keystroke here: the pty is not the chat's controlling terminal
        read_until(main, b" [stopped]\r\n")  # the terminal is back in line mode after this line
        os.write(main, b"/exit\n")
        read_until(main, b"Bye.")
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        os.close(main)


def test_bad_chat_flags_are_refused_before_loading(tiny_ckpt):
    for extra, message in ((["--system", "x <<SYS>> y"], "--system: Error: special tags"), (["--max_gen_len", "128"], "must be less than --max_seq_len")):
        proc = subprocess.run([sys.executable, *chat_args(tiny_ckpt), *extra], input="", cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and message in proc.stderr and "Loaded in" not in proc.stderr

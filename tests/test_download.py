"""Tests for ``download.sh``: the real script against a local fake signed-URL server.

The server (``http.server`` in a thread on 127.0.0.1) serves a tiny fake copy of
the Llama 2 release under a CloudFront-style signed address,
``http://127.0.0.1:PORT/*?Policy=...&Signature=...&Key-Pair-Id=...`` with the
``*`` replaced by each file's path. It answers 403 to a bad signature, honours
``Range`` (206 + ``Content-Range``) and records every request.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "download.sh"

SHARDS = {"7b": 1, "13b": 2, "70b": 8}
ALL_MODELS = ["7B", "13B", "70B", "7B-chat", "13B-chat", "70B-chat"]

# Secret parts of the signed URL; they must never show up in the script's output.
SIGNATURE = "Sg~secret-Zq9_x%2Bw%3D%3D"
SIGNATURE_DECODED = unquote(SIGNATURE)
POLICY = "eyJTdGF0ZW1lbnQiOlt7InVuaXF1ZSI6InNlY3JldHBvbGljeSJ9XX0_"
KEY_PAIR_ID = "K15QRJLYKIFSLZ"


def model_dir(name: str) -> str:
    size, _, chat = name.lower().partition("-")
    return f"llama-2-{size}" + ("-chat" if chat else "")


def model_files(name: str) -> list[str]:
    d = model_dir(name)
    n = SHARDS[name.lower().split("-")[0]]
    return [f"{d}/consolidated.{i:02d}.pth" for i in range(n)] + [f"{d}/params.json"]


def _blob(path: str, size: int) -> bytes:
    seed = hashlib.sha256(path.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def build_tree() -> dict[str, bytes]:
    """A tiny fake release: a few KB per file, checklists with correct md5s."""
    tree: dict[str, bytes] = {
        "LICENSE": b"LLAMA 2 COMMUNITY LICENSE AGREEMENT (fake, for tests)\n" * 20,
        "USE_POLICY.md": b"# Llama 2 Acceptable Use Policy (fake, for tests)\n" * 20,
        "tokenizer.model": _blob("tokenizer.model", 3000),
    }
    tree["tokenizer_checklist.chk"] = f"{md5(tree['tokenizer.model'])}  tokenizer.model\n".encode()
    for name in ALL_MODELS:
        d = model_dir(name)
        lines = []
        for rel in model_files(name):
            if rel.endswith(".pth"):
                data = _blob(rel, 6000 + 37 * len(rel))
            else:
                data = b'{"dim": 64, "n_layers": 2, "n_heads": 4, "norm_eps": 1e-05, "vocab_size": -1}\n'
            tree[rel] = data
            lines.append(f"{md5(data)}  {rel.split('/', 1)[1]}\n")
        tree[f"{d}/checklist.chk"] = "".join(lines).encode()
    return tree


TREE = build_tree()


class FakeServer:
    """Serves TREE under a signed-URL-shaped address; records (path, Range) per request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.expired = False  # answer 403 to everything, as CloudFront does for an old link
        self.corrupt: set[str] = set()  # paths served with content that fails the checklist
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                path = unquote(parts.path).lstrip("/")
                rng = self.headers.get("Range")
                with server._lock:
                    server.requests.append((path, rng))
                query = parse_qs(parts.query, keep_blank_values=True)
                good = (
                    query.get("Signature") == [SIGNATURE_DECODED]
                    and query.get("Policy") == [POLICY]
                    and query.get("Key-Pair-Id") == [KEY_PAIR_ID]
                )
                if server.expired or not good:
                    return self._send(403, b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>"
                                           b"<Message>Access denied</Message></Error>", "text/xml")
                if path not in TREE:
                    return self._send(404, b"<Error><Code>NoSuchKey</Code></Error>", "text/xml")
                data = TREE[path]
                if path in server.corrupt:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if rng:
                    start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
                    start = int(start_s)
                    end = int(end_s) if end_s else len(data) - 1
                    if start >= len(data):
                        return self._send(416, b"", "text/plain",
                                          {"Content-Range": f"bytes */{len(data)}"})
                    end = min(end, len(data) - 1)
                    return self._send(206, data[start:end + 1], "application/octet-stream",
                                      {"Content-Range": f"bytes {start}-{end}/{len(data)}"})
                return self._send(200, data, "application/octet-stream")

            def _send(self, code, body, ctype, headers=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, signature: str = SIGNATURE) -> str:
        return (f"http://127.0.0.1:{self.port}/*?Policy={POLICY}"
                f"&Signature={signature}&Key-Pair-Id={KEY_PAIR_ID}")

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _ in self.requests]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


# --------------------------------------------------------------------------- helpers

TOP_FILES = ["LICENSE", "USE_POLICY.md", "tokenizer.model", "tokenizer_checklist.chk"]
# External commands download.sh runs besides the downloader and the md5 tool.
BASE_TOOLS = ["bash", "cat", "mkdir", "mktemp", "mv", "rm", "tr"]


def expected_files(models: list[str]) -> list[str]:
    files = list(TOP_FILES)
    for m in models:
        files += [f"{model_dir(m)}/checklist.chk", *model_files(m)]
    return files


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


def make_bin(tmp_path: Path, tools: list[str], name: str = "bin") -> Path:
    """A PATH folder holding symlinks to just `tools` (skips the test when one is missing)."""
    bindir = tmp_path / name
    bindir.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} is not installed on this machine (apt-get install -y {tool})")
        (bindir / tool).symlink_to(real)
    return bindir


def tool_bin(tmp_path: Path, downloader: str, md5_tool: str = "md5sum") -> Path:
    return make_bin(tmp_path, BASE_TOOLS + [downloader] + ([md5_tool] if md5_tool else []))


def run(tmp_path: Path, *args: str, path: str | Path | None = None, stdin: str | None = None,
        env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run download.sh in a clean environment (no proxies, no inherited PRESIGNED_URL...)."""
    full_env = {"PATH": str(path) if path is not None else os.environ["PATH"],
                "HOME": str(tmp_path), "LC_ALL": "C"}
    full_env.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args], cwd=tmp_path, env=full_env, text=True, capture_output=True,
        input=stdin if stdin is not None else None,
        stdin=subprocess.DEVNULL if stdin is None else None, timeout=timeout,
    )


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def assert_tree(target: Path, models: list[str]) -> None:
    for rel in expected_files(models):
        assert (target / rel).read_bytes() == TREE[rel], rel
    present = {p.name for p in target.iterdir()}
    assert present == set(TOP_FILES) | {model_dir(m) for m in models}
    assert not list(target.rglob("*.part"))


def assert_no_secret(text: str) -> None:
    for secret in (SIGNATURE, SIGNATURE_DECODED, POLICY, "Signature=", "Key-Pair-Id="):
        assert secret not in text


DOWNLOADERS = ["curl", "wget"]


# --------------------------------------------------------------------------- tests

def test_help(tmp_path):
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0
    for word in ["--url", "--models", "--target", "PRESIGNED_URL", "MODEL_SIZE", "TARGET_FOLDER",
                 "curl", "wget", "403", "expired", *ALL_MODELS]:
        assert word in proc.stdout, word
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_fresh_download_two_models(tmp_path, server, downloader):
    """Only `downloader` on PATH (the other one absent): both code paths work alone."""
    bindir = tool_bin(tmp_path, downloader)
    proc = run(tmp_path, "--url", server.url(), "--models", "7B,13B", "--target", "out", path=bindir)
    assert proc.returncode == 0, output(proc)
    assert_tree(tmp_path / "out", ["7B", "13B"])
    assert f"using {downloader}" in proc.stdout
    assert "All files verified" in proc.stdout
    for rel in expected_files(["7B", "13B"]):
        assert rel in proc.stdout  # the summary names every file
    assert "6 verified" in proc.stdout  # tokenizer.model + 3 shards + 2 params.json
    assert_no_secret(output(proc))
    assert sorted(server.paths()) == sorted(expected_files(["7B", "13B"]))


def test_environment_variables_skip_prompts(tmp_path, server):
    env = {"PRESIGNED_URL": server.url(), "MODEL_SIZE": "7B-chat", "TARGET_FOLDER": str(tmp_path / "w")}
    proc = run(tmp_path, env=env)
    assert proc.returncode == 0, output(proc)
    assert "Enter the" not in output(proc)
    assert_tree(tmp_path / "w", ["7B-chat"])
    assert_no_secret(output(proc))


def test_interactive_prompts(tmp_path, server):
    proc = run(tmp_path, stdin=f"{server.url()}\n7B\n", env={"TARGET_FOLDER": "dl"})
    assert proc.returncode == 0, output(proc)
    assert "Enter the URL from email: " in proc.stderr
    assert ("Enter the list of models to download without spaces "
            "(7B,13B,70B,7B-chat,13B-chat,70B-chat), or press Enter for all: ") in proc.stderr
    assert_tree(tmp_path / "dl", ["7B"])
    assert_no_secret(output(proc))


def test_rerun_skips_verified_files(tmp_path, server):
    first = run(tmp_path, "--url", server.url(), "--models", "7B")
    assert first.returncode == 0, output(first)
    server.requests.clear()
    again = run(tmp_path, "--url", server.url(), "--models", "7B")
    assert again.returncode == 0, output(again)
    assert server.requests == []
    assert "Already downloaded and verified: llama-2-7b/consolidated.00.pth" in again.stdout
    assert_tree(tmp_path, ["7B"])


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_resume_partial_shard(tmp_path, server, downloader):
    bindir = tool_bin(tmp_path, downloader)
    rel = "llama-2-13b/consolidated.01.pth"
    half = len(TREE[rel]) // 2
    target = tmp_path / "weights"
    (target / "llama-2-13b").mkdir(parents=True)
    (target / rel).write_bytes(TREE[rel][:half])
    proc = run(tmp_path, "--models=13B", f"--url={server.url()}", f"--target={target}", path=bindir)
    assert proc.returncode == 0, output(proc)
    assert f"Resuming {rel}" in proc.stdout
    assert [r for r in server.requests if r[0] == rel] == [(rel, f"bytes={half}-")]
    assert_tree(target, ["13B"])


def test_bad_partial_file_is_downloaded_again(tmp_path, server):
    """A partial file holding wrong bytes fails after resuming; the script refetches it whole."""
    rel = "llama-2-7b/consolidated.00.pth"
    (tmp_path / "llama-2-7b").mkdir()
    (tmp_path / rel).write_bytes(b"\0" * 1000)
    proc = run(tmp_path, "--url", server.url(), "--models", "7B")
    assert proc.returncode == 0, output(proc)
    assert [r for r in server.requests if r[0] == rel] == [(rel, "bytes=1000-"), (rel, None)]
    assert_tree(tmp_path, ["7B"])


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_expired_link_stops_at_once(tmp_path, server, downloader):
    bindir = tool_bin(tmp_path, downloader)
    (tmp_path / "llama-2-7b").mkdir()
    partial = tmp_path / "llama-2-7b" / "consolidated.00.pth"
    partial.write_bytes(b"keep me")
    server.expired = True
    start = time.monotonic()
    proc = run(tmp_path, "--url", server.url(), "--models", "7B", path=bindir)
    assert time.monotonic() - start < 10
    assert proc.returncode == 3, output(proc)
    text = output(proc)
    assert text.count("link has probably expired") == 1
    assert "new link" in text
    assert "HTTP 403" in text
    assert len(text.splitlines()) < 12  # one message, not a wall of errors
    assert len(server.requests) == 1
    assert_no_secret(text)
    assert partial.read_bytes() == b"keep me"  # partial downloads survive for a later resume
    assert not list(tmp_path.rglob("*.part"))


def test_wrong_signature_is_refused(tmp_path, server):
    proc = run(tmp_path, "--url", server.url(signature="forged"), "--models", "7B")
    assert proc.returncode == 3
    assert "expired" in proc.stderr and "new link" in proc.stderr
    assert len(server.requests) == 1


@pytest.mark.parametrize("downloader", DOWNLOADERS)
def test_corrupted_file_fails_naming_it(tmp_path, server, downloader):
    bindir = tool_bin(tmp_path, downloader)
    bad = "llama-2-13b/consolidated.00.pth"
    server.corrupt = {bad}
    proc = run(tmp_path, "--url", server.url(), "--models", "7B,13B", path=bindir)
    assert proc.returncode == 1, output(proc)
    assert f"checksum mismatch for {bad}" in proc.stderr
    assert "failed their md5 check" in proc.stderr
    assert not (tmp_path / bad).exists()  # deleted, so a rerun fetches it afresh
    # The other files were still downloaded and verified.
    for rel in expected_files(["7B", "13B"]):
        if rel != bad:
            assert (tmp_path / rel).read_bytes() == TREE[rel], rel
    # Once the server is fixed, a rerun fetches just the missing shard.
    server.corrupt = set()
    server.requests.clear()
    proc = run(tmp_path, "--url", server.url(), "--models", "7B,13B", path=bindir)
    assert proc.returncode == 0, output(proc)
    assert server.paths() == [bad]


def test_unknown_model_rejected_before_download(tmp_path, server):
    proc = run(tmp_path, "--url", server.url(), "--models", "7B,8B,llama-3", "--target", "t")
    assert proc.returncode == 2
    assert "8B" in proc.stderr and "llama-3" in proc.stderr
    assert "7B,13B,70B,7B-chat,13B-chat,70B-chat" in proc.stderr
    assert server.requests == []
    assert not (tmp_path / "t").exists()


def test_url_without_star_rejected(tmp_path, server):
    proc = run(tmp_path, "--url", server.url().replace("*", "LICENSE"), "--models", "7B")
    assert proc.returncode == 2
    assert "'*'" in proc.stderr
    assert server.requests == []
    assert_no_secret(output(proc))


def test_no_downloader_says_what_to_install(tmp_path, server):
    bindir = make_bin(tmp_path, BASE_TOOLS + ["md5sum"])
    proc = run(tmp_path, "--url", server.url(), "--models", "7B", path=bindir)
    assert proc.returncode != 0
    assert "curl" in proc.stderr and "wget" in proc.stderr and "install" in proc.stderr
    assert server.requests == []


MD5_STANDIN = """#!{python}
# Stand-in for macOS md5: supports `md5 -q FILE` and `md5 -r FILE`; logs its arguments.
import hashlib, os, sys
args = sys.argv[1:]
with open(os.environ["MD5_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
with open(args[-1], "rb") as f:
    digest = hashlib.md5(f.read()).hexdigest()
print(digest if args[0] == "-q" else f"{{digest}} {{args[-1]}}")
"""


@pytest.mark.parametrize("corrupt", [False, True])
def test_macos_md5_branch(tmp_path, server, corrupt):
    """No md5sum on PATH, only an `md5` like macOS's: downloads are checked against the checklist."""
    bindir = tool_bin(tmp_path, "curl", md5_tool="")
    md5 = bindir / "md5"
    md5.write_text(MD5_STANDIN.format(python=sys.executable))
    md5.chmod(0o755)
    log = tmp_path / "md5.log"
    bad = "llama-2-7b/consolidated.00.pth"
    if corrupt:
        server.corrupt = {bad}
    proc = run(tmp_path, "--url", server.url(), "--models", "7B", "--target", "o",
               path=bindir, env={"MD5_LOG": str(log)})
    hashed = log.read_text().splitlines()
    assert all(line.startswith("-q ") for line in hashed)
    hashed_files = {line.split(" ", 1)[1] for line in hashed}
    # The downloaded files were hashed, never the checklists themselves.
    assert {"tokenizer.model", "llama-2-7b/consolidated.00.pth", "llama-2-7b/params.json"} <= hashed_files
    assert not any(f.endswith(".chk") for f in hashed_files)
    if corrupt:
        assert proc.returncode == 1, output(proc)
        assert f"checksum mismatch for {bad}" in proc.stderr
    else:
        assert proc.returncode == 0, output(proc)
        assert_tree(tmp_path / "o", ["7B"])


def test_enter_means_all_models(tmp_path, server):
    proc = run(tmp_path, "--target", "all", stdin=f"  {server.url()}  \n\n")
    assert proc.returncode == 0, output(proc)
    assert_tree(tmp_path / "all", ALL_MODELS)
    assert sorted(server.paths()) == sorted(expected_files(ALL_MODELS))

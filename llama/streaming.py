"""Turning one sequence's tokens into text as they arrive, with stop strings."""

from typing import List, Sequence

from .tokenizer import Tokenizer


class TextStream:
    """Decodes a growing token sequence and hands out only text that can no longer change: never half
    of a multi-byte character, and never the start of what may become a stop string. Joined, the
    pieces equal the decoded sequence, cut before the first stop string; `tokens` is then cut to the
    tokens that text needs."""

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.tokens: List[int] = []
        self.text = ""  # what has been handed out
        self.stopped = False

    def add(self, token: int) -> str:
        """Take the next token; return the text it makes final (nothing once a stop string was seen)."""
        if self.stopped:
            return ""
        self.tokens.append(token)
        decoded = self.tokenizer.decode(self.tokens)
        hits = [decoded.find(s) for s in self.stop if s in decoded]
        if hits:
            self.stopped = True
            kept = decoded[: min(hits)]
            # keep only the tokens the kept text needs (one may straddle the cut)
            self.tokens = next(self.tokens[:n] for n in range(len(self.tokens) + 1) if self.tokenizer.decode(self.tokens[:n]).startswith(kept))
            return self._advance(kept)
        settled = decoded.rstrip("\ufffd")  # an unfinished UTF-8 character decodes to U+FFFD
        return self._advance(settled[: len(settled) - self._stop_prefix_len(settled)])

    def finish(self) -> str:
        """The text still held back once the sequence has ended."""
        return "" if self.stopped else self._advance(self.tokenizer.decode(self.tokens))

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest end of `text` that a stop string starts with."""
        return max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)

    def _advance(self, text: str) -> str:
        if len(text) <= len(self.text) or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text) :], text
        return piece

"""The SentencePiece tokenizer that ships with the Llama 2 weights."""

from pathlib import Path
from typing import List

from sentencepiece import SentencePieceProcessor

from .errors import LlamaError


class Tokenizer:
    def __init__(self, model_path: str):
        path = Path(model_path)
        if not path.is_file():
            raise LlamaError(
                f"Tokenizer file {str(path)!r} not found. Pass --tokenizer_path pointing at the tokenizer.model "
                "that came with the weights."
            )
        self.sp_model = SentencePieceProcessor()
        try:
            self.sp_model.Load(str(path))
        except (OSError, RuntimeError) as err:
            raise LlamaError(
                f"{str(path)!r} is not a SentencePiece model ({err}). Pass the tokenizer.model that came with "
                "the weights; re-download it if it is damaged."
            ) from None
        self.n_words: int = self.sp_model.vocab_size()
        self.bos_id: int = self.sp_model.bos_id()
        self.eos_id: int = self.sp_model.eos_id()
        self.pad_id: int = self.sp_model.pad_id()

    def encode(self, s: str, bos: bool, eos: bool) -> List[int]:
        """Token ids for `s`, with BOS and EOS added as asked."""
        tokens = self.sp_model.encode(s)
        if bos:
            tokens = [self.bos_id] + tokens
        if eos:
            tokens = tokens + [self.eos_id]
        return tokens

    def decode(self, t: List[int]) -> str:
        return self.sp_model.decode(t)

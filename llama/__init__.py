"""Llama 2 inference: load Meta's checkpoints on any number of processes, CPU or GPU, and generate."""

from .chat_format import Dialog, Message
from .errors import LlamaError
from .generation import ChatPrediction, CompletionPrediction, Llama
from .model import ModelArgs, Transformer
from .tokenizer import Tokenizer

__all__ = [
    "Llama",
    "Dialog",
    "Message",
    "ModelArgs",
    "Transformer",
    "Tokenizer",
    "CompletionPrediction",
    "ChatPrediction",
    "LlamaError",
]

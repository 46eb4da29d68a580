"""The Llama 2 chat format: message types, dialog checks and prompt encoding."""

from typing import List, Literal, Tuple, TypedDict

from .errors import LlamaError
from .tokenizer import Tokenizer

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str


Dialog = List[Message]

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
SPECIAL_TAGS = [B_INST, E_INST, "<<SYS>>", "<</SYS>>"]
UNSAFE_ERROR = "Error: special tags are not allowed as part of the prompt."


def check_dialog(dialog: Dialog, index: int = 0) -> None:
    """Raise if the dialog's roles are not system?, user, assistant, user, ..., user."""
    where = f"Dialog {index}"
    if not isinstance(dialog, list) or not dialog:
        raise LlamaError(f"{where} is empty; a dialog is a non-empty list of {{'role', 'content'}} messages.")
    for i, msg in enumerate(dialog):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            raise LlamaError(f"{where}, message {i}: each message must be a dict with a 'role' and a string 'content'.")
        if msg.get("role") not in ("system", "user", "assistant"):
            raise LlamaError(f"{where}, message {i}: unknown role {msg.get('role')!r}; use 'system', 'user' or 'assistant'.")
    turns = dialog[1:] if dialog[0]["role"] == "system" else dialog
    for i, msg in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if msg["role"] != expected:
            raise LlamaError(
                f"{where}: message roles must be an optional 'system', then 'user' and 'assistant' alternating, "
                f"starting with 'user'; found {msg['role']!r} where {expected!r} belongs."
            )
    if not turns or turns[-1]["role"] != "user":
        raise LlamaError(f"{where} must end with a 'user' message for the model to answer.")


def has_special_tags(dialog: Dialog) -> bool:
    """Whether any message carries the chat format's own tags, which users may not inject."""
    return any(tag in msg["content"] for tag in SPECIAL_TAGS for msg in dialog)


def remove_special_tags(text: str) -> str:
    for tag in SPECIAL_TAGS:
        text = text.replace(tag, "")
    return text


def encode_dialog(tokenizer: Tokenizer, dialog: Dialog) -> List[int]:
    """The prompt tokens for a checked dialog, in Llama 2's chat format."""
    if dialog[0]["role"] == "system":
        first = dialog[1]["content"]
        dialog = [{"role": "user", "content": B_SYS + dialog[0]["content"] + E_SYS + first}] + dialog[2:]
    tokens: List[int] = []
    for prompt, answer in zip(dialog[:-1:2], dialog[1::2]):
        text = f"{B_INST} {prompt['content'].strip()} {E_INST} {answer['content'].strip()} "
        tokens += tokenizer.encode(text, bos=True, eos=True)
    tokens += tokenizer.encode(f"{B_INST} {dialog[-1]['content'].strip()} {E_INST}", bos=True, eos=False)
    return tokens



def fit_dialog(tokenizer: Tokenizer, dialog: Dialog, max_prompt_tokens: int) -> Tuple[Dialog, int]:
    """Drop the oldest (user, assistant) turns, keeping a leading system message, until the dialog's
    prompt takes at most `max_prompt_tokens`. Returns the dialog and how many turns were dropped; the
    last user message alone may still be too long."""
    system = dialog[:1] if dialog[0]["role"] == "system" else []
    turns = dialog[len(system) :]
    dropped = 0
    while len(turns) > 1 and len(encode_dialog(tokenizer, system + turns)) > max_prompt_tokens:
        turns = turns[2:]
        dropped += 1
    return system + turns, dropped

"""The one exception type the package raises for bad input: its message names the problem and the fix."""


class LlamaError(ValueError):
    """Bad input (files, arguments, prompts) that the user can fix; the message says how."""

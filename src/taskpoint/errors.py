"""Every error taskpoint raises on purpose derives from :class:`TaskpointError`.

Each message says what happened, to what, and what to do about it.
"""

from __future__ import annotations


class TaskpointError(Exception):
    """Root of all taskpoint errors."""


class CheckpointError(TaskpointError):
    """A checkpoint could not be written, read or restored (storage unreachable, bad path, ...)."""


class CheckpointCorruptError(CheckpointError):
    """Committed checkpoint versions exist, but none of them is intact.

    Raised instead of returning ``None`` so a long job never silently restarts from zero.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])

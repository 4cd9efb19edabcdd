"""`CheckpointVersion`: what a committed version is, as its manifest describes it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

PayloadKind = Literal["bytes", "file", "dir"]

# "<attempt:04d>-<seq:06d>": fixed widths keep lexical order equal to (attempt, seq) order
# for the first 9999 attempts and 999999 versions each; parsing uses the numbers anyway.
_ID_RE = re.compile(r"^(\d{4,})-(\d{6,})$")


def format_version_id(attempt: int, seq: int) -> str:
    return f"{attempt:04d}-{seq:06d}"


def parse_version_id(version_id: str) -> tuple[int, int] | None:
    """Return ``(attempt, seq)`` for a well-formed id, else ``None`` (foreign names are ignored)."""
    match = _ID_RE.match(version_id)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class CheckpointVersion:
    """One committed checkpoint version.

    ``id`` sorts like ``(attempt, seq)``; ``size`` is the payload bytes and ``files`` the number
    of payload files; ``created`` is a timezone-aware UTC datetime.
    """

    id: str
    attempt: int
    seq: int
    step: int | None
    metadata: dict[str, Any] = field(compare=False, hash=False)
    kind: PayloadKind
    size: int
    files: int
    created: datetime

    @property
    def order(self) -> tuple[int, int]:
        return (self.attempt, self.seq)

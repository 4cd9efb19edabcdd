"""Checks of what a caller hands ``Checkpoint.write``/``save``: they fail in the caller's
thread with a message naming the mistake, never later in the writer."""

from __future__ import annotations

import io
import json
import os
from typing import Any

from taskpoint.checkpoint.manifest import ManifestError, check_metadata_shape


def check_step_metadata(
    step: int | None, metadata: dict[str, Any] | None
) -> tuple[int | None, dict[str, Any]]:
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise TypeError(f"step must be an int or None, got {type(step).__name__}")
    if not metadata and (metadata is None or isinstance(metadata, dict)):
        return step, {}  # nothing to check (the common case of small, frequent writes)
    metadata = dict(metadata or {})
    try:
        text = json.dumps(metadata)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None
    try:  # what readers would refuse must not be committed
        check_metadata_shape(text.encode())
    except ManifestError as exc:
        raise ValueError(f"checkpoint metadata is too large or too deep: {exc}") from None
    return step, metadata


def check_save_source(src: object) -> None:
    """A path, or a stream that reads bytes; anything else fails here, not in the writer."""
    if isinstance(src, str | os.PathLike):
        return
    accepted = "a file or directory path (str or os.PathLike) or a binary stream opened 'rb'"
    if isinstance(src, bytes | bytearray | memoryview):
        raise TypeError(
            f"Checkpoint.save() takes {accepted}, not {type(src).__name__}; use write() for bytes"
        )
    read = getattr(src, "read", None)
    if isinstance(src, type) or not callable(read):
        raise TypeError(f"Checkpoint.save() takes {accepted}, not {_kind_of(src)}")
    if isinstance(src, io.TextIOBase) or "b" not in getattr(src, "mode", "b"):
        raise TypeError(
            f"Checkpoint.save() takes {accepted}, not a text stream ({_kind_of(src)}); "
            "open the file with 'rb', or encode the text and use write()"
        )


def _kind_of(value: object) -> str:
    return f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__

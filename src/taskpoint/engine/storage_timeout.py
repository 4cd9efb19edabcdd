"""The storage timeout: how long one request to a remote checkpoint store may take.

It bounds what the filesystem's own timeouts leave open (s3fs's read timeout starts only once a
request body is sent, so a stalled upload hangs forever) and reaches each attempt as
``AttemptInfo.storage_timeout`` -> ``Checkpoint.open(timeout=)``. Where it comes from, first
found wins: the task's ``@task(storage_timeout=)``, the engine's field (``--storage-timeout``,
``configure(storage_timeout=)``), ``TASKPOINT_STORAGE_TIMEOUT``, the project's
``storage-timeout``; else none. A request past it raises `CheckpointTimeoutError`, which the
engine records as a ``lost`` attempt and retries under the system budget (``engine/retry.py``).
"""

from __future__ import annotations

import math
import os
from typing import Any

from taskpoint.errors import TaskpointError

ENV = "TASKPOINT_STORAGE_TIMEOUT"


def checked(value: Any, what: str) -> float | None:
    """``value`` as seconds > 0 (finite), ``None`` kept; else a `ValueError` naming ``what``."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{what} must be a finite number of seconds > 0 (or None: only the storage's own "
            f"timeouts), got {value!r}"
        )
    return float(value)


def from_environment() -> float | None:
    """``TASKPOINT_STORAGE_TIMEOUT`` in seconds, ``None`` when unset or empty."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        return checked(float(raw), ENV)
    except ValueError:
        raise TaskpointError(
            f"{ENV} must be a finite number of seconds > 0, got {raw!r}; fix or unset it"
        ) from None

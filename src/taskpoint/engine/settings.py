"""Where records and blobs live, the preemption grace period, and who hears progress events.

Resolution order: ``configure()`` (the CLI's ``--home/--storage/--grace``), then the
``TASKPOINT_HOME`` / ``TASKPOINT_STORAGE`` environment variables, then ``./.taskpoint`` and
``<home>/blobs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from taskpoint.engine.events import Listener

DEFAULT_GRACE = 30.0


@dataclass
class Settings:
    home: str | None = None
    storage: str | None = None
    grace: float = DEFAULT_GRACE
    listener: Listener = field(default_factory=Listener)

    def resolved_home(self) -> str:
        home = self.home or os.environ.get("TASKPOINT_HOME") or ".taskpoint"
        return os.path.abspath(os.path.expanduser(home))

    def resolved_storage(self) -> str:
        storage = self.storage or os.environ.get("TASKPOINT_STORAGE")
        if not storage:
            return os.path.join(self.resolved_home(), "blobs")
        if "://" in storage:
            return storage.rstrip("/")
        # A plain path is made absolute so a resume from another directory finds the same blobs.
        return os.path.abspath(os.path.expanduser(storage))


settings = Settings()


def configure(
    *,
    home: str | None = None,
    storage: str | None = None,
    grace: float | None = None,
    listener: Listener | None = None,
) -> Settings:
    """Set process-wide engine settings (arguments left ``None`` are unchanged)."""
    if home is not None:
        settings.home = home
    if storage is not None:
        settings.storage = storage
    if grace is not None:
        if grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {grace}")
        settings.grace = grace
    if listener is not None:
        settings.listener = listener
    return settings

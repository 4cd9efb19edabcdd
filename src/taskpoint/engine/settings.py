"""Where records and blobs live, the preemption grace period, who hears progress events, and
where attempts run.

Resolution order: ``configure()`` (the CLI's ``--home/--storage/--grace``), then the
``TASKPOINT_HOME`` / ``TASKPOINT_STORAGE`` environment variables, then ``./.taskpoint`` and
``<home>/blobs``. Options for a remote storage URL (fsspec ``storage_options``) come from
``configure(storage_options=...)`` (the CLI's ``--storage-option key=value``); for ``s3://`` the
endpoint may also come from ``TASKPOINT_S3_ENDPOINT_URL``, and credentials from the standard AWS
environment variables, which s3fs reads itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from taskpoint.engine.events import Listener

DEFAULT_GRACE = 30.0


@dataclass
class Settings:
    home: str | None = None
    storage: str | None = None
    grace: float = DEFAULT_GRACE
    listener: Listener = field(default_factory=Listener)
    storage_options: dict[str, Any] | None = None
    # None: each task's own isolation= picks (inline or process); else a Backend for all tasks.
    backend: Any = None

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

    def storage_options_for(self, url: str) -> dict[str, Any]:
        """fsspec options for ``url``: none for a local path (fsspec would reject them)."""
        if "://" not in url or url.startswith("file://"):
            return {}
        options = dict(self.storage_options or {})
        endpoint = os.environ.get("TASKPOINT_S3_ENDPOINT_URL")
        client_kwargs = options.get("client_kwargs") or {}
        if (
            endpoint
            and url.startswith(("s3://", "s3a://"))
            and "endpoint_url" not in options
            and "endpoint_url" not in client_kwargs
        ):
            options["endpoint_url"] = endpoint
        return options


settings = Settings()


def configure(
    *,
    home: str | None = None,
    storage: str | None = None,
    grace: float | None = None,
    listener: Listener | None = None,
    storage_options: dict[str, Any] | None = None,
    backend: Any = None,
) -> Settings:
    """Set process-wide engine settings (arguments left ``None`` are unchanged).

    ``backend`` runs every task's attempts: ``"inline"``, ``"process"``, ``"dask"`` (a local
    cluster) or a backend object such as ``taskpoint.backends.dask.DaskBackend(client=...)``;
    ``"auto"`` goes back to each task's own ``isolation=``.
    """
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
    if storage_options is not None:
        settings.storage_options = dict(storage_options)
    if backend is not None:
        settings.backend = _backend(backend)
    return settings


def _backend(backend: Any) -> Any:
    if backend == "auto":
        return None
    if isinstance(backend, str):
        from taskpoint.backends import create  # lazy: backends sit above the engine

        return create(backend)
    return backend

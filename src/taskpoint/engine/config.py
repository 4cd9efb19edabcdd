"""``Engine``: the configuration a run needs (home, storage and its options, grace period,
listener, backend), as an explicit object; and the default engine ``taskpoint.run()`` uses.

Resolution: the engine's own fields, then the ``TASKPOINT_HOME`` / ``TASKPOINT_STORAGE``
environment variables, then the project's settings (``taskpoint.toml`` or ``[tool.taskpoint]``
in ``pyproject.toml``, found upwards from the current directory: ``engine/project.py``), then
``./.taskpoint`` and ``<home>/blobs``. Options for a remote storage
URL (fsspec ``storage_options``) come from ``storage_options`` (the CLI's ``--storage-option
key=value``); for ``s3://`` the endpoint may also come from ``TASKPOINT_S3_ENDPOINT_URL``, and
credentials from the standard AWS environment variables, which s3fs reads itself. The storage
timeout (seconds one request to a remote store may take) comes from ``storage_timeout``
(``--storage-timeout``), then ``TASKPOINT_STORAGE_TIMEOUT``, then the project's
``storage-timeout`` (``engine/storage_timeout.py``); a task's own ``storage_timeout=`` wins.
The local copy of remote checkpoints (``checkpoint/localcopy.py``: a directory, or ``False``
for none) comes from ``local_copy``, then ``TASKPOINT_LOCAL_COPY``, then the project's
``local-copy``; unset, each attempt's machine uses its own cache directory.

The default engine is made on first use; ``configure()`` replaces it with an updated copy (as
dramatiq's default broker). The CLI never touches it: it builds an ``Engine`` per command.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskpoint.engine import storage_timeout as timeouts
from taskpoint.engine.attempt import Backend, backend_table
from taskpoint.engine.events import Listener
from taskpoint.engine.project import find_project_config

if TYPE_CHECKING:
    from taskpoint.engine.execution import Execution
    from taskpoint.engine.task import Target, Task
    from taskpoint.records import Records

DEFAULT_GRACE = 30.0


@dataclass(frozen=True)
class Engine:
    """Where records and blobs live, the preemption grace period, who hears progress events,
    and where attempts run (``backend=None``: each task's own ``isolation=`` picks).

    ``backend`` may be a backend object or a name (``"inline"``, ``"process"``, ``"dask"``;
    ``"auto"`` is ``None``). ``storage_timeout`` bounds each request to a remote checkpoint
    store, in seconds (``None``: ``TASKPOINT_STORAGE_TIMEOUT``, the project's setting, or only
    the storage's own timeouts). ``local_copy`` is where attempts keep a copy of their latest
    version of a remote store, for a retry on the same machine (``False``: nowhere).

    Examples:
        >>> import tempfile
        >>> from taskpoint import Engine, task
        >>> @task
        ... def square(x: int) -> int:
        ...     return x * x
        >>> engine = Engine(home=tempfile.mkdtemp(), grace=10)
        >>> execution = engine.run(square, 7)
        >>> print(execution.status, execution.result)
        succeeded 49
        >>> engine.storage is None, engine.resolved_storage().endswith("blobs")
        (True, True)
    """

    home: str | None = None
    storage: str | None = None
    storage_options: Mapping[str, Any] | None = field(default=None, repr=False)
    grace: float = DEFAULT_GRACE
    listener: Listener = field(default_factory=Listener)
    backend: Backend | None = None
    storage_timeout: float | None = None
    local_copy: str | bool | None = None

    def __post_init__(self) -> None:
        if self.grace < 0:
            raise ValueError(f"grace must be >= 0 seconds, got {self.grace}")
        timeout = timeouts.checked(self.storage_timeout, "storage_timeout")
        object.__setattr__(self, "storage_timeout", timeout)
        if isinstance(self.local_copy, os.PathLike):
            object.__setattr__(self, "local_copy", os.fspath(self.local_copy))
        if not isinstance(self.local_copy, str | bool | None):
            raise TypeError(
                f"local_copy must be a directory, True, False or None, not {self.local_copy!r}"
            )
        if isinstance(self.backend, str):
            chosen = None if self.backend == "auto" else backend_table().create(self.backend)
            object.__setattr__(self, "backend", chosen)
        if self.storage_options is not None:
            object.__setattr__(self, "storage_options", dict(self.storage_options))

    def updated(self, **changes: Any) -> Engine:
        """A copy with the given fields changed; ``None`` leaves a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # -- where things are ------------------------------------------------------------------------

    def resolved_home(self) -> str:
        home = self.home or os.environ.get("TASKPOINT_HOME") or find_project_config().home
        return os.path.abspath(os.path.expanduser(home or ".taskpoint"))

    def resolved_storage(self) -> str:
        storage = (
            self.storage or os.environ.get("TASKPOINT_STORAGE") or find_project_config().storage
        )
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
        options = dict(self.storage_options or find_project_config().storage_options)
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

    def resolved_storage_timeout(self) -> float | None:
        """Seconds each request to a remote checkpoint store may take, or ``None``."""
        if self.storage_timeout is not None:
            return self.storage_timeout
        from_env = timeouts.from_environment()
        return from_env if from_env is not None else find_project_config().storage_timeout

    def resolved_local_copy(self) -> str | bool | None:
        """Where attempts keep a local copy of their latest remote version (``False``: off;
        ``None``: not set, so each attempt's machine uses its default)."""
        if self.local_copy is not None:
            return self.local_copy
        from_env = os.environ.get("TASKPOINT_LOCAL_COPY", "").strip()
        return from_env or find_project_config().local_copy

    def records(self) -> Records:
        from taskpoint.records import Records

        return Records(self.resolved_home())

    def backend_for(self, task: Task) -> Backend:
        """The configured backend, else the one the task's own ``isolation=`` asks for."""
        if self.backend is not None:
            return self.backend
        return backend_table().for_isolation(task.isolation)

    # -- entry points ----------------------------------------------------------------------------

    def run(self, fn: Target, /, *args: Any, **kwargs: Any) -> Execution:
        """See `taskpoint.run`: a new execution of ``fn`` under this engine."""
        from taskpoint.engine.api import run_with

        return run_with(self, fn, args, kwargs)

    def resume(self, execution_id: str, *, from_scratch: bool = False) -> Execution:
        """See `taskpoint.resume`."""
        from taskpoint.engine.api import resume_with

        return resume_with(self, execution_id, from_scratch=from_scratch)


_default: Engine | None = None


def default_engine() -> Engine:
    """The engine ``taskpoint.run()`` / ``resume()`` and top-level task calls use."""
    global _default
    if _default is None:
        _default = Engine()
    return _default


def set_default_engine(engine: Engine | None) -> Engine | None:
    """Make ``engine`` the default (``None``: a fresh one on next use); returns the previous."""
    global _default
    previous, _default = _default, engine
    return previous


def configure(
    *,
    home: str | None = None,
    storage: str | None = None,
    grace: float | None = None,
    listener: Listener | None = None,
    storage_options: Mapping[str, Any] | None = None,
    backend: Any = None,
    storage_timeout: float | None = None,
    local_copy: str | bool | None = None,
) -> Engine:
    """Replace the default engine with an updated copy (arguments left ``None`` are unchanged)
    and return it.

    ``backend`` runs every task's attempts: ``"inline"``, ``"process"``, ``"dask"`` (a local
    cluster) or a backend object, such as a ``DaskBackend(client=...)`` of your own;
    ``"auto"`` goes back to each task's own ``isolation=``. ``storage_timeout`` bounds each
    request to a remote checkpoint store (seconds); a stalled one fails the attempt, which is
    retried from its latest checkpoint. ``local_copy`` is where attempts keep a copy of their
    latest version of a remote store for a retry on the same machine (``False``: nowhere).

    Examples:
        >>> import tempfile
        >>> import taskpoint
        >>> engine = taskpoint.configure(home=tempfile.mkdtemp(), grace=60)
        >>> engine.grace
        60
        >>> taskpoint.configure().home == engine.home       # None leaves a field as it is
        True
    """
    engine = default_engine().updated(
        home=home,
        storage=storage,
        grace=grace,
        listener=listener,
        storage_options=storage_options,
        backend=backend,
        storage_timeout=storage_timeout,
        local_copy=local_copy,
    )
    set_default_engine(engine)
    return engine

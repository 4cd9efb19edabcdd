"""The project's taskpoint settings: ``taskpoint.toml``, or ``[tool.taskpoint]`` in
``pyproject.toml``, found by walking up from the current directory (as ruff and pytest find
theirs), so ``taskpoint list`` in any subdirectory sees the same executions.

    [tool.taskpoint]            # or, in taskpoint.toml, the same keys at the top level
    home = ".taskpoint"         # relative paths are relative to the file's directory
    storage = "s3://bucket/runs"
    storage-timeout = 120       # seconds one request to a remote checkpoint store may take
    local-copy = false          # or a directory: the local copy of remote checkpoints
    [tool.taskpoint.storage-options]
    client_kwargs = { endpoint_url = "http://127.0.0.1:9000" }

The project settings come after an engine's own fields (``--home``, ``configure(home=)``) and
the ``TASKPOINT_*`` environment variables, and before the built-in defaults.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskpoint.engine.storage_timeout import checked
from taskpoint.errors import TaskpointError

KEYS = ("home", "storage", "storage-options", "storage-timeout", "local-copy")


class ProjectConfigError(TaskpointError):
    """A project settings file that cannot be used as it is (it names the file and the fix)."""


@dataclass(frozen=True)
class ProjectConfig:
    path: Path | None = None  # the file the settings came from; None: no file found
    home: str | None = None
    storage: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    storage_timeout: float | None = None
    local_copy: str | bool | None = None


NO_PROJECT = ProjectConfig()


def find_project_config(start: str | os.PathLike[str] | None = None) -> ProjectConfig:
    """The settings of the nearest ``taskpoint.toml`` or ``pyproject.toml`` with a
    ``[tool.taskpoint]`` table, from ``start`` (default: the current directory) upwards."""
    try:
        here = Path(start if start is not None else os.getcwd()).resolve()
    except OSError:  # the current directory was deleted under us
        return NO_PROJECT
    for directory in (here, *here.parents):
        own = directory / "taskpoint.toml"
        if own.is_file():
            return _parse(own, _load(own))
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file():
            table = _load(pyproject).get("tool", {}).get("taskpoint")
            if table is not None:
                return _parse(pyproject, table, prefix="[tool.taskpoint] ")
    return NO_PROJECT


def _load(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ProjectConfigError(f"cannot read the project settings in {path}: {exc}") from None


def _parse(path: Path, table: Any, prefix: str = "") -> ProjectConfig:
    if not isinstance(table, dict):
        raise ProjectConfigError(f"{path}: {prefix}must be a table of settings")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise ProjectConfigError(
            f"{path}: {prefix}unknown setting {unknown[0]!r} (known: {', '.join(KEYS)})"
        )
    base = path.parent

    def text(key: str) -> str | None:
        value = table.get(key)
        if value is not None and not isinstance(value, str):
            raise ProjectConfigError(f"{path}: {prefix}{key} must be a string, got {value!r}")
        return value

    home = text("home")
    storage = text("storage")
    options = table.get("storage-options", {})
    if not isinstance(options, dict):
        raise ProjectConfigError(f"{path}: {prefix}storage-options must be a table")
    try:
        timeout = checked(table.get("storage-timeout"), "storage-timeout")
    except ValueError as exc:
        raise ProjectConfigError(f"{path}: {prefix}{exc}") from None
    local_copy = table.get("local-copy")
    if not isinstance(local_copy, str | bool | None):
        raise ProjectConfigError(
            f"{path}: {prefix}local-copy must be a directory or true/false, got {local_copy!r}"
        )
    if isinstance(local_copy, str):
        local_copy = _relative_to(base, local_copy)
    return ProjectConfig(
        path=path,
        home=_relative_to(base, home) if home else None,
        storage=storage if storage is None or "://" in storage else _relative_to(base, storage),
        storage_options=dict(options),
        storage_timeout=timeout,
        local_copy=local_copy,
    )


def _relative_to(base: Path, value: str) -> str:
    expanded = os.path.expanduser(value)
    return expanded if os.path.isabs(expanded) else str(base / expanded)

"""The backend table, declared once: name -> import path and the ``pip install`` a missing extra
needs (as fsspec's registry of filesystems). A backend's module is imported only when the backend
is asked for, through ``importlib`` on the path string.

Importing this module installs the table into the engine (``engine.attempt.install_backend_table``),
which resolves backend names through it and never imports a backend itself; ``taskpoint/__init__``
imports it, so the table is there whenever the engine is.
"""

from __future__ import annotations

import importlib
import threading
import types
from typing import Any

from taskpoint.engine.attempt import Backend, install_backend_table
from taskpoint.errors import TaskpointError

# name -> (module:attribute, what to install when its dependencies are missing)
BACKENDS: dict[str, tuple[str, str | None]] = {
    "inline": ("taskpoint.backends.inline:InlineBackend", None),
    "process": ("taskpoint.backends.process:ProcessBackend", None),
    "dask": ("taskpoint.backends.dask:DaskBackend", "pip install 'taskpoint[dask]'"),
}
NAMES = tuple(BACKENDS)

_shared: dict[str, Backend] = {}
_lock = threading.Lock()


def backend_class(name: str) -> Any:
    """The class registered under ``name``, imported now."""
    try:
        path, hint = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}: use one of {', '.join(NAMES)}") from None
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if hint is None:
            raise
        raise TaskpointError(
            f"the {name} backend needs a package that is not installed here ({exc}); "
            f"install it with: {hint}"
        ) from exc
    return getattr(module, attribute)


def create(name: str, **options: Any) -> Backend:
    """A new backend by name; ``dask`` takes ``scheduler=``, ``workers=`` or ``client=``."""
    return backend_class(name)(**options)


def for_isolation(isolation: str) -> Backend:
    """The shared backend a task's own ``isolation=`` asks for, when none is configured."""
    name = "inline" if isolation == "inline" else "process"  # "spawn" is the process backend
    with _lock:
        backend = _shared.get(name)
        if backend is None:
            backend = _shared[name] = create(name)
    return backend


install_backend_table(types.SimpleNamespace(create=create, for_isolation=for_isolation))

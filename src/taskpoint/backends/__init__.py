"""Where an attempt runs: in the driver (``inline``), in a child process (``process``), or on a
Dask cluster (``dask``, extra ``taskpoint[dask]``).

A backend submits one attempt (an :class:`~taskpoint.engine.attempt.AttemptJob`) and returns a
handle whose ``result()`` is the attempt's :class:`~taskpoint.engine.attempt.Outcome` — ``lost``
when the backend lost track of it. Backends never retry: the engine's attempt loop decides.
"""

from __future__ import annotations

from typing import Any

from taskpoint.engine.attempt import AttemptHandle, AttemptJob, Backend, Outcome

NAMES = ("inline", "process", "dask")

_defaults: dict[str, Backend] = {}


def for_isolation(isolation: str) -> Backend:
    """The backend a task's own ``isolation=`` asks for, when none is configured."""
    name = "inline" if isolation == "inline" else "process"  # "spawn" is the process backend
    backend = _defaults.get(name)
    if backend is None:
        backend = _defaults[name] = create(name)
    return backend


def create(name: str, **options: Any) -> Backend:
    """A backend by name; ``dask`` takes ``scheduler=``, ``workers=`` or ``client=``."""
    if name == "inline":
        from taskpoint.backends.inline import InlineBackend

        return InlineBackend(**options)
    if name == "process":
        from taskpoint.backends.process import ProcessBackend

        return ProcessBackend(**options)
    if name == "dask":
        from taskpoint.backends.dask import DaskBackend

        return DaskBackend(**options)
    raise ValueError(f"unknown backend {name!r}: use one of {', '.join(NAMES)}")


__all__ = ["NAMES", "AttemptHandle", "AttemptJob", "Backend", "Outcome", "create", "for_isolation"]

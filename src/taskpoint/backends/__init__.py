"""Where an attempt runs: in the driver (``inline``), in a child process (``process``), or on a
Dask cluster (``dask``, extra ``taskpoint[dask]``).

Backends are transports: a backend submits one attempt (an
:class:`~taskpoint.engine.attempt.AttemptJob`) to where it runs, where the engine's
:func:`~taskpoint.engine.execute.execute_attempt` runs it, and returns a handle whose ``result()``
is the attempt's :class:`~taskpoint.engine.attempt.Outcome` — ``lost`` when the backend lost
track of it. Backends never retry: the engine's attempt loop decides. The table of backends is
``registry.py``.
"""

from __future__ import annotations

from taskpoint.backends.registry import NAMES, create, for_isolation
from taskpoint.engine.attempt import AttemptHandle, AttemptJob, Backend, Outcome

__all__ = ["NAMES", "AttemptHandle", "AttemptJob", "Backend", "Outcome", "create", "for_isolation"]

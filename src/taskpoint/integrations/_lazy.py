"""Import an optional framework, or fail with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from taskpoint.errors import TaskpointError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` and return it, or raise :class:`TaskpointError` naming the pip extra.

    ``extra`` is the taskpoint extra that provides the module, e.g. ``require("torch", "torch")``
    tells the user to run ``pip install 'taskpoint[torch]'``. Errors raised while the module itself
    is importing (a broken install) are chained as ``__cause__`` so the real problem stays visible.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise TaskpointError(
            f"the taskpoint {extra} integration needs the Python package {module!r}, which could "
            f"not be imported ({exc}); install it with: pip install 'taskpoint[{extra}]'"
        ) from exc

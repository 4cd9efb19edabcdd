"""``taskpoint ui``: a local, read-only web view of executions, attempts and checkpoints.

Standard library only (`http.server`); the pages are plain JavaScript and inline SVG shipped in
``static/``, so nothing is fetched from the network. See ``server.py`` for the routes and
``api.py`` for the JSON documents (the CLI's ``--json`` shapes).
"""

from __future__ import annotations

from typing import Any


def make_server(*args: Any, **kwargs: Any) -> Any:
    """See `taskpoint.ui.server.make_server` (imported on first use)."""
    from taskpoint.ui.server import make_server as make

    return make(*args, **kwargs)


def serve(*args: Any, **kwargs: Any) -> None:
    """See `taskpoint.ui.server.serve` (imported on first use)."""
    from taskpoint.ui.server import serve as run

    run(*args, **kwargs)


__all__ = ["make_server", "serve"]
